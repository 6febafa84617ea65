"""README claims about `lll search`, each checked on a real study through the real CLI.

Three small searches, one after the other, each when a test first needs it (each pays Ray's start-up once):
- ``both``: ``--objective both --lambda 2.5 --checkpoints all`` (10 ewc trials): the Pareto list of
  `lll export`, λ kept fixed, one checkpoint per task, and `lll affinity --study` fitting its weights;
- ``prune``: ``--order`` fixed, ewc/si with λ drawn at random, 20 trials on one worker: the order
  kept fixed, and pruning exactly by the rule the README states (bottom quarter at that step,
  after 8 finished trials);
- ``budget``: ``--time-budget``: no trial starts after the budget and the search ends by itself.

Checks read only what the CLI leaves behind (Optuna storage, MLflow store, exported JSON), never the
search driver's internals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from helpers import LLL_ENV, default_storage, lll, pool_workdir, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.study import StudyDirection
from optuna.trial import TrialState

pytestmark = pytest.mark.e2e

TASKS = 3
FIXED_LAMBDA = 2.5
FIXED_ORDER = ["rot90", "upright", "permuted"]
BUDGET = 30.0  # s of --time-budget, from the driver start (workers boot inside it); trials keep coming after boot
SLACK = 3.0  # seconds between opening the parent run and the driver's clock, and of timestamp resolution
COMMON = ["--pool", "pool.yaml", "--seeds", "1", "--epochs", "2", "--lr", "0.05"]  # enough to learn something
COMMON += ["--validate", "0"]  # held-out validation: tests/test_validation.py
PRUNE_TRIALS = 20  # random λ (TPE finds good λ at once: nothing left to prune); 12 judged after 8
SEARCHES = {
    "both": [
        *["--strategies", "ewc", "--lambda", str(FIXED_LAMBDA), "--objective", "both"],
        *["--trials", "10", "--workers", "2", "--checkpoints", "all"],
    ],
    "prune": [
        *["--strategies", "ewc,si", "--order", ",".join(FIXED_ORDER), "--prune"],
        *["--trials", str(PRUNE_TRIALS), "--workers", "1", "--checkpoints", "none", "--sampler", "random"],
    ],
    "budget": ["--strategies", "naive", "--time-budget", str(BUDGET), "--workers", "1", "--checkpoints", "none"],
}
# The pruning rule as the README states it: "an ordering in the bottom quarter at that step (after
# 8 finished trials) is stopped"; steps count tasks from 0, and the first task alone never prunes.
PRUNE_QUANTILE, PRUNE_STARTUP, PRUNE_WARMUP = 25.0, 8, 1


class Searches(dict):
    """Each search runs when a test first asks for it (so a run without the `extended` tests skips
    the --time-budget one), one after the other, each in its own folder (own Ray, own stores): side
    by side, three Ray instances on two cores took longer than in turn (and once hung in CI)."""

    def __init__(self, tmp_path_factory) -> None:
        super().__init__()
        self.factory = tmp_path_factory

    def __missing__(self, name: str) -> Path:
        d = pool_workdir(self.factory, f"claims-{name}", tiny_pool_yaml(f"tiny-{name}", 200, 100))
        with (d / "search.log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "search.cli", "search", *COMMON, *SEARCHES[name], "--study", name],
                cwd=d,
                env=LLL_ENV,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=300)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
        assert rc == 0, f"lll search ({name}) exited {rc}:\n{(d / 'search.log').read_text()[-3000:]}"
        self[name] = d
        return d


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Searches:
    return Searches(tmp_path_factory)


def load(d: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=default_storage(d))


def nested_runs(d: Path, name: str) -> list:
    client = MlflowClient(f"sqlite:///{d}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    return [r for r in runs if "optuna_trial_number" in r.data.tags]


# ---- --objective both --------------------------------------------------------------------------
def test_objective_both_exports_only_non_dominated_trials(studies) -> None:
    d = studies["both"]
    study = load(d, "both")
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MAXIMIZE]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 10 == len(study.trials)  # two objectives: never pruned
    for t in trials:  # the two objective values are the trial's ACC and BWT
        assert t.values == [t.user_attrs["acc"], t.user_attrs["bwt"]]
    res = lll("export", "--study", "both", "--out", "order.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rec = json.loads((d / "order.json").read_text())
    pareto = rec["pareto"]
    assert pareto and all({"trial", "order", "acc", "bwt"} <= set(p) for p in pareto)

    def dominates(u, p) -> bool:
        return u.values[0] >= p["acc"] and u.values[1] >= p["bwt"] and tuple(u.values) != (p["acc"], p["bwt"])

    for p in pareto:
        beaten_by = [u.number for u in trials if dominates(u, p)]
        assert not beaten_by, f"exported Pareto point (trial {p['trial']}) is dominated by trials {beaten_by}"
    # ... and the list is the whole front: Optuna's own non-dominated set of the study.
    assert sorted(p["trial"] for p in pareto) == sorted(t.number for t in study.best_trials)
    assert rec["mlflow_run_id"] in {p["mlflow_run_id"] for p in pareto}  # the recommendation is on it


# ---- --lambda / --order fixed ------------------------------------------------------------------
def test_fixed_lambda_stays_fixed_in_every_trial(studies) -> None:
    d = studies["both"]
    study = load(d, "both")
    for t in study.trials:
        assert not any(k.startswith("lambda") for k in t.params), t.params  # λ is not searched
        assert t.user_attrs["lambda"] == FIXED_LAMBDA
    runs = nested_runs(d, "both")
    assert len(runs) == 10 and {r.data.params["lambda"] for r in runs} == {str(FIXED_LAMBDA)}
    assert len({r.data.params["order"] for r in runs}) > 1  # orderings are what is searched


@pytest.mark.extended
def test_fixed_order_stays_fixed_in_every_trial(studies) -> None:
    d = studies["prune"]
    study = load(d, "prune")
    assert len(study.trials) == PRUNE_TRIALS
    for t in study.trials:
        assert set(t.params) <= {"strategy", "lambda_ewc", "lambda_si"}, t.params  # no ordering searched
        assert t.user_attrs["order"] == FIXED_ORDER
    runs = nested_runs(d, "prune")
    assert len(runs) == PRUNE_TRIALS and {r.data.params["order"] for r in runs} == {",".join(FIXED_ORDER)}
    assert len({r.data.params["lambda"] for r in runs}) > 2  # strategy and λ are what is searched


# ---- --checkpoints all -------------------------------------------------------------------------
def test_checkpoints_all_stores_one_checkpoint_per_task(studies, tmp_path) -> None:
    d = studies["both"]
    client = MlflowClient(f"sqlite:///{d}/mlflow.db")
    for r in nested_runs(d, "both"):
        files = sorted(a.path for a in client.list_artifacts(r.info.run_id, "checkpoints/seed0"))
        expected = [f"checkpoints/seed0/after_task_{k}.pt" for k in range(1, TASKS + 1)]
        assert files == expected, (r.data.tags["optuna_trial_number"], r.data.metrics.get("reused"), files)
        for k, path in enumerate(files, start=1):
            ckpt = torch.load(client.download_artifacts(r.info.run_id, path, str(tmp_path)), weights_only=True)
            assert ckpt["meta"]["after"] == k and ckpt["model"]


# ---- lll affinity --study ----------------------------------------------------------------------
def test_affinity_of_a_study_fits_the_weights_to_its_trials(studies) -> None:
    """Ten complete trials are enough to fit the graph model (printed) and the path-score weights
    (recorded in MLflow as fitted_on)."""
    d = studies["both"]
    res = lll("affinity", "--study", "both", "--no-measure", "--recommend", "--out", "g.graphml", cwd=d)
    assert res.returncode == 0, res.stderr
    assert "fitted on 10 trials" in res.stdout, res.stdout  # the graph model, fitted to the study
    assert "predicted ACC" in res.stdout and "default weights" not in res.stdout
    client = MlflowClient(f"sqlite:///{d}/mlflow.db")
    exp = client.get_experiment_by_name("both")
    runs = client.search_runs([exp.experiment_id], "tags.`lll.kind` = 'affinity'")
    assert len(runs) == 1 and runs[0].data.metrics["fitted_on"] == 10


@pytest.mark.extended
# ---- pruning -----------------------------------------------------------------------------------
def test_pruned_trials_are_exactly_the_bottom_quarter_after_the_startup_count(studies) -> None:
    """Replays the study in the order trials finished (one worker: one trial at a time) and
    applies the README's rule to each: pruned at step s ⇔ at least 8 trials had completed, s ≥ 1,
    s is not the last task (pruning would save nothing), and the trial's running accuracy at step
    s is in the bottom quarter of the completed trials' running accuracy at step s: below their
    25th percentile."""
    study = load(studies["prune"], "prune")
    trials = sorted(study.trials, key=lambda t: t.datetime_complete)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    completed: list = []
    judged = pruned = 0
    for t in trials:
        steps = sorted(t.intermediate_values)
        assert steps == list(range(len(steps))), steps
        verdict = None  # the step at which the rule prunes this trial
        if len(completed) >= PRUNE_STARTUP:
            for s in range(PRUNE_WARMUP, TASKS - 1):
                if s not in t.intermediate_values:
                    break
                judged += 1
                at_s = [c.intermediate_values[s] for c in completed]
                if t.intermediate_values[s] < np.percentile(at_s, PRUNE_QUANTILE):
                    verdict = s
                    break
        if verdict is None:
            assert t.state == TrialState.COMPLETE and steps == list(range(TASKS)), (
                f"trial {t.number} should have run to the end ({len(completed)} completed before it)"
            )
            completed.append(t)
        else:
            assert t.state == TrialState.PRUNED and steps[-1] == verdict, (
                f"trial {t.number} should have been pruned at step {verdict}, is {t.state.name} at {steps[-1]}"
            )
            pruned += 1
    # The rule was put to the test both ways: some trials pruned, more judged and kept.
    assert pruned >= 1 and judged > 2 * pruned, (pruned, judged)


# ---- --time-budget -----------------------------------------------------------------------------
@pytest.mark.extended
def test_time_budget_counts_from_the_driver_start(studies) -> None:
    """The budget starts with the driver (the search's parent MLflow run is opened right before it,
    and the Ray workers boot inside the budget), not with the first trial: no trial is asked more
    than BUDGET s after the driver started, and the search ends by itself."""
    study = load(studies["budget"], "budget")
    trials = study.trials
    assert trials and not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 1 <= len(finished) < 10**6  # no --trials: only the budget could stop it
    client = MlflowClient(f"sqlite:///{studies['budget']}/mlflow.db")
    exp = client.get_experiment_by_name("budget")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`lll.kind` = 'search'")
    driver_start = datetime.fromtimestamp(parent.info.start_time / 1000)  # local time, as Optuna's
    assert driver_start <= min(t.datetime_start for t in trials)
    since_start = [(t.datetime_start - driver_start).total_seconds() for t in trials]
    late = [t.number for t, s in zip(trials, since_start, strict=True) if s > BUDGET + SLACK]
    assert not late, f"trials {late} started more than {BUDGET} s after the driver started"
    # Trials kept being asked until the budget ran out (each waits in the queue, then trains):
    longest = max((t.datetime_complete - t.datetime_start).total_seconds() for t in finished)
    assert max(since_start) > BUDGET - longest - SLACK, (max(since_start), longest)
    assert parent.info.status == "FINISHED"  # the search ended by itself
