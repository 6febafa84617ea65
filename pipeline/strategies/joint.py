"""Joint (multi-task) training on every task seen so far: the upper bound, not a continual method.

It keeps all the data. Each step of task t sees the current batch and one batch of the same size
from each earlier task, averaged with equal weight, which is multi-task training on tasks 1..t.
No λ.
"""

import torch

from pipeline.strategies.base import LockstepHooks
from pipeline.strategies.memory import EpisodicMemory, WithMemory, member_batch


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

    def __init__(self, lam: float | None = None) -> None:
        super().__init__(lam)
        self.memory = EpisodicMemory(per_task=None)

    def loss(self, model, x, y):
        losses = [super().loss(model, x, y)]
        for name in self.memory.names():
            mx, my = self.memory.sample(name, len(y))
            losses.append(torch.nn.functional.cross_entropy(model(mx, name), my))
        return torch.stack(losses).mean()
