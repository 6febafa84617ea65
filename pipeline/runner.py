"""Learn one ordering end to end: build the model, train task after task, fill R.

Determinism and the prefix cache: task i is trained with a seed derived from (seed, the ordering's
first i tasks), so the state after a prefix never depends on what comes after it. That state
(model, strategy state, and the accuracy row measured on every pool task) is therefore a pure
function of a key, and orderings that share a prefix can share its training.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.models import build_model, model_for_pool
from pipeline.rmatrix import RMatrix
from pipeline.strategies import make_strategy
from pipeline.strategies.base import Strategy, tensor_bytes
from pipeline.train import evaluate, pick_device, train_task
from tasks.pool import TaskPool, seed_from, stable_hash


@dataclass
class PrefixState:
    """Everything the rest of a sequence needs after training a prefix."""

    model_spec: dict
    model: dict[str, torch.Tensor]
    strategy: dict[str, Any]
    rows: list[dict[str, float]]  # accuracy on every pool task after each prefix 0..i
    sizes: list[dict[str, float]]  # parameters, stored bytes (+ the strategy's size_report) after each task 1..i

    def nbytes(self) -> int:
        return tensor_bytes(self.model) + tensor_bytes(self.strategy)

    def to_dict(self) -> dict:
        return {
            "model_spec": self.model_spec,
            "model": self.model,
            "strategy": self.strategy,
            "rows": self.rows,
            "sizes": self.sizes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PrefixState:
        return cls(d["model_spec"], d["model"], d["strategy"], d["rows"], d["sizes"])


class PrefixCache(Protocol):
    def get(self, key: str) -> PrefixState | None: ...
    def put(self, key: str, state: PrefixState) -> None: ...


class MemoryPrefixCache:
    """An in-process LRU cache of prefix states, bounded in bytes."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, PrefixState] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._pinned: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> PrefixState | None:
        state = self._items.get(key)
        if state is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return state

    def put(self, key: str, state: PrefixState, pin: bool = False) -> None:
        """Add ``state``; ``pin`` keeps it past the byte budget until :meth:`unpin_all` (a worker
        pins the states its last call produced, so a trial can continue on the next call)."""
        if pin:
            self._pinned.add(key)
        if key in self._items:
            return
        self._items[key] = state
        self.bytes += state.nbytes()
        while self.bytes > self.max_bytes and len(self._items) > 1:
            old_key = next((k for k in self._items if k not in self._pinned and k != key), None)
            if old_key is None:
                break
            self.bytes -= self._items.pop(old_key).nbytes()

    def unpin_all(self) -> None:
        self._pinned.clear()


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


def prefix_key(
    pool: TaskPool, strategy_cfg: StrategyConfig, train_cfg: TrainConfig, seed: int, prefix: list[str]
) -> str:
    """Everything that determines the state after ``prefix`` (device excluded: it is where, not what)."""
    train = train_cfg.model_dump(mode="json", exclude={"device"})
    return stable_hash(pool.fingerprint(), strategy_cfg.model_dump(mode="json"), train, seed, prefix)


def snapshot(model: nn.Module, strategy: Strategy, rows: list, sizes: list) -> PrefixState:
    return PrefixState(
        copy.deepcopy(model.spec),
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        copy.deepcopy(strategy.state_dict()),
        copy.deepcopy(rows),
        copy.deepcopy(sizes),
    )


def restore(state: PrefixState, strategy: Strategy, device: torch.device) -> nn.Module:
    model = build_model(state.model_spec).to(device)
    model.load_state_dict(state.model)
    strategy.load_state_dict(copy.deepcopy(state.strategy))
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Learner:
    """A live prefix state: the model and strategy being trained, and R's rows so far. Every path
    (``lll run``, a worker's trial, a worker's units, lockstep members) trains through these."""

    model: nn.Module
    strategy: Strategy
    rows: list[dict[str, float]]
    sizes: list[dict[str, float]]

    def snapshot(self) -> PrefixState:
        return snapshot(self.model, self.strategy, self.rows, self.sizes)


def initial_learner(
    pool: TaskPool, strategy_cfg: StrategyConfig, train_cfg: TrainConfig, seed: int, device: torch.device
) -> Learner:
    """The state after the empty prefix: the initial model (it depends on the seed only) and row 0."""
    strategy = make_strategy(strategy_cfg)
    cfg = train_cfg
    model = model_for_pool(pool, cfg.hidden, cfg.heads, cfg.init, seed_from(seed, "init"), cfg.model)
    model = model.to(device)
    return Learner(model, strategy, [evaluate(model, strategy, pool.tasks.values(), device)], [])


def learner_from(state: PrefixState, strategy_cfg: StrategyConfig, device: torch.device) -> Learner:
    """A live copy of a cached (or checkpointed) prefix state; the cached state stays untouched."""
    strategy = make_strategy(strategy_cfg)
    model = restore(state, strategy, device)
    return Learner(model, strategy, copy.deepcopy(state.rows), copy.deepcopy(state.sizes))


def record_task(learner: Learner, pool: TaskPool, device: torch.device) -> dict[str, float]:
    """After a task: R's next row (accuracy on every pool task) and the sizes; returns the row."""
    row = evaluate(learner.model, learner.strategy, pool.tasks.values(), device)
    learner.rows.append(row)
    learner.sizes.append(
        {
            "params": count_params(learner.model),
            "stored_bytes": learner.strategy.stored_bytes(),
            **learner.strategy.size_report(learner.model),
        }
    )
    return row


def train_next(
    learner: Learner,
    pool: TaskPool,
    prefix: list[str],
    train_cfg: TrainConfig,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``prefix[-1]`` on top of ``learner`` (which holds the state after ``prefix[:-1]``), one
    model at a time; the task seed comes from (seed, prefix) so the result depends on nothing else."""
    task = pool[prefix[-1]]
    learner.model = train_task(
        learner.model, task, learner.strategy, train_cfg, seed_from(seed, list(prefix)), device, on_epoch
    )
    return record_task(learner, pool, device)


TaskCallback = Callable[[int, str, dict[str, float]], None]


class SequenceRun:
    """One ordering, trained one task per :meth:`step` call.

    Stepping lets a caller look at each task's accuracy row before deciding to go on — the search
    driver reports it to Optuna and stops clearly worse orderings early (pruning) — while
    :func:`run_ordering` simply steps to the end.
    """

    def __init__(
        self,
        pool: TaskPool,
        order: list[str],
        strategy_cfg: StrategyConfig,
        train_cfg: TrainConfig,
        seed: int = 0,
        cache: PrefixCache | None = None,
        on_epoch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.start_time = time.perf_counter()
        self.pool, self.order, self.seed = pool, list(order), seed
        self.strategy_cfg, self.train_cfg, self.cache, self.on_epoch = strategy_cfg, train_cfg, cache, on_epoch
        self.device = pick_device(train_cfg.device)
        for name in self.order:
            pool[name]  # an unknown task is an error before anything trains
        self.trained = 0

        # Resume from the longest cached prefix (0 = the initial model).
        state, self.reused = None, 0
        if cache is not None:
            for i in range(len(order), -1, -1):
                state = cache.get(self._key(i))
                if state is not None:
                    self.reused = i
                    break
        if state is None:
            self.learner = initial_learner(pool, strategy_cfg, train_cfg, seed, self.device)
            if cache is not None:
                cache.put(self._key(0), self.learner.snapshot())
        else:
            self.learner = learner_from(state, strategy_cfg, self.device)

    model = property(lambda self: self.learner.model)
    strategy = property(lambda self: self.learner.strategy)
    rows = property(lambda self: self.learner.rows)
    sizes = property(lambda self: self.learner.sizes)

    def _key(self, i: int) -> str:
        return prefix_key(self.pool, self.strategy_cfg, self.train_cfg, self.seed, self.order[:i])

    @property
    def done(self) -> int:
        """How many tasks of the ordering are trained (taken from the cache or trained here)."""
        return len(self.rows) - 1

    @property
    def finished(self) -> bool:
        return self.done == len(self.order)

    def step(self) -> dict[str, float]:
        """Train the next task; return the accuracy row on every pool task after it."""
        i = self.done
        name = self.order[i]
        epoch_cb = (lambda e, n=name: self.on_epoch(n, e)) if self.on_epoch else None
        row = train_next(self.learner, self.pool, self.order[: i + 1], self.train_cfg, self.seed, self.device, epoch_cb)
        self.trained += 1
        if self.cache is not None:
            self.cache.put(self._key(i + 1), self.learner.snapshot())
        return row

    def result(self) -> RunResult:
        """R over the tasks trained so far (all of them once :attr:`finished`)."""
        return RunResult(
            RMatrix.from_rows(self.order, self.rows),
            self.model,
            self.strategy,
            self.rows,
            trained=self.trained,
            reused=self.reused,
            seconds=time.perf_counter() - self.start_time,
            sizes=self.sizes,
        )


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
    already-trained prefix and filled with every new one.
    """
    run = SequenceRun(pool, order, strategy_cfg, train_cfg, seed, cache, on_epoch)
    if on_task is not None:
        for i in range(1, run.done + 1):
            on_task(i, order[i - 1], run.rows[i])
    while not run.finished:
        row = run.step()
        if on_task is not None:
            on_task(run.done, order[run.done - 1], row)
    return run.result()
