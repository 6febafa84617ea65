"""Learn one ordering end to end (``lll run``): the units of its path, one after another, through
the same :class:`~pipeline.units.UnitRunner` (and so the same training code and prefix cache) a
search worker uses — which is why an exported rerun reproduces the search bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.prefix import (
    Learner,
    MemoryPrefixCache,
    PrefixCache,
    PrefixState,
    initial_learner,
    learner_from,
    prefix_key,
    record_task,
    restore,
    snapshot,
)
from pipeline.rmatrix import RMatrix
from pipeline.strategies.base import Strategy
from pipeline.train import pick_device
from pipeline.units import Unit, UnitRunner
from tasks.pool import TaskPool

__all__ = [
    "Learner",
    "MemoryPrefixCache",
    "PrefixCache",
    "PrefixState",
    "RunResult",
    "TaskCallback",
    "initial_learner",
    "learner_from",
    "prefix_key",
    "record_task",
    "restore",
    "run_ordering",
    "snapshot",
]


@dataclass
class RunResult:
    rmatrix: RMatrix
    model: nn.Module
    strategy: Strategy
    rows: list[dict[str, float]]  # row i: accuracy on every pool task after i tasks
    trained: int = 0  # task-trainings actually run
    reused: int = 0  # task-trainings taken from the cache
    seconds: float = 0.0
    sizes: list[dict[str, float]] = field(default_factory=list)  # params / stored bytes / ... after each task


TaskCallback = Callable[[int, str, dict[str, float]], None]


def run_ordering(
    pool: TaskPool,
    order: list[str],
    strategy_cfg: StrategyConfig,
    train_cfg: TrainConfig,
    seed: int = 0,
    cache: PrefixCache | None = None,
    on_task: TaskCallback | None = None,
    on_epoch: Callable[[str, int], None] | None = None,
) -> RunResult:
    """Train ``order`` (task names of ``pool``) in sequence and return R and the final state.

    ``on_task(i, name, row)`` is called after the i-th task (1-based) with the accuracy row on every
    pool task; it may raise to stop the run early. ``cache`` is consulted for the longest
    already-trained prefix and filled with every new one. A task that fails (diverged, a strategy's
    refusal) raises its LLLError.
    """
    t0 = time.perf_counter()
    runner = UnitRunner(pool, cache)
    sj, tj = strategy_cfg.model_dump_json(), train_cfg.model_dump_json()
    known: dict[str, PrefixState] = {}
    start = runner.lookup(Unit(tuple(order), sj, tj, seed), known)
    if start.error is not None:
        raise start.error
    reused = max(0, start.pos)
    state = known.get(start.key(pool, reused))
    rows = list(state.rows) if state is not None else []
    if on_task is not None:
        for i in range(1, reused + 1):
            on_task(i, order[i - 1], rows[i])
    epoch_cb = (lambda step, e: on_epoch(step.prefix[-1], e)) if on_epoch is not None else None
    trained = 0
    for n in range(reused + 1, len(order) + 1):
        (out,) = runner.run([Unit(tuple(order[:n]), sj, tj, seed)], epoch_cb)
        trained += out.trained
        if out.error is not None:
            raise out.error
        state = out.state
        if on_task is not None:
            on_task(n, order[n - 1], state.rows[-1])
    learner = learner_from(state, strategy_cfg, pick_device(train_cfg.device))
    return RunResult(
        RMatrix.from_rows(list(order), state.rows),
        learner.model,
        learner.strategy,
        list(state.rows),
        trained=trained,
        reused=reused,
        seconds=time.perf_counter() - t0,
        sizes=list(state.sizes),
    )
