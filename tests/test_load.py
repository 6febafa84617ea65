"""Load: 200 trials on a tiny pool with 2 Ray workers, through the real `lll search` command.

Training is nearly free here (2 tasks, 16 images each, 1 epoch, and the prefix cache serves most
trials), so this measures what every trial costs the driver — asking Optuna, recording the run in
MLflow, telling Optuna — and checks the books balance: exactly 200 finished trials in the Optuna
storage and 200 finished nested runs in MLflow, each trial number exactly once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from helpers import default_storage, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.extended]

TRIALS = 200
POOL_YAML = tiny_pool_yaml("tiny-load", 16, 16, rotated_and_permuted=False)


def test_200_trials_on_2_workers_are_all_recorded_exactly_once(tmp_path):
    (tmp_path / "pool.yaml").write_text(POOL_YAML)
    args = ["search", "--pool", "pool.yaml", "--strategies", "naive", "--trials", str(TRIALS), "--seeds", "1"]
    args += ["--epochs", "1", "--hidden", "16", "--workers", "2", "--study", "load", "--no-prune"]
    args += ["--checkpoints", "none", "--validate", "0"]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    summary = re.search(r"study load: (\d+) complete, 0 pruned, 0 failed in (\d+) s", res.stdout)
    assert summary and int(summary.group(1)) == TRIALS, res.stdout
    print(f"\n{TRIALS} trials: {wall:.0f} s wall, {summary.group(2)} s in the driver loop")

    study = optuna.load_study(study_name="load", storage=default_storage(tmp_path))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(TRIALS))

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("load")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("lll.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(runs) == TRIALS + 1 == len(nested) + 1
    numbers = Counter(int(r.data.tags["optuna_trial_number"]) for r in nested)
    assert [n for n, c in numbers.items() if c > 1] == [], "trials recorded twice"
    assert set(numbers) == set(range(TRIALS)), "trials missing from MLflow"
    assert all(r.info.status == "FINISHED" and r.data.tags["lll.state"] == "complete" for r in nested)
    assert all("acc" in r.data.metrics for r in nested)
    # Each run's id is the one Optuna remembers for its trial.
    by_number = {int(r.data.tags["optuna_trial_number"]): r.info.run_id for r in nested}
    assert all(t.user_attrs["mlflow_run_id"] == by_number[t.number] for t in trials)
