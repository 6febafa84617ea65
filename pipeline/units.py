"""The unit of work: one task-training over the prefix tree, and the worker code that runs a batch of them.

A search trial is a root-to-leaf path of units, ``--exhaustive`` is the whole tree, the affinity
graph its first two levels. A unit names its whole prefix (``order``), so any worker can run it:
the state after ``order[:-1]`` comes from the worker's prefix cache or, if missing (evicted, or
trained elsewhere), is rebuilt here — deterministically, so the answer never depends on where or
whether it was cached.

Units whose next steps are compatible (same model shape, strategy and training config) are
trained together as one stacked model when the worker runs in lockstep (pipeline/lockstep.py);
everything else goes one at a time through the same code as ``lll run``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.checkpoint import checkpoint_bytes
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.faults import fault_point
from pipeline.runner import MemoryPrefixCache, PrefixState, initial_learner, learner_from, prefix_key, train_next
from pipeline.strategies import make_strategy
from pipeline.train import TrainingDiverged, pick_device
from tasks.errors import LLLError
from tasks.pool import TaskPool


@dataclass(frozen=True)
class Unit:
    """One task-training: train order[-1] starting from the state after order[:-1]."""

    order: tuple[str, ...]  # the prefix including the task trained now (len >= 1)
    strategy_json: str  # StrategyConfig JSON (λ included)
    train_json: str  # TrainConfig JSON
    seed: int  # the trial's seed; the task seed is seed_from(seed, order) exactly as today
    keep_checkpoint: bool = False  # return checkpoint bytes of the state after this unit


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


@dataclass
class _Plan:
    """A unit being resolved: its configs, how far its prefix is known, what it cost."""

    unit: Unit
    strategy_cfg: StrategyConfig | None = None
    train_cfg: TrainConfig | None = None
    device: torch.device | None = None
    pos: int = -1  # length of the longest prefix whose state is known (-1: not even the initial model)
    reused: int = 0
    trained: int = 0
    seconds: float = 0.0
    error: str | None = None

    def key(self, pool: TaskPool, n: int) -> str:
        return prefix_key(pool, self.strategy_cfg, self.train_cfg, self.unit.seed, list(self.unit.order[:n]))


def train_one(pool: TaskPool, step: Step) -> PrefixState:
    """The one-at-a-time path: exactly what ``lll run`` does for this task."""
    learner = learner_from(step.start, step.strategy_cfg, step.device)
    train_next(learner, pool, step.prefix, step.train_cfg, step.seed, step.device)
    return learner.snapshot()


class UnitRunner:
    """Resolves and trains batches of units against one prefix cache (a worker holds one of these).

    ``train_group`` trains a list of steps and returns, per step, its state or an error string; the
    default trains them one at a time; a lockstep worker passes one that stacks compatible steps.
    """

    def __init__(self, pool: TaskPool, cache: MemoryPrefixCache, train_group=None) -> None:
        self.pool, self.cache = pool, cache
        self.train_group = train_group or self._one_at_a_time

    def _one_at_a_time(self, steps: list[Step]) -> list[PrefixState | str]:
        out: list[PrefixState | str] = []
        for step in steps:
            try:
                out.append(train_one(self.pool, step))
            except (TrainingDiverged, LLLError) as exc:
                out.append(str(exc))
        return out

    def _plan(self, unit: Unit, known: dict[str, PrefixState]) -> _Plan:
        plan = _Plan(unit)
        try:
            if not unit.order:
                raise LLLError("a unit needs at least one task in its order; pass the task to train last")
            for name in unit.order:
                self.pool[name]
            plan.strategy_cfg = StrategyConfig.model_validate_json(unit.strategy_json)
            plan.train_cfg = TrainConfig.model_validate_json(unit.train_json)
            make_strategy(plan.strategy_cfg)  # bad options are this unit's error, before anything trains
            plan.device = pick_device(plan.train_cfg.device)
        except (LLLError, ValueError) as exc:
            plan.error = str(exc).splitlines()[0] if not isinstance(exc, LLLError) else str(exc)
            return plan
        for n in range(len(unit.order), -1, -1):
            key = plan.key(self.pool, n)
            state = known.get(key) or self.cache.get(key)
            if state is not None:
                known[key], plan.pos = state, n
                plan.reused = int(n >= len(unit.order) - 1)
                break
        return plan

    def train(self, units: list[Unit]) -> list[dict[str, Any]]:
        """Train every unit (see TrialWorker.train_units for the result's keys)."""
        for unit in units:
            fault_point("train_unit", task=unit.order[-1] if unit.order else "", order=",".join(unit.order))
        known: dict[str, PrefixState] = {}  # every state this call needs or made, safe from eviction
        plans = [self._plan(u, known) for u in units]
        self.cache.unpin_all()
        while True:
            steps: dict[str, tuple[Step, _Plan]] = {}
            for plan in plans:
                if plan.error is not None or plan.pos >= len(plan.unit.order):
                    continue
                if plan.pos < 0:  # nothing cached, not even the initial model: build it (no training)
                    key = plan.key(self.pool, 0)
                    if key not in known:
                        cfg, seed = plan.strategy_cfg, plan.unit.seed
                        known[key] = initial_learner(self.pool, cfg, plan.train_cfg, seed, plan.device).snapshot()
                        self.cache.put(key, known[key])
                    plan.pos = 0
                key = plan.key(self.pool, plan.pos + 1)
                if key in known or key in steps:
                    continue
                prefix = list(plan.unit.order[: plan.pos + 1])
                start = known[plan.key(self.pool, plan.pos)]
                step = Step(key, prefix, start, plan.strategy_cfg, plan.train_cfg, plan.unit.seed, plan.device)
                steps[key] = (step, plan)
            if not steps and all(p.error is not None or p.pos >= len(p.unit.order) for p in plans):
                break
            self._run_steps(list(steps.values()), known, plans)
        return [self._result(plan, known) for plan in plans]

    def _run_steps(self, steps: list[tuple[Step, _Plan]], known: dict[str, PrefixState], plans: list[_Plan]) -> None:
        t0 = time.perf_counter()
        outcomes = self.train_group([s for s, _ in steps]) if steps else []
        share = (time.perf_counter() - t0) / max(1, len(steps))
        failed: dict[str, str] = {}
        for (step, owner), outcome in zip(steps, outcomes, strict=True):
            owner.trained += 1
            owner.seconds += share
            if isinstance(outcome, str):
                failed[step.key] = outcome
            else:
                known[step.key] = outcome
                self.cache.put(step.key, outcome)
        for plan in plans:
            if plan.error is not None or plan.pos >= len(plan.unit.order):
                continue
            key = plan.key(self.pool, plan.pos + 1)
            if key in known:
                plan.pos += 1
            elif key in failed:
                plan.error = failed[key]

    def _result(self, plan: _Plan, known: dict[str, PrefixState]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": [],
            "row": None,
            "sizes": [],
            "lam": None,
            "trained": plan.trained,
            "reused": plan.reused,
            "seconds": plan.seconds,
            "checkpoint": None,
            "error": plan.error,
        }
        if plan.error is not None:
            return out
        key = plan.key(self.pool, len(plan.unit.order))
        state = known[key]
        self.cache.put(key, state, pin=True)
        out.update(rows=list(state.rows), row=state.rows[-1], sizes=list(state.sizes), lam=state.strategy["lam"])
        if plan.unit.keep_checkpoint:
            learner = learner_from(state, plan.strategy_cfg, torch.device("cpu"))
            out["checkpoint"] = checkpoint_bytes(learner.model, learner.strategy, {"after": len(plan.unit.order)})
        return out
