"""All continual-learning strategies, one file each, behind the interface in ``base.py``.

A new strategy is one new module in this folder defining a ``Strategy`` subclass with a unique
``name``: it is discovered automatically, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from pipeline.config import StrategyConfig
from pipeline.strategies.base import Strategy
from tasks.errors import LLLError

# The registry's order (STRATEGIES), so the order `lll run --help` and every error list them in
# (search/cli/choices.py); discovered strategies not listed here follow, by name.
PREFERRED_ORDER = [
    "naive",
    "joint",
    "l2",
    "ewc",
    "online-ewc",
    "si",
    "mas",
    "rwalk",
    "scp",
    "gem",
    "agem",
    "lwf",
    "replay",
    "icarl",
    "generative-replay",
    "pnn",
    "packnet",
    "net2net",
    "expert-gate",
]


def _discover() -> dict[str, type[Strategy]]:
    found: dict[str, type[Strategy]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Strategy)
                and obj.__module__ == module.__name__
                and vars(obj).get("name")
            ):
                if obj.name in found and found[obj.name] is not obj:
                    raise RuntimeError(f"two strategies are named {obj.name!r}")
                found[obj.name] = obj
    ranked = sorted(found, key=lambda n: (PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER else 99, n))
    return {n: found[n] for n in ranked}


STRATEGIES: dict[str, type[Strategy]] = _discover()


def strategy_class(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise LLLError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def make_strategy(cfg: StrategyConfig) -> Strategy:
    """Instantiate a strategy from its config; unknown or bad options are one-line errors."""
    cls = strategy_class(cfg.name)
    if cfg.lam is not None and cfg.lam < 0:
        raise LLLError(f"λ must be ≥ 0, got {cfg.lam}; pass a non-negative --lambda")
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "lam")]
    unknown = sorted(set(cfg.options) - set(allowed))
    if unknown:
        hint = ", ".join(allowed) or "none"
        raise LLLError(f"strategy {cfg.name!r} has no option {', '.join(unknown)}; its options are: {hint}")
    try:
        return cls(lam=cfg.lam, **cfg.options)
    except (TypeError, ValueError) as exc:
        raise LLLError(f"bad option for strategy {cfg.name!r}: {exc}") from None
