"""One trial = one (ordering, strategy, λ, seed) → R + checkpoint, recorded as one MLflow run.

The pieces here are shared by `lll run` and by the search workers/driver.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.checkpoint import save_checkpoint
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.rmatrix import RMatrix
from pipeline.runner import RunResult
from tasks.pool import TaskPool


def trial_params(
    pool: TaskPool, order: list[str], strategy: StrategyConfig, train: TrainConfig, seed: int
) -> dict[str, Any]:
    """The MLflow params of a trial: enough to re-run it exactly."""
    params: dict[str, Any] = {
        "pool": pool.name,
        "pool_fingerprint": pool.fingerprint(),
        "order": ",".join(order),
        "strategy": strategy.name,
        "lambda": strategy.lam,
        "seed": seed,
    }
    params.update({f"opt.{k}": v for k, v in strategy.options.items()})
    params.update({f"train.{k}": v for k, v in train.model_dump(mode="json").items()})
    return params


def running_accuracy(r: RMatrix) -> list[float]:
    """Mean accuracy over the tasks trained so far, after each task (what pruning watches)."""
    return [float(r.values[i, :i].mean()) for i in range(1, r.T + 1)]


def size_series(sizes: list[dict[str, float]]) -> dict[str, list[float]]:
    """One per-task series per size field: ``params``, ``stored_bytes`` and whatever the strategy's
    ``size_report`` adds (a field missing after some task is NaN there, so steps stay aligned)."""
    keys = dict.fromkeys(k for s in sizes for k in s)
    return {k: [float(s.get(k, float("nan"))) for s in sizes] for k in keys}


def step_series(result: RunResult) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {"running_acc": running_accuracy(result.rmatrix)}
    series.update(size_series(result.sizes))
    return series


def record_result(
    uri: str,
    experiment: str,
    run_name: str,
    result: RunResult,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    checkpoint: bool = True,
) -> str:
    """Log a finished ordering as one MLflow run; returns its run id."""
    run_id = tracking.start_run(uri, experiment, run_name, tags=tags, parent_run_id=parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        if checkpoint:
            files.append(
                (
                    "checkpoints",
                    save_checkpoint(
                        Path(tmp) / "final.pt", result.model, result.strategy, {"order": list(result.rmatrix.tasks)}
                    ),
                )
            )
        tracking.log_ordering_run(
            uri,
            run_id,
            result.rmatrix,
            params,
            extra_metrics={"seconds": result.seconds, "tasks_trained": result.trained},
            step_metrics=step_series(result),
            files=files,
        )
    tracking.end_run(uri, run_id)
    return run_id


def seed_metrics(rmats: list[RMatrix]) -> dict[str, float]:
    """ACC/BWT/FWT/forgetting as the mean over seeds of each seed's value, and the std of ACC and
    BWT — computed exactly as the search driver does, so `lll run --seeds` prints the number a
    study exported."""
    import numpy as np

    per = {k: [getattr(r, k)() for r in rmats] for k in ("acc", "bwt", "fwt", "forgetting")}
    metrics = {k: float(np.mean(v)) for k, v in per.items()}
    metrics.update({f"{k}_std": float(np.std(v)) for k, v in per.items() if k in ("acc", "bwt")})
    return metrics


def mean_rmatrix(rmats: list[RMatrix]) -> RMatrix:
    import numpy as np

    return RMatrix(rmats[0].tasks, np.mean([r.values for r in rmats], axis=0))


def record_seeds(
    uri: str, experiment: str, run_name: str, results: list[RunResult], seeds: list[int], params: Mapping[str, Any]
) -> str:
    """Log one ordering trained on several seeds as one MLflow run: the mean R, the seed-mean
    metrics (and each seed's ACC/BWT as ``acc_seed{s}``), each seed's R and final checkpoint."""
    if len(results) == 1:
        return record_result(uri, experiment, run_name, results[0], params)
    rmats = [r.rmatrix for r in results]
    metrics = seed_metrics(rmats)
    for s, r in zip(seeds, rmats, strict=True):
        metrics.update({f"acc_seed{s}": r.acc(), f"bwt_seed{s}": r.bwt()})
    metrics.update(seconds=sum(r.seconds for r in results), tasks_trained=sum(r.trained for r in results))
    run_id = tracking.start_run(uri, experiment, run_name)
    with tempfile.TemporaryDirectory() as tmp:
        files: list[tuple[str, Path]] = []
        for s, res in zip(seeds, results, strict=True):
            per_seed = Path(tmp) / f"R_seed{s}.json"
            res.rmatrix.to_json(per_seed)
            files.append(("per_seed", per_seed))
            meta = {"order": list(res.rmatrix.tasks), "seed": s}
            ckpt = save_checkpoint(Path(tmp) / f"seed{s}" / "final.pt", res.model, res.strategy, meta)
            files.append((f"checkpoints/seed{s}", ckpt))
        series = step_series(results[0])
        series["running_acc"] = running_accuracy(mean_rmatrix(rmats))
        tracking.log_ordering_run(
            uri, run_id, mean_rmatrix(rmats), params, extra_metrics=metrics, step_metrics=series, files=files
        )
    tracking.end_run(uri, run_id)
    return run_id
