"""A prefix state, the cache that holds it, and one task-training that moves it forward.

Determinism and the prefix cache: task i is trained with a seed derived from (seed, the ordering's
first i tasks), so the state after a prefix never depends on what comes after it. That state
(model, strategy state, and the accuracy row measured on every pool task) is therefore a pure
function of a key (:func:`prefix_key`), and orderings that share a prefix can share its training.

Everything that trains (``lll run``, a worker's units, lockstep members) moves a :class:`Learner`
from one prefix state to the next with these functions; pipeline/units.py decides which steps are
trained together (lockstep) and which one at a time (:func:`train_one`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.models import build_model, model_for_pool
from pipeline.strategies import make_strategy
from pipeline.strategies.base import Strategy, tensor_bytes
from pipeline.train import evaluate, train_task
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
    """Any cache of prefix states (a user's may keep them on disk); :class:`MemoryPrefixCache` is lll's."""

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


def prefix_key(
    pool: TaskPool, strategy_cfg: StrategyConfig, train_cfg: TrainConfig, seed: int, prefix: list[str]
) -> str:
    """Everything that determines the state after ``prefix`` (device excluded: it is where, not what;
    the population K excluded: a state does not depend on it, see tests/test_lockstep.py)."""
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
    (one at a time, lockstep members) trains through these."""

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


@dataclass
class Step:
    """One task-training to run now: the state after ``prefix[:-1]`` (``start``) → after ``prefix``."""

    key: str
    prefix: list[str]
    start: PrefixState
    strategy_cfg: StrategyConfig
    train_cfg: TrainConfig
    seed: int
    device: torch.device


#: Called after each epoch of a step: (the step, epochs done).
EpochCallback = Callable[[Step, int], None]


def train_one(pool: TaskPool, step: Step, on_epoch: EpochCallback | None = None) -> PrefixState:
    """One model at a time: train ``step.prefix[-1]`` on top of ``step.start``; the task seed comes
    from (seed, prefix), so the result depends on nothing else."""
    learner = learner_from(step.start, step.strategy_cfg, step.device)
    task = pool[step.prefix[-1]]
    epoch_cb = (lambda e: on_epoch(step, e)) if on_epoch is not None else None
    learner.model = train_task(
        learner.model,
        task,
        learner.strategy,
        step.train_cfg,
        seed_from(step.seed, list(step.prefix)),
        step.device,
        epoch_cb,
    )
    record_task(learner, pool, step.device)
    return learner.snapshot()
