"""The search space: ordering × strategy × λ, and how one Optuna trial maps to a candidate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from pipeline.config import StrategyConfig
from pipeline.strategies import strategy_class
from search.orders.lehmer import code_to_order, order_to_code, param_names
from tasks.errors import LLLError


@dataclass(frozen=True)
class Candidate:
    """What one trial evaluates."""

    order: tuple[str, ...]
    strategy: StrategyConfig

    def params(self) -> dict[str, Any]:
        return {"order": ",".join(self.order), "strategy": self.strategy.name, "lambda": self.strategy.lam}


@dataclass
class SearchSpace:
    """``tasks`` is the reference order for the Lehmer code; ``fixed_lambda`` freezes λ (one strategy)."""

    tasks: list[str]
    strategies: list[str]
    fixed_lambda: float | None = None
    fixed_order: list[str] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.strategies:
            raise LLLError("--strategies is empty; name at least one strategy, e.g. --strategies ewc,si")
        for s in self.strategies:
            strategy_class(s)  # unknown names fail here, before anything starts
        if len(set(self.strategies)) != len(self.strategies):
            raise LLLError("a strategy appears twice in --strategies; list each once")
        if self.fixed_lambda is not None and self.fixed_lambda < 0:
            raise LLLError(f"--lambda must be ≥ 0, got {self.fixed_lambda}")

    def lam_range(self, name: str) -> tuple[float, float] | None:
        cls = strategy_class(name)
        if cls.default_lam is None or self.fixed_lambda is not None or cls.lam_range is None:
            return None
        lo, hi = cls.lam_range
        return (max(lo, 1e-6), hi)

    def suggest(self, trial: optuna.Trial) -> Candidate:
        """Ask the trial for a candidate (define-by-run: λ's name depends on the strategy)."""
        if self.fixed_order is not None:
            order = list(self.fixed_order)
        else:
            digits = [
                trial.suggest_int(p, 0, len(self.tasks) - 1 - i) for i, p in enumerate(param_names(len(self.tasks)))
            ]
            order = code_to_order(digits, self.tasks)
        name = (
            self.strategies[0] if len(self.strategies) == 1 else trial.suggest_categorical("strategy", self.strategies)
        )
        lam = self.fixed_lambda
        rng = self.lam_range(name)
        if rng is not None:
            lam = trial.suggest_float(f"lambda_{name}", rng[0], rng[1], log=True)
        cfg = StrategyConfig(name=name, lam=lam, options=self.options.get(name, {}))
        return Candidate(tuple(order), cfg)

    def trial_params(self, order: list[str], strategy: str, lam: float | None) -> dict[str, Any]:
        """The Optuna params that make :meth:`suggest` return this candidate (for enqueue_trial)."""
        params: dict[str, Any] = {}
        if self.fixed_order is None:
            params.update(dict(zip(param_names(len(self.tasks)), order_to_code(order, self.tasks), strict=True)))
        if len(self.strategies) > 1:
            params["strategy"] = strategy
        rng = self.lam_range(strategy)
        if rng is not None:
            lam = strategy_class(strategy).default_lam if lam is None else lam
            params[f"lambda_{strategy}"] = min(max(float(lam), rng[0]), rng[1])
        return params

    def size(self) -> float:
        """Number of distinct (ordering, strategy) points, λ aside."""
        return (
            math.factorial(len(self.tasks)) * len(self.strategies) if self.fixed_order is None else len(self.strategies)
        )
