"""Re-evaluation during a search (issue 19 point 3), through the real CLI, Ray, Optuna and MLflow.

`lll search --seeds 1 --max-seeds 3` on a 4-task pool: new orderings start on seed 0 and the race
(search/propose/intensify.py) gives promising ones seeds 1 and 2. The driver is SIGKILLed right after
the first re-evaluation is written to MLflow and before Optuna is told, then resumed. Checked against
the MLflow records, independently of lll's own arithmetic: every (ordering, seed) was trained by
exactly one run (a re-evaluation trains only its new seed, the killed one is recovered, not trained
again), the task-trainings add up to one ordering per finished trial, and an ordering's Optuna value
is the mean over its seeds of the ACC computed here from each seed's recorded R.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import LLL_ENV, default_storage, lll, pool_workdir
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

POOL = """name: tiny-race
train_per_task: 120
test_per_task: 80
tasks:
  - name: upright
  - name: rot90
    transforms: [{type: rotate, angle: 90}]
  - name: permuted
    transforms: [{type: permute, seed: 1}]
  - name: inverted
    transforms: [{type: invert}]
"""
T = 4
TRIALS = 20  # the killed run's budget (its first re-evaluation is killed)
# The resumed run's budget: room for re-evaluations after the resume, yet fewer trials than the 24
# orderings, so the sampler never runs out of new ones (a repeat then trains a new seed, unless one of
# that ordering's seeds is training: test_a_small_pools_repeats_train_new_seeds).
TOTAL = TRIALS + 3
ARGS = ["--pool", "pool.yaml", "--strategies", "naive", "--seeds", "1", "--max-seeds", "3", "--no-prune"]
ARGS += ["--epochs", "1", "--hidden", "16", "--lr", "0.05", "--checkpoints", "none", "--workers", "2"]
ARGS += ["--validate", "0", "--study", "r"]


def killed_search(cwd: Path, fault: str) -> subprocess.CompletedProcess:
    """`lll search` with a fault injected; the whole process group ends with it (Ray included)."""
    cmd = [sys.executable, "-m", "search.cli", "search", *ARGS, "--trials", str(TRIALS)]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**LLL_ENV, "LLL_FAULT": fault},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):  # Ray, started by the killed driver
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """The race proposes its first re-evaluation as soon as an ordering has finished (it no longer
    waits for that ordering's record to reach MLflow), so the killed run always gets one."""
    d = pool_workdir(tmp_path_factory, "race", POOL)
    first = killed_search(d, "kill-on-reevaluation@after_record:1")
    assert first.returncode == -signal.SIGKILL, first.stdout[-2000:] + first.stderr[-3000:]
    second = lll("search", *ARGS, "--resume", "--trials", str(TOTAL), cwd=d, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    return d, second


def trial_runs(d: Path) -> list:
    mc = MlflowClient(f"sqlite:///{d / 'mlflow.db'}")
    exp = mc.get_experiment_by_name("r")
    runs = mc.search_runs([exp.experiment_id], "tags.`lll.state` = 'complete'", max_results=1000)
    return [r for r in runs if r.data.tags.get("lll.kind") != "search"]


def trained_seeds(run) -> list[int]:
    tags = run.data.tags
    return [int(s) for s in (tags.get("lll.seeds_trained") or run.data.params["seeds"]).split(",")]


def test_killed_reevaluation_is_recovered_not_trained_again(raced):
    _d, second = raced
    # the re-evaluation, and any trial told in the same batch (one append: none of it reached the journal)
    got = re.search(r"(\d+) recovered and \d+ re-queued from the interrupted run", second.stdout)
    assert got and int(got.group(1)) >= 1, second.stdout
    assert re.search(r"\(\d+ of the complete re-evaluated an ordering", second.stdout), second.stdout


def test_each_ordering_and_seed_is_trained_by_one_run(raced):
    d, _second = raced
    runs = trial_runs(d)
    study = optuna.load_study(study_name="r", storage=default_storage(d))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(runs) == len(complete) == TOTAL
    pairs = Counter((r.data.params["order"], s) for r in runs for s in trained_seeds(r))
    assert max(pairs.values()) == 1, pairs
    again = [r for r in runs if r.data.tags.get("lll.reevaluation") == "1"]
    assert again, "no re-evaluation ran"
    for r in runs:
        # A re-evaluation trains its one new seed (T task-trainings, some maybe from the prefix cache),
        # never the seeds its ordering already had.
        m = r.data.metrics
        assert m["trained"] + m["reused"] == T * len(trained_seeds(r)), r.info.run_name
    for r in again:
        seeds = [int(s) for s in r.data.params["seeds"].split(",")]
        assert trained_seeds(r) == [seeds[-1]] and len(seeds) >= 2
        files = [f.path for f in MlflowClient(f"sqlite:///{d / 'mlflow.db'}").list_artifacts(r.info.run_id, "per_seed")]
        assert files == [f"per_seed/R_seed{seeds[-1]}.json"]
        prior = {x.info.run_id: x for x in runs}[r.data.tags["lll.reevaluation_of"]]  # the record it adds to
        assert prior.data.params["order"] == r.data.params["order"]
        assert prior.data.params["seeds"] == ",".join(map(str, seeds[:-1]))


def test_resumed_summary_counts_one_seed_per_trial(raced):
    _d, second = raced
    done = int(re.search(r"study r: (\d+) complete", second.stdout).group(1))
    run, reused = map(int, re.search(r"task-trainings: (\d+) run, (\d+) reused", second.stdout).groups())
    assert run + reused == T * done  # every trial, new ordering or re-evaluation, trained exactly one seed


def acc_of(path: str) -> float:
    R = np.array(json.loads(Path(path).read_text())["R"])
    return float(R[-1].mean())


def test_value_is_the_mean_over_the_orderings_seeds(raced):
    d, _second = raced
    uri = f"sqlite:///{d / 'mlflow.db'}"
    per_seed: dict[tuple[str, int], float] = {}
    for r in trial_runs(d):
        for s in trained_seeds(r):
            path = download_artifacts(run_id=r.info.run_id, artifact_path=f"per_seed/R_seed{s}.json", tracking_uri=uri)
            per_seed[(r.data.params["order"], s)] = acc_of(path)
    study = optuna.load_study(study_name="r", storage=default_storage(d))
    latest: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        order = ",".join(t.user_attrs["order"])
        if order not in latest or len(t.user_attrs["seeds"]) > len(latest[order].user_attrs["seeds"]):
            latest[order] = t
    several = [t for t in latest.values() if len(t.user_attrs["seeds"]) > 1]
    assert several
    for order, t in latest.items():
        seeds = t.user_attrs["seeds"]
        accs = [per_seed[(order, s)] for s in seeds]
        assert t.value == pytest.approx(np.mean(accs), abs=1e-12)
        assert t.user_attrs["n_seeds"] == len(seeds)
        values = {int(s): v for s, v in t.user_attrs["seed_values"].items()}
        assert values == pytest.approx(dict(zip(seeds, accs, strict=True)))
    # the export names the best ordering's own seeds (all of them), and its rerun command uses them
    res = lll("export", "--study", "r", "--out", "order.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rec = json.loads((d / "order.json").read_text())
    best = latest[",".join(rec["order"])]
    assert rec["params"]["seeds"] == best.user_attrs["seeds"] and rec["acc"] == best.user_attrs["acc"]
    assert f"--seeds {','.join(map(str, best.user_attrs['seeds']))}" in rec["rerun"]


def test_report_shows_each_ordering_once_with_its_seeds(raced):
    """`lll report` on the raced study: one point per ordering, at its latest record (the trial with
    the most seeds, found here from the study itself), with its seed count; a count line says how
    many orderings were re-evaluated."""
    d, _second = raced
    res = lll("report", "--study", "r", "--out", "rep", cwd=d)
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name="r", storage=default_storage(d))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    latest: dict[str, optuna.trial.FrozenTrial] = {}
    for t in complete:
        order = ",".join(t.user_attrs["order"])
        if order not in latest or len(t.user_attrs["seeds"]) > len(latest[order].user_attrs["seeds"]):
            latest[order] = t
    shown = json.loads((d / "rep" / "report.json").read_text())
    points = {p[0]: p for ps in shown["pareto"]["points"].values() for p in ps}
    assert {n: p[3] for n, p in points.items()} == {t.number: len(t.user_attrs["seeds"]) for t in latest.values()}
    assert len(points) < len(complete)  # the superseded records are not drawn
    again = sum(len(t.user_attrs["seeds"]) > 1 for t in latest.values())
    assert again and f"{len(latest)} orderings from {len(complete)} complete trials; {again} re-evaluated" in res.stdout
    assert shown["history"]["trials"] == sorted(t.number for t in latest.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "2", "--max-seeds", "1"], "--max-seeds 1 is below --seeds 2"),
        (["--seeds", "1", "--max-seeds", "2", "--objective", "both"], "drop it with --exhaustive or --objective both"),
    ],
)
def test_bad_max_seeds_is_one_line(tmp_path_factory, args, message):
    d = pool_workdir(tmp_path_factory, "race-bad", POOL)
    res = lll("search", "--pool", "pool.yaml", "--strategies", "naive", *args, "--study", "bad", cwd=d)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert not (d / "optuna.journal").exists() or "bad" not in optuna.get_all_study_names(default_storage(d))


# the same pool without "permuted": 3 tasks, 6 orderings
PERMUTED = "  - name: permuted\n    transforms: [{type: permute, seed: 1}]\n"
SMALL_POOL = POOL.replace("tiny-race", "tiny-three").replace(PERMUTED, "")


def test_a_small_pools_repeats_train_new_seeds(tmp_path_factory):
    """3 tasks have 6 orderings; 12 trials at the defaults (--seeds 1, --max-seeds 2). Once the
    sampler runs out of new orderings it proposes the least-measured recorded one that no trial is
    training, and such a trial trains the ordering's next seed (a re-evaluation) instead of
    retraining seed 0 bit for bit. Checked on the
    study: every trial asked after its ordering's record was told trains a seed that ordering did
    not have (unless one of its seeds was training then), no ordering gets more than 2 seeds, and
    re-evaluations exceed what the race's 20 % share alone would give."""
    d = pool_workdir(tmp_path_factory, "small", SMALL_POOL)
    args = ["--pool", "pool.yaml", "--strategies", "naive", "--trials", "12", "--epochs", "1", "--hidden", "16"]
    args += ["--checkpoints", "none", "--workers", "1", "--validate", "0", "--study", "s"]
    res = lll("search", *args, cwd=d, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    study = optuna.load_study(study_name="s", storage=default_storage(d))
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    assert len(trials) == 12
    seeds_of: dict[str, set[int]] = {}
    reevaluations = 0
    for t in trials:
        order = ",".join(t.user_attrs["order"])
        known = {s for u in trials if u.number < t.number and ",".join(u.user_attrs["order"]) == order
                 and u.datetime_complete < t.datetime_start for s in u.user_attrs["seeds"]}  # fmt: skip
        req = t.user_attrs.get("lll.reevaluate")
        trained = [int(req["seed"])] if req else [int(s) for s in t.user_attrs["seeds"]]
        racing = any(u.user_attrs.get("lll.reevaluate") and ",".join(u.user_attrs["order"]) == order
                     and u.datetime_start < t.datetime_start < u.datetime_complete for u in trials)  # fmt: skip
        # recorded, with a seed still to get and none of its seeds training, when this trial was asked
        # (while one trains the repeat stays on seed 0: the workers' prefix cache answers it)
        if known and known != {0, 1} and not racing:
            assert req and not set(trained) & known, (t.number, order, known, trained)
        reevaluations += bool(req)
        seeds_of.setdefault(order, set()).update(trained)
    assert len(seeds_of) == 6 and all(s <= {0, 1} for s in seeds_of.values()), seeds_of
    assert reevaluations >= 3, reevaluations  # the race's share alone allows 2 of 12 (≤ 0.2)
    # the exhausted sampler proposes the least-measured ordering no trial is training: 12 trials,
    # 12 distinct (ordering, seed) pairs (one repeat allowed for a record told late)
    assert sum(len(s) for s in seeds_of.values()) >= 11, seeds_of
