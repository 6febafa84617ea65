"""The one scheduler (search/study/scheduler.py) and what rests on it: prefix-affinity dispatch, one
training per shared unit, retries after lost workers, the SIGKILL window of resume, --population.

The dispatch tests drive the scheduler's own decisions without Ray (slots whose holdings are set
by hand); the end-to-end tests run the real `lll search` in subprocesses with real Ray workers and
real Optuna/MLflow stores, with faults injected through ``LLL_FAULT`` (pipeline/faults.py).
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import LLL_ENV, default_storage, lll, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.units import Unit
from search.study.scheduler import Scheduler, Slot, WorkerSpec
from search.study.unit_table import unit_key

ROOT = Path(__file__).resolve().parent.parent
POOL_YAML = tiny_pool_yaml("tiny-sched", 32, 32)
FAST = ["--strategies", "naive", "--seeds", "1", "--epochs", "1", "--hidden", "16", "--checkpoints", "none"]
FAST += ["--validate", "0"]  # held-out validation: tests/test_validation.py


def U(*order: str, seed: int = 0) -> Unit:
    return Unit(tuple(order), "{}", "{}", seed)


class FakeActor:
    """Stands in for a Ray actor handle in dispatch-only tests: records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[list[Unit]] = []
        self.train_units = self

    def remote(self, units: list[Unit]) -> object:
        self.sent.append(units)
        return object()


def scheduler(held: list[list[tuple[str, ...]]], population: int = 1, busy: tuple[int, ...] = ()) -> Scheduler:
    """A scheduler with booted slots; slot i holds the prefixes ``held[i]``; ``busy`` slots are training."""
    s = Scheduler(WorkerSpec("{}"), workers=len(held))
    for i, prefixes in enumerate(held):
        slot = Slot(FakeActor(), info={"population": population})
        slot.held = {unit_key(U(*p)) for p in prefixes}
        slot.batch = [U("x")] if i in busy else None
        s.slots.append(slot)
    return s


def result(unit: Unit, trained: int = 1) -> dict:
    rows = [{"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.1} for _ in range(len(unit.order) + 1)]
    return {"rows": rows, "row": rows[-1], "sizes": [], "lam": None, "trained": trained, "reused": 0}


# ---- dispatch decisions (no Ray) ------------------------------------------------------------
def test_a_worker_picks_the_candidate_whose_prefix_it_holds() -> None:
    s = scheduler([[("c",)], [("a",)]], busy=(1,))
    s.submit(U("a", "b"), "first")  # submitted first: FIFO dispatch would send this one
    s.submit(U("c", "d"), "second")
    picked = s.pick(0)
    assert [s.table.ready[k].unit for k in picked] == [U("c", "d")]
    assert s.pick(1) == [unit_key(U("a", "b"))]  # and the other worker the other one


def test_a_lone_unit_waits_for_its_worker_but_a_backlog_is_shared() -> None:
    s = scheduler([[("a",)], []], population=4, busy=(0,))
    s.submit(U("a", "b"), "t")
    assert s.pick(1) == []  # worker 0 holds [a]: retraining it elsewhere would waste a task-training
    s.submit(U("a", "c"), "t2")
    s.submit(U("a", "d"), "t3")
    assert len(s.pick(1)) == 1  # a backlog of three: the idle worker steals one
    assert len(s.pick(0)) == 3  # siblings go out together, up to K


def test_a_unit_two_jobs_need_is_trained_once_and_its_child_waits_for_it() -> None:
    s = scheduler([[]], population=8)
    s.submit(U("a"), "job1")
    s.submit(U("a"), "job2")
    s.submit(U("a", "b"), "job3")  # its parent is being trained: it must not train [a] again
    s.dispatch()
    sent = s.slots[0].actor.sent
    assert sent == [[U("a"), U("a", "b")]]  # so it goes along, after [a], in the same request
    s._finished(0, [result(U("a")), result(U("a", "b"))])
    events = {e.job: e.result for e in s.table.take_events()}
    assert events["job1"]["trained"] == 1 and events["job2"]["trained"] == 0  # credited once
    assert len(events["job3"]["rows"]) == 3
    s.submit(U("a"), "job4")  # finished already: answered from the table, no training
    assert [e.result["reused"] for e in s.table.take_events()] == [1]


def test_a_whole_ordering_is_one_request_with_at_most_k_per_level_and_a_lost_one_is_charged_once() -> None:
    s = scheduler([[], []], population=2)
    for order in (("a", "b", "c"), ("a", "c", "b"), ("a", "b", "d")):  # three trials' whole orderings
        for n in range(1, 4):
            s.submit(U(*order[:n]), order)
    s.dispatch()
    sent = [batch for slot in s.slots for batch in slot.actor.sent]
    assert len(sent) == 1  # everything waits on [a]: one request holds it and its descendants
    levels = [len(u.order) for u in sent[0]]
    assert levels == sorted(levels) and max(levels.count(n) for n in set(levels)) <= 2  # parents first, <= K each
    idx = next(i for i, slot in enumerate(s.slots) if slot.actor.sent)
    left = [k for ks in s.table.blocked.values() for k in ks]
    assert len(sent[0]) + len(left) == 6  # [a], [a,b], [a,c], [a,b,c], [a,c,b], [a,b,d]: each once
    keys = s.batch_keys.pop(idx)
    charged: dict = {}
    for key in keys:
        s.table.lost(key, "died", max_retries=2, charged=charged)
    assert all(n == 1 for n in s.table.attempts.values())  # one loss, one attempt per trial
    assert list(s.table.ready) == [unit_key(U("a"))]  # the rest waits for [a] again


@pytest.mark.extended
# ---- end to end ----------------------------------------------------------------------------
@pytest.mark.e2e
def test_two_workers_exhaustive_train_each_prefix_once_and_rebuild_none(tmp_path: Path) -> None:
    """A real 2-worker `--exhaustive` search: every node of the prefix tree is trained exactly once,
    and no worker trains a unit whose prefix another worker holds (it would rebuild that prefix).
    One unit at a time per worker (K=1) makes every dispatch a decision. This is what the holdings
    the scheduler records when it dispatches are for: without them the same run rebuilds prefixes."""
    (tmp_path / "pool.yaml").write_text(POOL_YAML)
    args = ["search", "--pool", "pool.yaml", *FAST, "--workers", "2", "--exhaustive", "--population", "1"]
    res = lll(*args, "--study", "tree", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    tasks = 3
    tree = sum(math.perm(tasks, k) for k in range(1, tasks + 1))  # 3 + 6 + 6 prefixes
    asked = math.factorial(tasks) * tasks  # every ordering asks for each of its prefixes
    m = re.search(r"task-trainings: (\d+) run, (\d+) reused from the prefix cache[^\n]*", res.stdout)
    assert m, res.stdout
    rebuilt = re.search(r"(\d+) more rebuilt a prefix", m.group(0))
    assert (int(m.group(1)), int(m.group(2)), int(rebuilt.group(1)) if rebuilt else 0) == (tree, asked - tree, 0), (
        m.group(0)
    )
    assert "2 on cpu with K=1" in res.stdout, res.stdout
    study = optuna.load_study(study_name="tree", storage=default_storage(tmp_path))
    orders = {tuple(t.user_attrs["order"]) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(orders) == math.factorial(tasks)


# Two exhaustive searches of the same 3-task pool (6 orderings) share one folder: one at K=4 with a
# worker that dies on [upright, rot90], one at K=1 whose driver is SIGKILLed after trial 2 is in
# MLflow and before Optuna is told, then resumed. Together they also compare K=4 with K=1.
def search(cwd: Path, *args: str, fault: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**LLL_ENV, **({"LLL_FAULT": fault} if fault else {})}
    cmd = [sys.executable, "-m", "search.cli", "search", "--pool", "pool.yaml", *FAST, "--workers", "1", *args]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a killed driver may leave Ray behind: end the group
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("sched")
    (d / "pool.yaml").write_text(POOL_YAML)
    retry = search(
        d, "--exhaustive", "--study", "r", "--population", "4", fault="die-on-order@train_unit:upright,rot90"
    )
    killed = search(d, "--exhaustive", "--study", "k", "--population", "1", fault="kill-on-trial@after_record:2")
    storage = default_storage(d)
    stale = optuna.load_study(study_name="k", storage=storage).trials[2].state
    resumed = lll("search", "--study", "k", "--resume", "--population", "1", "--validate", "0", cwd=d, timeout=600)
    return {"dir": d, "storage": storage, "retry": retry, "killed": killed, "stale": stale, "resumed": resumed}


@pytest.mark.e2e
def test_a_worker_dying_on_one_task_gets_two_retries_then_fails_and_the_study_finishes(runs: dict) -> None:
    res = runs["retry"]
    assert res.returncode == 0, res.stderr[-3000:]
    study = optuna.load_study(study_name="r", storage=runs["storage"])
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    assert [t.user_attrs["order"] for t in failed] == [["upright", "rot90", "permuted"]]
    assert "worker lost 3 times" in failed[0].user_attrs["fail_reason"]  # two retries, then failed
    assert "gave up after 2 retries" in failed[0].user_attrs["fail_reason"]
    assert "5 complete, 0 pruned, 1 failed" in res.stdout


@pytest.mark.e2e
def test_a_driver_killed_between_mlflow_and_optuna_resumes_with_that_trial_complete_once(runs: dict) -> None:
    assert runs["killed"].returncode == -signal.SIGKILL, runs["killed"].stderr[-3000:]
    assert runs["stale"] == TrialState.RUNNING  # recorded in MLflow, never told to Optuna
    res = runs["resumed"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "recovered" in res.stdout
    study = optuna.load_study(study_name="k", storage=runs["storage"])
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len({tuple(t.user_attrs["order"]) for t in complete}) == len(complete) == 6
    # Trial 2 stayed RUNNING; the public API cannot give it attributes any more, so the resume told
    # it FAIL (interrupted) and added its recorded result as a new complete trial, same parameters.
    assert study.trials[2].state == TrialState.FAIL and "fail_reason" not in study.trials[2].user_attrs
    client = MlflowClient(f"sqlite:///{runs['dir']}/mlflow.db")
    exp = client.get_experiment_by_name("k")
    mlruns = client.search_runs([exp.experiment_id], "tags.`lll.state` = 'complete'", max_results=100)
    (run2,) = [r for r in mlruns if r.data.params["optuna_trial_number"] == "2"]  # asked as trial 2
    (t2,) = [t for t in complete if t.user_attrs["mlflow_run_id"] == run2.info.run_id]
    assert t2.params == study.trials[2].params and t2.user_attrs["R"] and t2.user_attrs["order"]
    numbers = [int(r.data.tags["optuna_trial_number"]) for r in mlruns]  # the tag follows the result
    assert sorted(numbers) == sorted(t.number for t in complete) and numbers.count(t2.number) == 1
    live = [t for t in complete if t.number != t2.number]
    assert all(set(t.user_attrs) == set(t2.user_attrs) for t in live)  # resumed = live attributes
    assert t2.user_attrs["node_ip"] == "127.0.0.1" and t2.user_attrs["options"] == {}


@pytest.mark.e2e
def test_population_4_gives_the_same_trials_as_population_1(runs: dict) -> None:
    assert "with K=4" in runs["retry"].stdout and "with K=1" in runs["resumed"].stdout
    rs = {}
    for name in ("r", "k"):
        study = optuna.load_study(study_name=name, storage=runs["storage"])
        rs[name] = {
            tuple(t.user_attrs["order"]): np.array(t.user_attrs["R"])
            for t in study.get_trials(states=(TrialState.COMPLETE,))
        }
    assert len(rs["r"]) == 5 and set(rs["r"]) <= set(rs["k"])
    for order, r4 in rs["r"].items():
        assert np.abs(r4 - rs["k"][order]).mean() <= 0.005, order  # lockstep's tolerance: 0.5 points per entry


def test_bad_population_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [("search", "0"), ("search", "-3"), ("search", "abc"), ("affinity", "0")]
    with ThreadPoolExecutor(max_workers=2) as ex:  # independent commands, each fails before Ray starts
        results = list(ex.map(lambda c: lll(c[0], "--population", c[1], cwd=tmp_path, timeout=120), cases))
    for case, res in zip(cases, results, strict=True):
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1, (case, res.stderr)
        assert lines[0].startswith("error:") and "--population" in lines[0], case


def test_run_search_and_affinity_record_through_one_path() -> None:
    """Only search/study/recording.py writes MLflow runs; only pipeline/tracking.py makes a client;
    only RMatrix.from_rows builds R from rows."""
    writers, clients = {}, {}
    for path in [*ROOT.glob("search/**/*.py"), *ROOT.glob("pipeline/**/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                rel = str(path.relative_to(ROOT))
                if name in ("start_run", "log_ordering_run", "end_run"):
                    writers.setdefault(rel, []).append(name)
                if name == "MlflowClient":
                    clients.setdefault(rel, []).append(name)
    assert set(writers) == {"search/study/recording.py"}, writers
    assert set(clients) == {"pipeline/tracking.py"}, clients
    for cmd in ("run", "search", "affinity"):
        text = (ROOT / "search" / "cli" / "commands" / f"{cmd}.py").read_text()
        via = {
            "run": "search.study.recording",
            "search": "search.study.launch",
            "affinity": "search.study.affinity_runs",
        }[cmd]
        assert via in text
    assert "search.study.recording" in (ROOT / "search/study/driver.py").read_text()
    assert "search.study.recording" in (ROOT / "search/study/affinity_runs.py").read_text()
    assert "search.study.scheduler" in (ROOT / "search/study/driver.py").read_text()
    assert "search.study.scheduler" in (ROOT / "search/study/affinity_runs.py").read_text()


@pytest.mark.e2e
def test_progress_is_plain_lines_naming_one_trials_own_acc_and_bwt_when_stderr_is_a_pipe(runs: dict) -> None:
    lines = [ln for ln in runs["retry"].stderr.splitlines() if ln.startswith("trials ")]
    assert lines[0].startswith("trials 0/6 after") and lines[-1].startswith("trials 6/6 after"), lines
    assert not any("\x1b[" in ln or "━" in ln for ln in runs["retry"].stderr.splitlines())  # no bar, no escapes
    m = re.search(r"best ACC trial #(\d+): ACC ([\d.]+) BWT ([+-][\d.]+)", lines[-1])
    assert m, lines[-1]
    study = optuna.load_study(study_name="r", storage=runs["storage"])
    best = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.user_attrs["acc"])
    assert int(m.group(1)) == best.number
    assert m.group(2) == f"{best.user_attrs['acc'] * 100:.1f}" and m.group(3) == f"{best.user_attrs['bwt'] * 100:+.1f}"
