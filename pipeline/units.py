"""The unit of work, and the one training path: every task-training in lll goes through :class:`UnitRunner`.

A search trial is a root-to-leaf path of units, ``--exhaustive`` is the whole tree, the affinity
graph its first two levels, and ``lll run`` (``run_ordering``) one path trained unit by unit. A unit
names its whole prefix (``order``), so any worker can run it: the state after ``order[:-1]`` comes
from the prefix cache or, if missing (evicted, or trained elsewhere), is rebuilt here —
deterministically, so the answer never depends on where or whether it was cached.

How a step is trained is decided in one place, :func:`lockstep_key`: a step whose strategy has a
stacked loop and whose model is a plain MLP trains in lockstep (pipeline/lockstep.py) — with
whatever compatible steps are ready, up to the population K, or alone (K = 1) — and everything
else one model at a time. The decision depends on the step only, never on the worker or on K, and
a member's lockstep result does not depend on K, so ``lll run``, a search with any
``--population`` and its exported rerun give the same R bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.checkpoint import checkpoint_bytes
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.faults import fault_point
from pipeline.lockstep import train_lockstep
from pipeline.prefix import (
    EpochCallback,
    MemoryPrefixCache,
    PrefixCache,
    PrefixState,
    Step,
    initial_learner,
    learner_from,
    prefix_key,
    train_one,
)
from pipeline.strategies import make_strategy, strategy_class
from pipeline.train import pick_device
from tasks.errors import LLLError
from tasks.pool import TaskPool, stable_hash


@dataclass(frozen=True)
class Unit:
    """One task-training: train order[-1] starting from the state after order[:-1]."""

    order: tuple[str, ...]  # the prefix including the task trained now (len >= 1)
    strategy_json: str  # StrategyConfig JSON (λ included)
    train_json: str  # TrainConfig JSON
    seed: int  # the trial's seed; the task seed is seed_from(seed, order) exactly as today
    keep_checkpoint: bool = False  # return checkpoint bytes of the state after this unit


def lockstep_key(pool: TaskPool, step: Step) -> str | None:
    """THE decision between lockstep and one at a time. Steps with the same key may train together:
    same model shape, strategy (and options) and training config; λ, seed and task may differ.
    None: this step trains one at a time (its strategy has no stacked loop, or the model is not a
    plain MLP with equal heads). A strategy that turns out to swap its model in ``before_task`` is
    trained one at a time by train_lockstep itself."""
    cls = strategy_class(step.strategy_cfg.name)
    spec = step.start.model_spec
    if vars(cls).get("lockstep") is None or spec.get("kind") != "mlp" or "growing" in spec:
        return None
    if not spec["shared_head"] and len(set(spec["heads"].values())) > 1:
        return None
    task = pool[step.prefix[-1]]
    train = step.train_cfg.model_dump(mode="json")
    shape = (len(task.y_train), list(task.input_shape))
    return stable_hash(step.strategy_cfg.name, step.strategy_cfg.options, train, spec, shape, str(step.device))


class StepTrainer:
    """Trains a list of steps: those :func:`lockstep_key` groups stack up to ``k`` at a time, the
    rest one at a time; per step its new state or why it failed (an LLLError).

    A stack that runs out of memory is split in two and retried, and K shrinks for the rest of the
    trainer's life; ``note`` says so. (K changes speed, never a result.)"""

    def __init__(self, pool: TaskPool, k: int = 1) -> None:
        self.pool, self.k, self.note = pool, max(1, int(k)), ""

    def __call__(self, steps: list[Step], on_epoch: EpochCallback | None = None) -> list[PrefixState | LLLError]:
        out: list[PrefixState | LLLError | None] = [None] * len(steps)
        groups: dict[str, list[int]] = {}
        for i, step in enumerate(steps):
            key = lockstep_key(self.pool, step)
            if key is None:
                out[i] = self._one(step, on_epoch)
            else:
                groups.setdefault(key, []).append(i)
        for idxs in groups.values():
            todo = [idxs[j : j + self.k] for j in range(0, len(idxs), self.k)]
            while todo:
                chunk = todo.pop(0)
                try:
                    results = train_lockstep(self.pool, [steps[i] for i in chunk], on_epoch)
                except (MemoryError, RuntimeError) as exc:
                    if len(chunk) == 1 or not (isinstance(exc, MemoryError) or _out_of_memory(exc)):
                        raise
                    half = len(chunk) // 2
                    self.k = min(self.k, half)
                    self.note = f"population reduced to {self.k}: K={len(chunk)} ran out of memory"
                    todo[:0] = [chunk[:half], chunk[half:]]
                    continue
                except LLLError as exc:
                    results = [exc] * len(chunk)
                for i, r in zip(chunk, results, strict=True):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _one(self, step: Step, on_epoch: EpochCallback | None) -> PrefixState | LLLError:
        try:
            return train_one(self.pool, step, on_epoch)
        except LLLError as exc:  # TrainingDiverged included
            return exc


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA says "out of memory"; the CPU allocator says "can't allocate memory"."""
    text = str(exc)
    return "out of memory" in text or "can't allocate memory" in text


@dataclass
class Outcome:
    """A unit after :meth:`UnitRunner.run`: its configs, how far its prefix is known, what it cost,
    and its final state (or why it failed)."""

    unit: Unit
    strategy_cfg: StrategyConfig | None = None
    train_cfg: TrainConfig | None = None
    device: torch.device | None = None
    pos: int = -1  # length of the longest prefix whose state is known (-1: not even the initial model)
    reused: int = 0
    trained: int = 0
    seconds: float = 0.0
    error: LLLError | None = None
    state: PrefixState | None = None  # the state after the whole order, once trained

    @property
    def open(self) -> bool:
        return self.error is None and self.pos < len(self.unit.order)

    def key(self, pool: TaskPool, n: int) -> str:
        return prefix_key(pool, self.strategy_cfg, self.train_cfg, self.unit.seed, list(self.unit.order[:n]))


class UnitRunner:
    """Resolves and trains batches of units against one prefix cache (a worker holds one of these,
    ``lll run`` another). ``population`` is how many compatible steps may stack at once (K)."""

    def __init__(self, pool: TaskPool, cache: PrefixCache | None = None, population: int = 1) -> None:
        self.pool = pool
        self.cache = cache if cache is not None else MemoryPrefixCache(0)
        self.trainer = StepTrainer(pool, population)

    def lookup(self, unit: Unit, known: dict[str, PrefixState] | None = None) -> Outcome:
        """Check the unit and find the longest prefix of its order whose state is known (``known``,
        then the cache): the one cache lookup."""
        plan = Outcome(unit)
        known = {} if known is None else known
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
            plan.error = exc if isinstance(exc, LLLError) else LLLError(str(exc).splitlines()[0])
            return plan
        for n in range(len(unit.order), -1, -1):
            key = plan.key(self.pool, n)
            state = known.get(key) or self.cache.get(key)
            if state is not None:
                known[key], plan.pos = state, n
                plan.reused = int(n >= len(unit.order) - 1)
                if n == len(unit.order):
                    plan.state = state
                break
        return plan

    def run(self, units: list[Unit], on_epoch: Callable[[Step, int], None] | None = None) -> list[Outcome]:
        """Train every unit; each outcome holds its final state or its error. A unit never raises."""
        for unit in units:
            fault_point("train_unit", task=unit.order[-1] if unit.order else "", order=",".join(unit.order))
        known: dict[str, PrefixState] = {}  # every state this call needs or made, safe from eviction
        plans = [self.lookup(u, known) for u in units]
        if isinstance(self.cache, MemoryPrefixCache):
            self.cache.unpin_all()
        while any(p.open for p in plans):
            steps: dict[str, tuple[Step, Outcome]] = {}
            for plan in plans:
                if not plan.open:
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
            self._run_steps(list(steps.values()), known, plans, on_epoch)
        for plan in plans:
            if plan.error is None:
                key = plan.key(self.pool, len(plan.unit.order))
                plan.state = known[key]
                if isinstance(self.cache, MemoryPrefixCache):  # kept past its budget until the next call
                    self.cache.put(key, plan.state, pin=True)
                else:
                    self.cache.put(key, plan.state)
        return plans

    def _run_steps(
        self,
        steps: list[tuple[Step, Outcome]],
        known: dict[str, PrefixState],
        plans: list[Outcome],
        on_epoch: EpochCallback | None,
    ) -> None:
        t0 = time.perf_counter()
        outcomes = self.trainer([s for s, _ in steps], on_epoch) if steps else []
        share = (time.perf_counter() - t0) / max(1, len(steps))
        failed: dict[str, LLLError] = {}
        for (step, owner), outcome in zip(steps, outcomes, strict=True):
            owner.trained += 1
            owner.seconds += share
            if isinstance(outcome, LLLError):
                failed[step.key] = outcome
            else:
                known[step.key] = outcome
                self.cache.put(step.key, outcome)
        for plan in plans:
            if not plan.open:
                continue
            key = plan.key(self.pool, plan.pos + 1)
            if key in known:
                plan.pos += 1
            elif key in failed:
                plan.error = failed[key]

    def train(self, units: list[Unit]) -> list[dict[str, Any]]:
        """Train every unit (see TrialWorker.train_units for the result's keys)."""
        return [self._result(plan) for plan in self.run(units)]

    def _result(self, plan: Outcome) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": [],
            "row": None,
            "sizes": [],
            "lam": None,
            "trained": plan.trained,
            "reused": plan.reused,
            "seconds": plan.seconds,
            "checkpoint": None,
            "error": None if plan.error is None else str(plan.error),
        }
        if plan.error is not None:
            return out
        state = plan.state
        out.update(rows=list(state.rows), row=state.rows[-1], sizes=list(state.sizes), lam=state.strategy["lam"])
        if plan.unit.keep_checkpoint:
            learner = learner_from(state, plan.strategy_cfg, torch.device("cpu"))
            out["checkpoint"] = checkpoint_bytes(learner.model, learner.strategy, {"after": len(plan.unit.order)})
        return out
