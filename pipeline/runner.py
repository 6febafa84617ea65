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
    "run_seeds",
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
    each = (lambda _seed, i, name, row: on_task(i, name, row)) if on_task is not None else None
    return run_seeds(pool, order, strategy_cfg, train_cfg, [seed], cache, each, on_epoch)[0]


def run_seeds(
    pool: TaskPool,
    order: list[str],
    strategy_cfg: StrategyConfig,
    train_cfg: TrainConfig,
    seeds: list[int],
    cache: PrefixCache | None = None,
    on_task: Callable[[int, int, str, dict[str, float]], None] | None = None,
    on_epoch: Callable[[str, int], None] | None = None,
) -> list[RunResult]:
    """:func:`run_ordering` on each of ``seeds`` at once: task i of every seed is one batch of units,
    so the seeds stack in lockstep where the strategy allows (a result never depends on that).
    ``on_task(seed, i, name, row)`` after each seed's i-th task."""
    t0 = time.perf_counter()
    runner = UnitRunner(pool, cache, population=len(seeds))
    sj, tj = strategy_cfg.model_dump_json(), train_cfg.model_dump_json()
    known: dict[str, PrefixState] = {}
    starts = [runner.lookup(Unit(tuple(order), sj, tj, s), known) for s in seeds]
    for start in starts:
        if start.error is not None:
            raise start.error
    reused = [max(0, start.pos) for start in starts]
    states = [known.get(start.key(pool, n)) for start, n in zip(starts, reused, strict=True)]
    for seed, n, state in zip(seeds, reused, states, strict=True):
        for i in range(1, n + 1):
            if on_task is not None:
                on_task(seed, i, order[i - 1], state.rows[i])
    epoch_cb = (lambda step, e: on_epoch(step.prefix[-1], e)) if on_epoch is not None else None
    trained = [0] * len(seeds)
    for n in range(min(reused) + 1, len(order) + 1):
        todo = [k for k in range(len(seeds)) if reused[k] < n]
        outs = runner.run([Unit(tuple(order[:n]), sj, tj, seeds[k]) for k in todo], epoch_cb)
        for k, out in zip(todo, outs, strict=True):
            trained[k] += out.trained
            if out.error is not None:
                raise out.error
            states[k] = out.state
            if on_task is not None:
                on_task(seeds[k], n, order[n - 1], out.state.rows[-1])
    device = pick_device(train_cfg.device)
    results = []
    for state, n, done in zip(states, reused, trained, strict=True):
        learner = learner_from(state, strategy_cfg, device)
        rows = list(state.rows)
        rmatrix = RMatrix.from_rows(list(order), rows)
        seconds = time.perf_counter() - t0
        results.append(RunResult(rmatrix, learner.model, learner.strategy, rows, done, n, seconds, list(state.sizes)))
    return results
