"""Validation on held-out seeds (issue 19 point 5), through the real CLI, Ray and MLflow.

One small search ends with ``--validate 2``; its export is checked against an independent
recomputation (numpy/scipy) from the per-seed R matrices the validation runs recorded in MLflow.
A second study fixes the pool's given order, so the recommendation *is* the given order and the
paired gain over it is exactly 0 on every seed: "not clearly better" must be printed. Then a
validation SIGKILLed after 4 stored paths is resumed by `lll export --validate` and trains only
the missing paths; and the bad inputs are one line and exit 2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import LLL_ENV, default_storage, lll, pool_workdir, tiny_pool_yaml
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient
from scipy import stats

pytestmark = pytest.mark.e2e

COMMON = ["--pool", "pool.yaml", "--strategies", "naive", "--seeds", "1", "--epochs", "2", "--lr", "0.05"]
COMMON += ["--workers", "2", "--checkpoints", "none"]
GIVEN = ["upright", "rot90", "permuted"]  # the tiny pool's order


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    d = pool_workdir(tmp_path_factory, "validate", tiny_pool_yaml("tiny-val", 200, 100))
    r = lll("search", *COMMON, "--trials", "6", "--validate", "2", "--study", "v", cwd=d, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d, r


def acc_bwt(R: np.ndarray) -> tuple[float, float]:
    """Final ACC and BWT of an R matrix (row 0: before training), computed here, not by lll."""
    T = R.shape[1]
    return R[T].mean(), np.mean([R[T, j] - R[j + 1, j] for j in range(T - 1)])


def t_interval(values: list[float]) -> tuple[float, float, float]:
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return float(np.mean(values)), float(low), float(high)


def recorded_validation(d: Path, study: str) -> dict[tuple[str, tuple[str, ...]], dict[int, np.ndarray]]:
    """(role, ordering) → seed → R, read from the validation runs under the study's parent run."""
    uri = f"sqlite:///{d / 'mlflow.db'}"
    mc = MlflowClient(tracking_uri=uri)
    parent = optuna.load_study(study_name=study, storage=default_storage(d)).user_attrs["mlflow_parent_run_id"]
    exp = mc.get_experiment_by_name(study)
    runs = mc.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}' and tags.`lll.kind` = 'validation'"
    )
    got: dict[tuple[str, tuple[str, ...]], dict[int, np.ndarray]] = {}
    for run in runs:
        key = (run.data.tags["lll.role"], tuple(run.data.params["order"].split(",")))
        for s in map(int, run.data.params["seeds"].split(",")):
            path = download_artifacts(
                run_id=run.info.run_id, artifact_path=f"per_seed/R_seed{s}.json", tracking_uri=uri
            )
            got.setdefault(key, {})[s] = np.asarray(json.loads(Path(path).read_text())["R"])
    return got


def test_search_prints_the_validation(searched):
    _, r = searched
    out = r.stdout
    assert "validation on held-out seeds 1000000,1000001,1000002" in out
    assert "held-out ACC" in out and "the search's own estimate" in out and "held-out BWT" in out
    assert "the pool's given order" in out and "a random ordering" in out
    assert "re-run it: lll run" in out and "--seeds 1000000,1000001,1000002" in out


def test_export_fields_agree_with_an_independent_recomputation(searched):
    d, r = searched
    e = lll("export", "--study", "v", "--out", "order.json", cwd=d)
    assert e.returncode == 0, e.stderr
    rec = json.loads((d / "order.json").read_text())
    v = rec["validation"]
    seeds = v["heldout_seeds"]
    assert seeds == [1000000, 1000001, 1000002]
    recorded = recorded_validation(d, "v")
    roles = [o["role"] for o in v["orderings"]]
    assert roles == ["top", "top", "given", "random", "random"]
    assert tuple(v["orderings"][2]["order"]) == tuple(GIVEN)
    per = {}
    for i, o in enumerate(v["orderings"]):
        R = recorded[(o["role"], tuple(o["order"]))]
        assert sorted(R) == seeds
        acc = [acc_bwt(R[s])[0] for s in seeds]
        bwt = [acc_bwt(R[s])[1] for s in seeds]
        per[i] = acc
        for name, values in (("heldout_acc", acc), ("heldout_bwt", bwt)):
            mean, low, high = t_interval(values)
            assert o[name]["mean"] == pytest.approx(mean, abs=1e-12)
            assert o[name]["ci95"] == pytest.approx([low, high], abs=1e-9)
    tops = [i for i, role in enumerate(roles) if role == "top"]
    best = max(tops, key=lambda i: np.mean(per[i]))
    assert v["recommended"] == best
    assert rec["order"] == v["orderings"][best]["order"]  # the recommendation is the best held-out mean
    assert rec["acc"] == pytest.approx(v["orderings"][best]["search_acc"])  # the search's estimate beside it
    # The note speaks of the validated ordering, not of the search's own best.
    assert "chosen among the top 2 by its mean on 3 held-out seeds" in rec["confidence"]["note"]
    assert rec["confidence"]["seeds"] == len(rec["params"]["seeds"])
    # The estimate: the recommendation's held-out mean; the pessimistic bound scores each held-out
    # seed by the top pick made on the other two.
    assert v["estimate"]["acc"] == v["orderings"][best]["heldout_acc"]
    loo = [per[max(tops, key=lambda i: sum(per[i][t] for t in range(3) if t != s))][s] for s in range(3)]
    mean, low, high = t_interval(loo)
    assert v["estimate"]["cross_fitted"]["acc"]["mean"] == pytest.approx(mean, abs=1e-12)
    assert v["estimate"]["cross_fitted"]["acc"]["ci95"] == pytest.approx([low, high], abs=1e-9)
    random_mean = np.mean([per[i] for i, role in enumerate(roles) if role == "random"], axis=0)
    for field, other in (("given_order", np.asarray(per[2])), ("random_ordering", random_mean)):
        diffs = list(np.asarray(per[best]) - other)
        mean, low, high = t_interval(diffs)
        g = v["gain"][field]
        assert g["mean"] == pytest.approx(mean, abs=1e-12)
        assert g["ci95"] == pytest.approx([low, high], abs=1e-9)
        assert ("not clearly better" in g["verdict"]) == (low <= 0 <= high)
        assert g["verdict"] in r.stdout
    assert "2 random orderings" in v["random_baseline"]
    assert rec["rerun"] == v["rerun"] and "--seeds 1000000,1000001,1000002" in rec["rerun"]
    rep = lll("report", "--study", "v", "--out", "rep", cwd=d)
    assert rep.returncode == 0 and (d / "rep" / "validation.png").stat().st_size > 0


@pytest.mark.extended
def test_not_clearly_better_when_the_gain_is_zero(tmp_path_factory):
    """Only the given order is searched: the recommendation is the given order, the paired gain
    over it is 0 on every seed, its CI [0, 0] includes 0."""
    d = pool_workdir(tmp_path_factory, "validate-given", tiny_pool_yaml("tiny-given", 200, 100))
    args = ["--order", ",".join(GIVEN), "--trials", "1", "--validate", "1", "--heldout-seeds", "40,41"]
    r = lll("search", *COMMON, *args, "--study", "g", cwd=d, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "not clearly better than the pool's given order: +0.00 points" in r.stdout
    e = lll("export", "--study", "g", "--out", "g.json", cwd=d)
    assert e.returncode == 0, e.stderr
    rec = json.loads((d / "g.json").read_text())
    g = rec["validation"]["gain"]["given_order"]
    assert g["mean"] == 0 and g["ci95"] == [0, 0]
    assert g["verdict"].startswith("not clearly better than the pool's given order")


def stored_paths(d: Path, study: str, seeds: set[int]) -> int:
    attrs = optuna.load_study(study_name=study, storage=default_storage(d)).user_attrs
    return sum(1 for k, v in attrs.items() if k.startswith("validation_path:") and v["seed"] in seeds)


def copy_study(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("pool.yaml", "optuna.journal", "mlflow.db"):
        shutil.copy(src / name, dst / name)
    if (src / "mlartifacts").exists():
        shutil.copytree(src / "mlartifacts", dst / "mlartifacts")
    return dst


def test_sigkill_during_validation_then_resume_trains_only_the_missing_paths(searched, tmp_path):
    d = copy_study(searched[0], tmp_path / "killed")
    args = ["export", "--study", "v", "--validate", "3", "--heldout-seeds", "7,8,9", "--out", "k.json"]
    env = {**LLL_ENV, "LLL_FAULT": "kill-on-done@after_validation_path:4"}
    proc = subprocess.run([sys.executable, "-m", "search.cli", *args], cwd=d, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert stored_paths(d, "v", {7, 8, 9}) == 4
    r = lll(*args, cwd=d, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((d / "k.json").read_text())
    orders = {(tuple(o["order"]), o["strategy"]) for o in rec["validation"]["orderings"]}
    total = len(orders) * 3  # distinct (ordering, seed) paths
    line = next(x for x in r.stderr.splitlines() if "validation trained" in x)
    assert f"validation trained {total - 4} (ordering, seed) paths" in line and "4 were already stored" in line
    assert stored_paths(d, "v", {7, 8, 9}) == total
    assert rec["validation"]["heldout_seeds"] == [7, 8, 9]


def test_bad_input_is_one_line_and_exit_2(searched, tmp_path):
    d = searched[0]
    cases = [
        (["export", "--study", "v", "--validate", "99"], "finished distinct ordering"),
        (["export", "--study", "v", "--validate", "2", "--heldout-seeds", "0,5,6"], "were used by the search"),
        (["search", *COMMON, "--trials", "2", "--validate", "3", "--study", "new"], "--validate 3"),
        (["search", *COMMON, "--trials", "2", "--heldout-seeds", "1,0", "--study", "new2"], "were used by the search"),
    ]
    for args, words in cases:
        r = lll(*args, cwd=d)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (
            args,
            r.stderr,
        )
    changed = copy_study(d, tmp_path / "changed")
    (changed / "pool.yaml").write_text(tiny_pool_yaml("tiny-val", 200, 90))  # other test images: other fingerprint
    # one check (search.study.storage.check_pool_unchanged), each command with its own fix
    for args, fix in [
        (["export", "--study", "v", "--validate", "2"], "validate with the same pool file and data"),
        (["search", "--study", "v", "--resume", "--trials", "9"], "resume with the same pool file and data"),
    ]:
        r = lll(*args, cwd=changed)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "pool 'pool.yaml' has changed since study 'v' started" in lines[0] and lines[0].endswith(fix), lines
    names = optuna.get_all_study_names(default_storage(d))
    assert "new" not in names and "new2" not in names  # refused before the study existed
