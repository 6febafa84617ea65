"""End-to-end curriculum search on a real local Ray cluster, with real Optuna and MLflow stores.

One module-scoped search is shared by several checks; the kill-and-resume test drives the real
`lll search` command in a subprocess and SIGKILLs it mid-search.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from helpers import default_storage, lll, pool_workdir, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.cpu_kernels import has_avx2
from pipeline.rmatrix import RMatrix
from pipeline.runner import run_ordering
from search.study.launch import SearchRequest, run_search
from tasks.registry import load_pool

pytestmark = pytest.mark.e2e

POOL_YAML = tiny_pool_yaml("tiny-search", 150, 100)
EPOCHS = 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return pool_workdir(tmp_path_factory, "search", POOL_YAML)


def request(workdir: Path, **kw) -> SearchRequest:
    base = dict(
        pool=str(workdir / "pool.yaml"),
        storage=f"sqlite:///{workdir}/optuna.db",
        tracking_uri=f"sqlite:///{workdir}/mlflow.db",
        train={"epochs": EPOCHS},
        workers=2,
        seeds=1,
        validate=0,  # held-out validation is tested in tests/test_validation.py
    )
    base.update(kw)
    return SearchRequest(**base)


@pytest.fixture(scope="module")
def searched(workdir):
    study, summary, rec = run_search(request(workdir, study="main", strategies=["naive", "ewc"], trials=6, seeds=2))
    return study, summary, rec


def test_every_trial_is_in_optuna_and_mlflow(searched, workdir):
    study, summary, _rec = searched
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == 6 == summary.complete + summary.pruned
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("main")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("lll.kind") == "search"]
    assert len(parents) == 1
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(nested) == 6
    assert sorted(int(r.data.tags["optuna_trial_number"]) for r in nested) == sorted(t.number for t in done)
    for r in nested:
        if r.data.tags["lll.state"] != "complete":
            continue
        p, m = r.data.params, r.data.metrics
        assert {"order", "strategy", "lambda", "seeds", "pool_fingerprint"} <= set(p)
        assert {"acc", "bwt", "fwt", "acc_std", "bwt_std"} <= set(m)
        assert r.data.tags["ray_node_id"] and r.data.tags["ray_node_ip"] == "127.0.0.1"
        assert r.data.tags["cpu_kernels"] == ("AVX2" if has_avx2() else torch.backends.cpu.get_cpu_capability())
        history = client.get_metric_history(r.info.run_id, "running_acc")
        assert [h.step for h in history] == [1, 2, 3]
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"R.json", "R.png", "checkpoints", "per_seed"} <= names
        ckpt = client.download_artifacts(r.info.run_id, "checkpoints/seed0/final.pt", str(workdir))
        assert torch.load(ckpt, weights_only=True)["model"]
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"recommended_order.json", "pareto.png", "acc_distribution.png"} <= parent_files


@pytest.mark.extended
def test_export_and_rerun_give_the_same_r(searched, workdir):
    _study, _, _ = searched
    out = workdir / "order.json"
    res = lll(
        "export", "--study", "main", "--storage", f"sqlite:///{workdir}/optuna.db", "--out", str(out), cwd=workdir
    )
    assert res.returncode == 0, res.stderr
    rec = json.loads(out.read_text())
    assert {
        "order",
        "strategy",
        "params",
        "acc",
        "bwt",
        "fwt",
        "mlflow_run_id",
        "pareto",
        "study",
        "pool_fingerprint",
        "confidence",
    } <= set(rec)
    assert rec["confidence"]["seeds"] == 2 and "seeds" in rec["confidence"]["note"]
    tags = MlflowClient(f"sqlite:///{workdir}/mlflow.db").get_run(rec["mlflow_run_id"]).data.tags
    assert rec["cpu_kernels"] == tags["cpu_kernels"] == ("AVX2" if has_avx2() else tags["cpu_kernels"])
    # The exported `lll run` command trains the study's seeds: each seed's R exactly, and the
    # exported seed-mean ACC/BWT to the last bit.
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    seed0 = RMatrix.from_json(client.download_artifacts(rec["mlflow_run_id"], "per_seed/R_seed0.json", str(workdir)))
    args = [*rec["rerun"].split()[1:], "--no-track", "--out", str(workdir / "rerun.json")]
    res = lll(*args, cwd=workdir)
    assert res.returncode == 0, res.stderr
    rerun = json.loads((workdir / "rerun.json").read_text())
    assert rerun["per_seed"][0]["tasks"] == list(seed0.tasks)
    assert np.array_equal(np.array(rerun["per_seed"][0]["R"]), seed0.values)
    assert (rerun["acc"], rerun["bwt"]) == (rec["acc"], rec["bwt"])


def test_report_draws_plots(searched, workdir):
    res = lll(
        "report",
        "--study",
        "main",
        "--storage",
        f"sqlite:///{workdir}/optuna.db",
        "--out",
        str(workdir / "rep"),
        cwd=workdir,
    )
    assert res.returncode == 0, res.stderr
    for name in ("pareto.png", "acc_distribution.png", "history.png", "recommended_R.png"):
        assert (workdir / "rep" / name).read_bytes()[:4] == b"\x89PNG"
    # What the plots show (report.json, the data each is drawn from), against the study itself.
    shown = json.loads((workdir / "rep" / "report.json").read_text())
    study = optuna.load_study(study_name="main", storage=f"sqlite:///{workdir}/optuna.db")
    done = {t.number: t.user_attrs for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) >= 2
    points = {p[0]: (s, p[1], p[2]) for s, ps in shown["pareto"]["points"].items() for p in ps}
    assert points == {n: (a["strategy"], a["bwt"] * 100, a["acc"] * 100) for n, a in done.items()}
    beaten = {  # trials another trial beats on ACC and BWT, one of them strictly
        n
        for n, a in done.items()
        for b in done.values()
        if b["acc"] >= a["acc"] and b["bwt"] >= a["bwt"] and (b["acc"], b["bwt"]) != (a["acc"], a["bwt"])
    }
    assert {p[0] for p in shown["pareto"]["front"]} == set(done) - beaten
    hist = shown["acc_distribution"]
    for strategy, counts in hist["counts"].items():
        assert sum(counts) == sum(a["strategy"] == strategy for a in done.values())
    bins = [0] * (len(hist["edges"]) - 1)  # each trial's ACC in the bin whose edges hold it (the last one closed)
    for a in done.values():
        bins[min(len(bins) - 1, max(i for i, e in enumerate(hist["edges"][:-1]) if e <= a["acc"] * 100))] += 1
    assert [sum(c) for c in zip(*hist["counts"].values(), strict=True)] == bins
    accs = sorted(a["acc"] * 100 for a in done.values())
    assert (hist["edges"][0], hist["edges"][-1]) == (accs[0], accs[-1]) and len(hist["edges"]) == 21
    order = sorted(done)
    assert shown["history"]["trials"] == order
    assert shown["history"]["best"] == [max(done[m]["acc"] * 100 for m in order[: i + 1]) for i in range(len(order))]
    rec = shown["recommended_R"]
    assert rec["R"] == done[rec["trial"]]["R"] and rec["order"] == done[rec["trial"]]["order"]


def test_exhaustive_uses_the_prefix_cache_and_matches_uncached_runs(workdir):
    study, summary, _ = run_search(request(workdir, study="exh", strategies=["naive"], exhaustive=True))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    orders = sorted(tuple(t.user_attrs["order"]) for t in trials)
    assert len(orders) == 6 == len(set(orders))
    assert summary.reused > 0 and summary.trained + summary.reused == 6 * 3
    pool = load_pool(str(workdir / "pool.yaml"))
    for t in trials:
        direct = run_ordering(pool, t.user_attrs["order"], StrategyConfig(name="naive"), TrainConfig(epochs=EPOCHS), 0)
        assert np.array_equal(direct.rmatrix.values, np.asarray(t.user_attrs["R"])), t.user_attrs["order"]


@pytest.mark.extended
def test_pruning_stops_worse_orderings(workdir):
    study, summary, _ = run_search(
        request(workdir, study="prune", strategies=["naive", "ewc"], trials=16, workers=1, prune=True, prune_startup=3)
    )
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert summary.pruned == len(pruned) >= 1
    assert summary.saved_by_pruning >= len(pruned)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 16


def test_nan_trial_is_failed_with_reason_and_study_goes_on(workdir):
    study, summary, _ = run_search(
        request(workdir, study="nan", strategies=["ewc"], lam=1e38, trials=2, train={"epochs": EPOCHS, "lr": 10.0})
    )
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert summary.failed == len(failed) == 2
    assert all("diverged" in t.user_attrs["fail_reason"] for t in failed)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("nan")
    runs = client.search_runs([exp.experiment_id], "tags.`lll.state` = 'failed'")
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)


@pytest.mark.extended
@pytest.mark.slow
def test_sigkill_then_resume_loses_and_repeats_nothing(workdir):
    d = workdir / "kill"
    d.mkdir()
    (d / "pool.yaml").write_text(POOL_YAML)
    args = [
        "search",
        "--pool",
        "pool.yaml",
        "--strategies",
        "naive,ewc",
        "--trials",
        "10",
        "--seeds",
        "1",
        "--epochs",
        str(EPOCHS),
        "--study",
        "k",
        "--no-prune",
        "--workers",
        "2",
        "--validate",
        "0",
    ]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args],
        cwd=d,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    storage = default_storage(d)
    deadline = time.time() + 240
    complete = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        try:
            s = optuna.load_study(study_name="k", storage=storage)
            complete = len(s.get_trials(states=(TrialState.COMPLETE,)))
        except Exception:
            continue
        if complete >= 3:
            break
    assert proc.poll() is None, "the search finished before it could be killed; make it longer"
    assert complete >= 3
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)

    res = lll("search", "--study", "k", "--resume", "--validate", "0", cwd=d)
    assert res.returncode == 0, res.stderr
    s = optuna.load_study(study_name="k", storage=storage)
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 10
    client = MlflowClient(f"sqlite:///{d}/mlflow.db")
    exp = client.get_experiment_by_name("k")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parents = [r for r in runs if r.data.tags.get("lll.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = [r for r in runs if r.data.tags.get("lll.state") == "complete"]
    numbers = [int(r.data.tags["optuna_trial_number"]) for r in finished]
    assert len(numbers) == len(set(numbers)) == 10, "a finished trial was recorded twice or lost"
    assert set(numbers) == {t.number for t in complete}
    assert all(r.info.status != "RUNNING" for r in runs)


def test_bad_input_fails_fast_with_one_line(workdir):
    cases = [
        (["search", "--study", "nope", "--resume"], "no study named"),
        (["search", "--storage", "postgresql://u:secret@127.0.0.1:1/db"], "unreachable"),
        (["search", "--tracking-uri", "http://127.0.0.1:1"], "unreachable"),
        (["search", "--ray-address", "127.0.0.1:1"], "no Ray head"),
        (["search", "--strategies", "ewc,nope"], "unknown strategy"),
        (["export", "--study", "nope"], "no study named"),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:  # independent commands: two at a time
        results = list(pool.map(lambda case: lll(*case[0], cwd=workdir, timeout=120), cases))
    for (args, needle), res in zip(cases, results, strict=True):
        assert res.returncode == 2, (args, res.stderr)
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, res.stderr)
        assert "Traceback" not in res.stderr
        assert "secret" not in res.stderr
