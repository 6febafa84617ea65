"""The exported rerun reproduces the search, bit for bit, on the default path.

As a new user runs it: `lll search` (MLP, a lockstep strategy, ``--population auto``, 2 workers,
2 seeds) → `lll export` → the printed `rerun` command. The search trains its units stacked in
lockstep with whatever else its workers hold; `lll run` trains the same units through the same
code with its seeds side by side. The rerun must print the exported ACC/BWT/FWT exactly and give
each seed's R — and, more sensitive than R, each seed's final weights and strategy state — bit for
bit. (Accuracies on a small test set hide rounding differences; the weights do not: one-at-a-time
and lockstep training differ in the last bits of the weights after one epoch.)
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import lll, pool_workdir, tiny_pool_yaml
from mlflow.tracking import MlflowClient

from pipeline.rmatrix import RMatrix

pytestmark = pytest.mark.e2e

POOL_YAML = tiny_pool_yaml("tiny-rerun", 200, 100)


def tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint's nested dicts and lists, by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else []
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


@pytest.mark.parametrize("strategy", ["naive", pytest.param("ewc", marks=pytest.mark.extended)])
def test_search_export_rerun_is_bit_for_bit(tmp_path_factory, strategy: str) -> None:
    d = pool_workdir(tmp_path_factory, f"rerun-{strategy}", POOL_YAML)
    uri, storage = f"sqlite:///{d}/mlflow.db", f"sqlite:///{d}/optuna.db"
    res = lll("search", "--pool", "pool.yaml", "--strategies", strategy, "--trials", "4", "--seeds", "2",
              "--validate", "0", "--workers", "2", "--population", "auto", "--epochs", "2", "--study", "s",
              "--storage", storage, "--tracking-uri", uri, cwd=d, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = lll("export", "--study", "s", "--storage", storage, "--out", "order.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rec = json.loads((d / "order.json").read_text())
    rerun_args = shlex.split(rec["rerun"])
    assert rerun_args[:2] == ["lll", "run"] and "--seeds" in rerun_args
    res = lll(*rerun_args[1:], "--tracking-uri", uri, "--experiment", "rerun", "--out", "rerun.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rerun = json.loads((d / "rerun.json").read_text())

    assert (rerun["acc"], rerun["bwt"], rerun["fwt"]) == (rec["acc"], rec["bwt"], rec["fwt"])
    client = MlflowClient(uri)
    seeds = rec["params"]["seeds"]
    assert seeds == [0, 1] and [p["seed"] for p in rerun["per_seed"]] == seeds
    for s, mine in zip(seeds, rerun["per_seed"], strict=True):
        r_json = client.download_artifacts(rec["mlflow_run_id"], f"per_seed/R_seed{s}.json", str(d))
        searched = RMatrix.from_json(r_json)
        assert mine["tasks"] == list(searched.tasks) == rec["order"]
        assert np.array_equal(np.array(mine["R"]), searched.values), s
        # The final state, weights and strategy state, bit for bit.
        got = {}
        for run_id in (rec["mlflow_run_id"], rerun["mlflow_run_id"]):
            (d / run_id).mkdir(exist_ok=True)
            path = client.download_artifacts(run_id, f"checkpoints/seed{s}/final.pt", str(d / run_id))
            ckpt = torch.load(Path(path), weights_only=True)
            got[run_id] = tensors({"model": ckpt["model"], "strategy": ckpt["strategy"]})
        a, b = got.values()
        assert a.keys() == b.keys() and any("strategy" in k for k in a) == (strategy == "ewc")
        assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_validated_search_export_rerun_reproduces_the_heldout_numbers(tmp_path_factory) -> None:
    """The default path with validation (issue 19 point 5): `lll search` (MLP, EWC, --population auto,
    2 workers) ends by retraining its top orderings on held-out seeds, `lll export` recommends the best
    held-out one, and its printed rerun command (`lll run ... --seeds <held-out>`) prints the exported
    held-out ACC and BWT exactly, each seed's R bit for bit as the validation run recorded it."""
    d = pool_workdir(tmp_path_factory, "rerun-validated", POOL_YAML)
    uri, storage = f"sqlite:///{d}/mlflow.db", f"sqlite:///{d}/optuna.db"
    res = lll("search", "--pool", "pool.yaml", "--strategies", "ewc", "--trials", "3", "--seeds", "1",
              "--workers", "2", "--population", "auto", "--epochs", "2", "--checkpoints", "none", "--study", "v",
              "--storage", storage, "--tracking-uri", uri, cwd=d, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "validation on held-out seeds" in res.stdout  # on by default
    res = lll("export", "--study", "v", "--storage", storage, "--out", "order.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rec = json.loads((d / "order.json").read_text())
    block = rec["validation"]
    best = block["orderings"][block["recommended"]]
    heldout = block["heldout_seeds"]
    assert rec["order"] == best["order"] and len(heldout) == 3 and not set(heldout) & {0}
    rerun_args = shlex.split(rec["rerun"])
    assert rerun_args[rerun_args.index("--seeds") + 1] == ",".join(map(str, heldout))
    res = lll(*rerun_args[1:], "--tracking-uri", uri, "--experiment", "rerun", "--out", "rerun.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rerun = json.loads((d / "rerun.json").read_text())

    assert rerun["acc"] == best["heldout_acc"]["mean"] and rerun["bwt"] == best["heldout_bwt"]["mean"]
    client = MlflowClient(uri)
    parent = client.get_run(client.search_runs([client.get_experiment_by_name("v").experiment_id],
                                               "tags.`lll.kind` = 'search'")[0].info.run_id)  # fmt: skip
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`lll.kind` = 'validation' "
        f"and tags.`lll.role` = 'top' and params.order = '{','.join(best['order'])}'",
    )
    assert len(runs) == 1
    for s, mine in zip(heldout, rerun["per_seed"], strict=True):
        assert mine["seed"] == s and mine["tasks"] == best["order"]
        validated = RMatrix.from_json(
            client.download_artifacts(runs[0].info.run_id, f"per_seed/R_seed{s}.json", str(d))
        )
        assert np.array_equal(np.array(mine["R"]), validated.values), s
        r = RMatrix(mine["tasks"], np.array(mine["R"]))
        assert (r.acc(), r.bwt()) == (best["per_seed"][str(s)]["acc"], best["per_seed"][str(s)]["bwt"])
