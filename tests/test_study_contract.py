"""The study contract: what a study stores (StudySettings), how every trial ends (one tell path
through Optuna's public API, one MLflow record builder), and the documented pruning rule.

No Ray here: studies live in real SQLite Optuna stores, records in a real SQLite MLflow store, and
the `lll` commands run in subprocesses.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import lll, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.config import TrainConfig
from search.study.launch import SearchRequest, new_settings, prepare
from search.study.optuna_bridge import OptunaBridge
from search.study.outcome import trial_attrs
from search.study.recording import StudyContext, open_parent_run, trial_record, write
from search.study.resume import recover
from search.study.settings import StudySettings
from search.study.storage import (
    BottomQuarterPruner,
    create_study,
    finished_trials,
    is_interrupted,
    load_study,
    make_pruner,
    open_storage,
    study_settings,
)
from tasks.errors import LLLError
from tasks.registry import load_pool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    (tmp_path / "pool.yaml").write_text(tiny_pool_yaml("tiny-contract", 60, 40))
    return tmp_path


def old_format_attrs(pool_path: str) -> dict:
    """The study user attributes `lll search` wrote before StudySettings existed (the dict built by
    search/study/launch.py ``_settings_for_new`` at commit abc3b57), for ``--pool POOL --strategies
    ewc,si --option ewc:fisher_samples=50 --seeds 2 --seed 3 --epochs 2 --hidden 16 --trials 5``."""
    pool = load_pool(pool_path)
    return {
        "pool": pool_path,
        "pool_spec": pool.spec.model_dump_json(),
        "pool_fingerprint": pool.fingerprint(),
        "tasks": pool.names,
        "strategies": ["ewc", "si"],
        "lambda": None,
        "options": {"ewc": {"fisher_samples": 50}},
        "objective": "acc",
        "sampler": "model",
        "seeds": 2,
        "seed": 3,
        "train": TrainConfig(epochs=2, hidden=(16,)).model_dump(mode="json"),
        "checkpoints": "final",
        "prune": True,
        "prune_startup": 8,
        "exhaustive": False,
        "trials": 5,
        "data_dir": None,
        "train_per_task": None,
        "test_per_task": None,
        "fixed_order": None,
        "seeds_list": "3,4",
        "tracking_uri": "sqlite:///mlflow.db",
        "tracking_uri_masked": False,
    }


def write_old_study(url: str, name: str, attrs: dict) -> optuna.Study:
    """A study as the old code left it: its settings and state as user attributes, one complete
    trial with the attributes the old live tell path set."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for k, v in {**attrs, "mlflow_parent_run_id": "parent-0"}.items():
        study.set_user_attr(k, v)
    order = list(reversed(attrs["tasks"]))
    trial_attrs_old = {
        "order": order,
        "strategy": "ewc",
        "lambda": 12.5,
        "options": {"fisher_samples": 50},
        "R": [[0.1, 0.1, 0.1], [0.9, 0.2, 0.1], [0.6, 0.9, 0.2], [0.5, 0.7, 0.9]],
        "mlflow_run_id": "run-0",
        "node_ip": "127.0.0.1",
        **{"acc": 0.7, "bwt": -0.3, "fwt": 0.05, "forgetting": 0.3, "acc_std": 0.01, "bwt_std": 0.02},
    }
    dist = optuna.distributions.IntDistribution(0, 2)
    study.add_trial(
        optuna.trial.create_trial(
            value=0.7, params={"x": 1}, distributions={"x": dist}, user_attrs=trial_attrs_old, state=TrialState.COMPLETE
        )
    )
    return study


# ---- StudySettings ------------------------------------------------------------------------------
def test_a_new_study_stores_the_same_attributes_as_before_plus_the_population(pool_dir: Path) -> None:
    """Studies stay readable both ways: a new study's user attributes are the old format's, with
    the same values for the same flags, plus ``population``."""
    pool_path = str(pool_dir / "pool.yaml")
    req = SearchRequest(
        pool=pool_path,
        strategies=["ewc", "si"],
        options={"ewc": {"fisher_samples": 50}},
        seeds=2,
        seed=3,
        train={"epochs": 2, "hidden": [16]},
        tracking_uri="sqlite:///mlflow.db",
        prune=True,  # the old default (off since 2026-12-03)
    )
    settings = new_settings(req, load_pool(pool_path), 5)
    assert settings.to_user_attrs() == {**old_format_attrs(pool_path), "population": "auto"}


def test_a_study_written_in_the_old_format_loads_resumes_and_exports(pool_dir: Path) -> None:
    url = f"sqlite:///{pool_dir}/optuna.db"
    old = old_format_attrs(str(pool_dir / "pool.yaml"))
    write_old_study(url, "old", old)
    write_old_study(url, "older", {k: v for k, v in old.items() if k not in ("sampler", "prune_startup")})

    s = study_settings(load_study("old", open_storage(url)))
    assert isinstance(s, StudySettings) and s.train == TrainConfig(epochs=2, hidden=(16,))
    assert (s.strategies, s.seed_list, s.sampler, s.population) == (("ewc", "si"), [3, 4], "model", "auto")
    assert s.strategy_options("ewc") == {"fisher_samples": 50} and s.strategy_options("si") == {}
    older = study_settings(load_study("older", open_storage(url)))
    assert (older.sampler, older.prune_startup) == ("tpe", 8)  # what studies before those flags ran with

    # --resume validates it (pool fingerprint, model, tracking store) and takes --trials for this run
    uri = f"sqlite:///{pool_dir}/mlflow.db"
    study, settings, pool, _ = prepare(SearchRequest(study="old", resume=True, storage=url, tracking_uri=uri, trials=9))
    assert settings == s.changed(trials=9) and pool.fingerprint() == s.pool_fingerprint
    assert study.sampler.__class__.__name__ == "PermutationSampler"
    assert isinstance(study.pruner, BottomQuarterPruner)

    res = lll("export", "--study", "old", "--storage", url, "--out", "order.json", cwd=pool_dir)
    assert res.returncode == 0, res.stderr
    rec = json.loads((pool_dir / "order.json").read_text())
    assert rec["params"]["seeds"] == [3, 4] and rec["params"]["options"] == {"fisher_samples": 50}
    assert rec["params"]["train"] == old["train"]
    rerun = rec["rerun"]
    for part in ("--seeds 3,4", "--option fisher_samples=50", "--epochs 2", "--hidden 16", "--lambda 12.5"):
        assert part in rerun, rerun
    # a trial trained with other CPU kernels than this process's: the command asks for them
    from pipeline.cpu_kernels import capability
    from search.study.recommend import run_command

    row = {"order": ["a", "b"], "strategy": "ewc", "lambda": 12.5}
    assert run_command(s, {**row, "cpu_kernels": capability()}, [3]).startswith("lll run ")
    other = "DEFAULT" if capability() != "DEFAULT" else "AVX2"
    asked = run_command(s, {**row, "cpu_kernels": other}, [3])
    assert asked.startswith(f"ATEN_CPU_CAPABILITY={other.lower()} lll run "), asked
    assert run_command(s, row, [3]).startswith("lll run ")  # a trial from before lll recorded kernels


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pool_spec": None}, "does not store pool_spec"),
        ({"objective": "accuracy"}, "stores settings this lll cannot read (objective"),
        ({"seeds_list": "0,1"}, "stores seeds_list 0,1 but seed 3"),
    ],
)
def test_an_unreadable_study_is_one_error_line_naming_the_fix(pool_dir: Path, change: dict, message: str) -> None:
    url = f"sqlite:///{pool_dir}/optuna.db"
    attrs = {**old_format_attrs(str(pool_dir / "pool.yaml")), **change}
    write_old_study(url, "bad", {k: v for k, v in attrs.items() if v is not None})
    res = lll("export", "--study", "bad", "--storage", url, cwd=pool_dir)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message in lines[0] and "lll search --study NEW" in lines[0], lines[0]


def test_settings_are_frozen_and_refuse_unknown_fields(pool_dir: Path) -> None:
    s = StudySettings.from_user_attrs(old_format_attrs(str(pool_dir / "pool.yaml")), "s")
    with pytest.raises(Exception, match="frozen"):
        s.trials = 3  # type: ignore[misc]
    with pytest.raises(LLLError, match="typo_field"):
        StudySettings.from_user_attrs({**old_format_attrs(str(pool_dir / "pool.yaml")), "typo_field": 1}, "s")


# ---- the documented pruning rule ---------------------------------------------------------------
def constructed_study(values_at_1: list[float], pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Complete trials whose running accuracy is 0.95 after the first task and ``values_at_1``
    after the second (steps 0 and 1), built through the public API."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    dist = optuna.distributions.FloatDistribution(0, 1)
    for v in values_at_1:
        study.add_trial(
            optuna.trial.create_trial(
                value=v, params={"x": 0.5}, distributions={"x": dist}, intermediate_values={0: 0.95, 1: v, 2: v}
            )
        )
    return study


def pruned_at_step_1(study: optuna.Study, value: float, first: float = 0.95) -> bool:
    trial = study.ask()
    trial.report(first, 0)
    assert not trial.should_prune()  # the first task alone never prunes
    trial.report(value, 1)
    verdict = trial.should_prune()
    study.tell(trial, state=TrialState.FAIL)
    return verdict


def test_the_pruner_stops_exactly_the_bottom_quarter_at_that_step() -> None:
    """README: "an ordering in the bottom quarter at that step (after 8 finished trials) is
    stopped". The threshold is numpy's 25th percentile of the eight complete trials' values at the
    step; candidate values near it are left out (percentile definitions differ there)."""
    rng = np.random.default_rng(7)
    done = sorted(rng.uniform(0.3, 0.8, size=8).tolist())
    study = constructed_study(done, make_pruner("acc", True, startup=8))
    quarter = float(np.percentile(done, 25))
    candidates = [x for x in np.linspace(0.2, 0.9, 57) if abs(x - quarter) > 1e-3]
    verdicts = {x: pruned_at_step_1(study, x) for x in candidates}
    assert verdicts == {x: x < quarter for x in candidates}
    assert any(verdicts.values()) and not all(verdicts.values())
    # Above the median: kept. Optuna's PercentilePruner(25.0), which this replaced, keeps only the
    # top quarter, so it would have stopped these.
    median = float(np.median(done))
    assert not pruned_at_step_1(study, median + 1e-3)
    old = constructed_study(done, optuna.pruners.PercentilePruner(25.0, n_startup_trials=8, n_warmup_steps=1))
    assert pruned_at_step_1(old, median + 1e-3, first=median + 1e-3)


def test_the_pruner_judges_the_value_at_that_step_not_the_best_so_far() -> None:
    """A trial whose first task went well (0.99) but whose running accuracy after the second is
    the lowest of all is in the bottom quarter at that step: stopped."""
    done = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85]
    study = constructed_study(done, make_pruner("acc", True, startup=8))
    assert pruned_at_step_1(study, 0.4, first=0.99)


def test_the_pruner_waits_for_eight_complete_trials() -> None:
    done = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
    study = constructed_study(done, make_pruner("acc", True, startup=8))
    assert not pruned_at_step_1(study, 0.01)  # 7 complete: not yet
    study.add_trial(
        optuna.trial.create_trial(
            value=0.9,
            params={"x": 0.5},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            intermediate_values={0: 0.95, 1: 0.9, 2: 0.9},
        )
    )
    assert pruned_at_step_1(study, 0.01)  # the eighth completed


def test_no_pruning_for_two_objectives_or_when_off() -> None:
    assert isinstance(make_pruner("both", True), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("acc", False), optuna.pruners.NopPruner)


# ---- one tell path: a live trial and a resumed trial end the same way ----------------------------
def synthetic_result(order: tuple[str, ...], step: int, seed: int, tasks: list[str]) -> dict:
    """A worker's unit result for ``order[:step]`` (rows of made-up accuracies: this test checks
    how a result travels, not what training gives)."""
    rng = np.random.default_rng(1000 * seed + step)
    rows = [{t: float(rng.uniform(0.05, 0.15)) for t in tasks}]
    rows += [{t: float(rng.uniform(0.2, 0.99)) for t in tasks} for _ in range(step)]
    size = {"params": 100.0 * step, "stored_bytes": 10.0 * step}
    return {"rows": rows, "lam": 7.25, "sizes": [size] * step, "trained": 1, "seconds": 0.01}


def run_trial(bridge: OptunaBridge, tasks: list[str]):
    run = bridge.ask()
    node = {"node_id": "n1", "node_ip": "127.0.0.9", "host": "h", "device": "cpu", "cpu_kernels": "AVX2"}
    for step in range(1, len(run.candidate.order) + 1):
        for seed in run.seeds:
            bridge.take(run, seed, synthetic_result(run.candidate.order, step, seed, tasks), node)
    return run


def test_a_live_and_a_resumed_trial_carry_the_same_attributes(pool_dir: Path) -> None:
    """Trial A is told live; trial B is recorded in MLflow and its driver 'dies' before telling
    Optuna. The resume ends B through the same function: same attribute keys as A, and the very
    values the live path would have given B; B's MLflow run then points at B's Optuna trial."""
    pool_path = str(pool_dir / "pool.yaml")
    pool = load_pool(pool_path)
    url, uri = f"sqlite:///{pool_dir}/optuna.db", f"sqlite:///{pool_dir}/mlflow.db"
    req = SearchRequest(pool=pool_path, strategies=["ewc", "si"], options={"si": {"damping": 0.2}}, seeds=2)
    req.tracking_uri = uri
    settings = new_settings(req, pool, 4)
    study = create_study("c", open_storage(url), settings)
    parent = open_parent_run(study, settings, uri)
    ctx = StudyContext("c", parent, settings)
    bridge = OptunaBridge(study, settings)

    live = run_trial(bridge, pool.names)
    outcome_a = bridge.outcome(live, "complete")
    bridge.end(live, replace(outcome_a, mlflow_run_id=write(uri, trial_record(ctx, outcome_a))))

    killed = run_trial(bridge, pool.names)
    outcome_b = bridge.outcome(killed, "complete")
    run_id_b = write(uri, trial_record(ctx, outcome_b))  # ... and the driver is gone before the tell
    assert study.trials[killed.trial.number].state == TrialState.RUNNING

    resumed = load_study("c", open_storage(url))
    got = recover(resumed, study_settings(resumed), uri, parent)
    assert (got.recovered, got.requeued) == (1, 0)
    a = resumed.trials[live.trial.number]
    (b,) = [t for t in resumed.get_trials(states=(TrialState.COMPLETE,)) if t.number != a.number]
    assert set(a.user_attrs) == set(b.user_attrs)
    assert b.user_attrs == trial_attrs(replace(outcome_b, mlflow_run_id=run_id_b))  # what the live tell sets
    assert b.values == [outcome_b.metrics["acc"]] and b.params == killed.trial.params
    assert b.intermediate_values == resumed.trials[killed.trial.number].intermediate_values
    stale = resumed.trials[killed.trial.number]
    assert stale.state == TrialState.FAIL and is_interrupted(stale)
    assert [t.number for t in finished_trials(resumed)] == [a.number, b.number]
    tag = MlflowClient(uri).get_run(run_id_b).data.tags["optuna_trial_number"]
    assert tag == str(b.number)

    again = recover(load_study("c", open_storage(url)), settings, uri, parent)  # a second resume: nothing to do
    assert (again.recovered, again.requeued) == (0, 0)
    assert len(resumed.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_pruned_and_failed_trials_carry_the_common_attributes(pool_dir: Path) -> None:
    pool_path = str(pool_dir / "pool.yaml")
    pool = load_pool(pool_path)
    settings = new_settings(SearchRequest(pool=pool_path, strategies=["ewc"], seeds=1), pool, 4)
    study = create_study("p", open_storage(f"sqlite:///{pool_dir}/optuna.db"), settings)
    bridge = OptunaBridge(study, settings)
    complete = run_trial(bridge, pool.names)
    bridge.end(complete, bridge.outcome(complete, "complete"))
    failed = bridge.ask()
    bridge.end(failed, bridge.outcome(failed, "failed", "worker lost 3 times"))
    pruned = bridge.ask()
    bridge.take(pruned, 0, synthetic_result(pruned.candidate.order, 1, 0, pool.names), {})
    bridge.take(pruned, 0, synthetic_result(pruned.candidate.order, 2, 0, pool.names), {})
    bridge.end(pruned, bridge.outcome(pruned, "pruned"))
    t = {x.state: x for x in study.trials}
    common = {"order", "strategy", "lambda", "options", "node_ip", "cpu_kernels", "mlflow_run_id"}
    assert set(t[TrialState.PRUNED].user_attrs) == common
    assert set(t[TrialState.FAIL].user_attrs) == common | {"fail_reason"}
    assert set(t[TrialState.COMPLETE].user_attrs) > common
    assert t[TrialState.FAIL].user_attrs["fail_reason"] == "worker lost 3 times"
    assert not is_interrupted(t[TrialState.FAIL]) and len(finished_trials(study)) == 3


# ---- Optuna's public API only ------------------------------------------------------------------
def test_no_module_reaches_into_optunas_private_storage() -> None:
    private = re.compile(r"\._storage\b|\._trial_id\b")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("search", "pipeline", "tasks", "bench")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if private.search(line)
    ]
    assert not offenders, offenders


def test_results_arriving_out_of_step_order_are_taken_in_step_order(pool_dir: Path) -> None:
    """Two identical trials with --checkpoints all: the second joins the first's prefixes 2 and 3 in
    flight, but its prefix 1 (finished before, without the checkpoint it wants) trains again and
    comes back last. The unit table really delivers that order; the trial still ends with the
    same R and checkpoints as one whose results came in order (it used to wait for ever)."""
    from pipeline.units import Unit
    from search.study.unit_table import UnitTable, unit_key

    order = ("upright", "rot90", "permuted")
    table = UnitTable()
    units = [Unit(order[:n], "s", "t", 0, True) for n in (1, 2, 3)]
    for u in units:
        table.submit(u, "A")
    table.finished(unit_key(units[0]), {"rows": [{}] * 2, "checkpoint": b"1"}, {})
    for u in units:
        table.submit(u, "B")  # prefix 1 is not pending any more: it is asked again, behind 2 and 3
    for n in (2, 3, 1):
        table.finished(unit_key(units[n - 1]), {"rows": [{}] * (n + 1), "checkpoint": str(n).encode()}, {})
    arrived = [len(e.result["rows"]) - 1 for e in table.take_events() if e.job == "B"]
    assert arrived == [2, 3, 1]

    pool = load_pool(str(pool_dir / "pool.yaml"))
    settings = new_settings(SearchRequest(pool=str(pool_dir / "pool.yaml"), strategies=["ewc"], seeds=1), pool, 2)
    study = create_study("o", open_storage(f"sqlite:///{pool_dir}/optuna.db"), settings)
    bridge = OptunaBridge(study, settings)
    runs = {}
    for name, steps in {"in order": [1, 2, 3], "out of order": [2, 3, 1]}.items():
        run = bridge.ask()
        results = {s: synthetic_result(run.candidate.order, s, 0, pool.names) for s in (1, 2, 3)}
        for s in results:
            results[s]["checkpoint"] = f"after {s}".encode()
        advanced = [bridge.take(run, 0, results[s], {}) for s in steps]
        assert run.step == 3 and advanced == ([True] * 3 if name == "in order" else [False, False, True])
        runs[name] = run
    a, b = runs["in order"], runs["out of order"]
    assert a.rows == b.rows and a.checkpoints == b.checkpoints == {0: [b"after 1", b"after 2", b"after 3"]}
