"""Joint (multi-task) training on every task seen so far: the upper bound, not a continual method.

It keeps all the data. Each step of task t sees the current batch and one batch of the same size
from each earlier task, averaged with equal weight, which is multi-task training on tasks 1..t.
No λ.

By default task t starts from the model after task t−1 (warm start). ``restart=true`` starts every
task from the same random initialisation instead, so row t of R is the offline multi-task model of
tasks 1..t: the textbook upper bound. They differ where the warm start traps the network — on
babi-gen the two-hop qa15 trained last reaches 51–91 % warm-started (the attention learned for the
one-hop tasks keeps re-reading the first fact) and 98–100 % restarted (bench/babi_forgetting.py).
"""

from typing import Any

import torch
from torch import nn

from pipeline.strategies.base import LockstepHooks
from pipeline.strategies.memory import EpisodicMemory, WithMemory, member_batch
from tasks.errors import LLLError


class JointLockstep(LockstepHooks):
    """Per member: (CE(batch) + Σ_j CE(batch of earlier task j)) / (1 + #earlier tasks)."""

    def loss(self, x, y):
        st, batches, count = self.st, [], []
        for m, gen in zip(st.members, st.gens, strict=True):
            names = m.memory.names()
            count.append(1 + len(names))
            parts = []
            for name in names:
                mx, my = m.memory.sample(name, y.shape[1], generator=gen)
                t = torch.zeros(len(my), dtype=torch.long, device=my.device)
                parts.append(member_batch(st, mx, my, [name], t, 1.0 / max(1, len(my))))
            batches.append(tuple(torch.cat(c) for c in zip(*parts, strict=True)) if parts else None)
        base = super().loss(x, y)
        mem = st.memory_loss(batches)
        total = base if mem is None else base + mem
        return total / torch.tensor(count, dtype=total.dtype, device=total.device)


class Joint(WithMemory):
    name = "joint"
    lockstep = JointLockstep

    def __init__(self, lam: float | None = None, restart: bool = False) -> None:
        super().__init__(lam)
        self.memory = EpisodicMemory(per_task=None)
        if not isinstance(restart, bool):
            raise LLLError(f"joint's option restart must be true or false, got {restart!r}; e.g. joint:restart=true")
        self.restart = restart
        self.init: dict[str, torch.Tensor] | None = None  # the weights before the first task (restart)

    def before_task(self, model: nn.Module, task) -> nn.Module | None:
        """restart: keep the first task's starting weights, and put them back before every later task
        (in place, so lockstep's stacked members restart too). A tensor whose shape changed since
        (a growing head's new units) keeps its fresh initialisation."""
        if self.restart:
            state = model.state_dict()
            if self.init is None:
                self.init = {k: v.detach().clone() for k, v in state.items()}
            else:
                with torch.no_grad():
                    for k, v in state.items():
                        if k in self.init and self.init[k].shape == v.shape:
                            v.copy_(self.init[k].to(v.device))
        return super().before_task(model, task)

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        if self.restart and self.init is not None:
            state["init"] = {k: v.cpu() for k, v in self.init.items()}
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.init = state.get("init")

    def loss(self, model, x, y):
        losses = [super().loss(model, x, y)]
        for name in self.memory.names():
            mx, my = self.memory.sample(name, len(y))
            losses.append(torch.nn.functional.cross_entropy(model(mx, name), my))
        return torch.stack(losses).mean()
