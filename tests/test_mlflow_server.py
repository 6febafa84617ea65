"""A real MLflow tracking server on 127.0.0.1: `lll search` logs to it over HTTP, and
MLflow's own client finds every trial's nested run, metrics and R artifact there. The server is
stopped at the end whatever happens (finalizer, whole process group).

Also here: fail fast. An unreachable tracking server, database or Ray head is one ``error:`` line
and exit code 2 before any training, within 20 s.
"""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest
from helpers import lll, mlflow_server, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.rmatrix import RMatrix

pytestmark = pytest.mark.e2e

POOL_YAML = tiny_pool_yaml("tiny-server", 120, 80)
TRIALS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """`mlflow server` with a SQLite backend and proxied local artifacts; returns (url, folder)."""
    d = tmp_path_factory.mktemp("mlflow-server")
    (d / "pool.yaml").write_text(POOL_YAML)
    return mlflow_server(d, request), d


@pytest.fixture(scope="module")
def searched(server):
    url, d = server
    args = ["search", "--pool", "pool.yaml", "--strategies", "naive,ewc", "--trials", str(TRIALS), "--seeds", "1"]
    args += ["--epochs", "1", "--workers", "2", "--study", "srv", "--storage", f"sqlite:///{d}/optuna.db"]
    args += ["--validate", "0"]
    res = lll(*args, "--tracking-uri", url, cwd=d, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_search_logs_every_trial_to_the_server(server, searched):
    url, d = server
    assert "View run" not in searched.stdout, "MLflow's per-run URL lines should be suppressed"
    study = optuna.load_study(study_name="srv", storage=f"sqlite:///{d}/optuna.db")
    done = {t.number: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(study.trials) == TRIALS and len(done) == TRIALS
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("srv")
    assert exp.artifact_location.startswith("mlflow-artifacts:"), "artifacts should go through the server"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("lll.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "recommended_order.json" in parent_files
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    nested = [r for r in nested if r.data.tags.get("lll.kind") != "validation"]  # held-out runs at the end
    assert sorted(int(r.data.tags["optuna_trial_number"]) for r in nested) == sorted(done)
    for r in nested:
        assert r.info.status == "FINISHED" and r.data.tags["lll.state"] == "complete"
        assert {"acc", "bwt", "fwt", "forgetting"} <= set(r.data.metrics)
        assert {"order", "strategy", "pool_fingerprint"} <= set(r.data.params)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "running_acc")] == [1, 2, 3]
        local = client.download_artifacts(r.info.run_id, "R.json", str(d / "dl" / r.info.run_id))
        rm = RMatrix.from_json(local)
        trial = done[int(r.data.tags["optuna_trial_number"])]
        assert list(rm.tasks) == trial.user_attrs["order"] == r.data.params["order"].split(",")
        assert np.array_equal(rm.values, np.asarray(trial.user_attrs["R"]))
        assert abs(r.data.metrics["acc"] - trial.user_attrs["acc"]) < 1e-12
    # The server stored the files under --artifacts-destination.
    on_disk = sorted(p.name for p in (d / "art").rglob("R.json"))
    assert len(on_disk) == TRIALS


@pytest.mark.slow
def test_ui_for_a_server_study_points_at_the_server(server, searched):
    url, d = server
    res = lll("ui", "--study", "srv", "--storage", f"sqlite:///{d}/optuna.db", cwd=d, timeout=120)
    assert res.returncode == 0, res.stderr
    assert url in res.stdout


# ---- fail fast -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--tracking-uri", "http://127.0.0.1:1"], "tracking server http://127.0.0.1:1 is unreachable"),
        (["run", "--tracking-uri", "postgresql+psycopg://u:pw@127.0.0.1:1/db"], "unreachable"),
        (["search", "--tracking-uri", "http://127.0.0.1:1"], "tracking server http://127.0.0.1:1 is unreachable"),
        (["search", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/db"], "Optuna storage"),
        (["search", "--ray-address", "127.0.0.1:1"], "no Ray head reachable at 127.0.0.1:1"),
    ],
    ids=["run-http", "run-db", "search-http", "search-storage", "search-ray"],
)
def test_unreachable_service_fails_fast_with_one_line(args, needle, tmp_path):
    t0 = time.perf_counter()
    res = lll(*args, "--out" if args[0] == "run" else "--study", str(tmp_path / "x"), cwd=tmp_path, timeout=60)
    seconds = time.perf_counter() - t0
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert ":pw@" not in res.stderr
    assert seconds < 20, f"took {seconds:.1f} s to fail"
    assert not (tmp_path / "x").exists(), "a result was written although the service was unreachable"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()
