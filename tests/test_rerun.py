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


@pytest.mark.parametrize("strategy", ["naive", "ewc"])
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
