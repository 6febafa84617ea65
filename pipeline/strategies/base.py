"""The one interface every continual-learning strategy implements.

The training loop calls these hooks and knows nothing else about any strategy:

    model = strategy.before_task(model, task) or model   # snapshot θ^b, grow the model, ...
    for each batch:
        loss = strategy.loss(model, x, y)                 # task loss + λ·penalty
        loss.backward(); strategy.after_backward(model)   # e.g. GEM / A-GEM gradient projection
        optimizer.step(); strategy.after_step(model)      # e.g. SI's path integral
    strategy.after_task(model, task)                      # e.g. Fisher / importance, memory
    strategy.predictor(model, task)(x)                    # who answers for task j at test time

Every random draw a strategy makes uses torch's global RNG, which the loop seeds per task from
(seed, ordering prefix): that is what makes runs bit-for-bit reproducible and prefix-cacheable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tasks.pool import Task


class Strategy:
    name: ClassVar[str] = ""  # set by every concrete strategy
    #: Default λ when the config gives none; None means the strategy has no λ.
    default_lam: ClassVar[float | None] = None
    #: A sensible log-uniform search range for λ (used by `lll search`).
    lam_range: ClassVar[tuple[float, float] | None] = None
    #: The stacked inner loop for lockstep training (pipeline/lockstep.py); None: one model at a
    #: time. Read from the class itself (``vars``), never inherited, so a subclass that changes the
    #: loop must opt in again.
    lockstep: ClassVar[type[LockstepHooks] | None] = None

    def __init__(self, lam: float | None = None) -> None:
        self.lam = self.default_lam if lam is None else float(lam)
        self.task: str | None = None  # the task being trained
        self.seen: list[str] = []  # tasks finished, in order

    # ---- hooks -------------------------------------------------------------------------------
    def before_task(self, model: nn.Module, task: Task) -> nn.Module | None:
        """Called before training ``task``; may return a different model to train (expansion)."""
        self.task = task.name
        return None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x, self.task), y)

    def after_backward(self, model: nn.Module) -> None:
        """Gradients are in ``p.grad``; a strategy may rewrite them here."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimiser step."""

    def after_task(self, model: nn.Module, task: Task) -> None:
        self.seen.append(task.name)

    def predictor(self, model: nn.Module, task: Task) -> Callable[[torch.Tensor], torch.Tensor]:
        """What answers for ``task`` at test time (a PNN column, a PackNet mask, ...)."""
        return lambda x: model(x, task.name)

    # ---- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Subclasses return their own state here (tensors, numbers, lists, dicts, strings)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-sequence; loadable with ``torch.load(weights_only=True)``."""
        return {"name": self.name, "lam": self.lam, "seen": list(self.seen), "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = state["lam"]
        self.seen = list(state["seen"])
        self.load_extra_state(state["extra"])

    def stored_bytes(self) -> int:
        """Bytes of state kept beyond the model (memories, Fisher, anchors, ...)."""
        return tensor_bytes(self.extra_state())

    def size_report(self, model: nn.Module) -> dict[str, float]:
        """Strategy-specific size numbers after a task (free weight share, parameters grown, ...):
        the runner adds them to the task's ``sizes`` entry next to ``params`` and ``stored_bytes``,
        so `lll run` prints them and MLflow records them per task like the others."""
        return {}


class LockstepHooks:
    """A strategy's inner loop for K members trained as one stacked model (pipeline/lockstep.py).

    Only the inner loop is stacked: ``before_task``/``after_task`` (Fisher, importance, memories,
    anchors) still run per member on an ordinary model with the real Strategy. ``st`` is the
    :class:`pipeline.lockstep.Stack`: stacked parameters ``st.params`` (name → [K, ...]), the member
    strategies ``st.members``, per-member λ ``st.lam`` [K] and RNG ``st.gens``, and helpers to
    stack/unstack per-member state and run the stacked model. The default is plain cross-entropy.
    """

    def __init__(self, st: Any) -> None:
        self.st = st

    def begin(self) -> None:
        """After every member's ``before_task``: stack the state the inner loop needs."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member losses [K] for member batches x [K, B, ...], y [K, B] (they are summed)."""
        return self.st.ce(self.st.forward(x), y)

    def after_backward(self) -> None:
        """Stacked gradients are in ``p.grad``; rewrite them per member here."""

    def after_step(self) -> None:
        """After each optimiser step."""

    def end(self) -> None:
        """Before every member's ``after_task``: write the stacked state back into each member."""


def tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
