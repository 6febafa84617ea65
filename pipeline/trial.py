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
