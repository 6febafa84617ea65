"""Experience replay with a reservoir memory (Chaudhry et al., 2019, "Tiny Episodic Memories").

A fixed-size uniform sample of every example seen so far; each step adds the loss on a memory
batch to the current task's loss:

    loss = CE(current batch) + λ · CE(memory batch)

Options: ``memory_size`` (total examples kept, default 500), ``batch_size`` (memory batch,
default: the training batch size).
"""

from pipeline.strategies.base import LockstepHooks
from pipeline.strategies.memory import ReservoirMemory, WithMemory, member_batch, mixed_task_loss


class ReplayLockstep(LockstepHooks):
    def loss(self, x, y):
        st, batches = self.st, []
        for m, gen in zip(st.members, st.gens, strict=True):
            if len(m.memory) == 0:
                batches.append(None)
                continue
            mx, my, mt = m.memory.sample(m.batch_size or y.shape[1], generator=gen)
            batches.append(member_batch(st, mx, my, m.memory.names, mt, 1.0 / max(1, len(my))))
        mem = st.memory_loss(batches)
        base = super().loss(x, y)
        return base if mem is None else base + st.lam * mem


class Replay(WithMemory):
    name = "replay"
    lockstep = ReplayLockstep
    default_lam = 1.0  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (0.1, 10.0)

    def __init__(self, lam: float | None = None, memory_size: int = 500, batch_size: int | None = None) -> None:
        super().__init__(lam)
        if memory_size <= 0:
            raise ValueError("memory_size must be positive")
        self.memory = ReservoirMemory(int(memory_size))
        self.batch_size = batch_size

    def loss(self, model, x, y):
        base = super().loss(model, x, y)
        if len(self.memory) == 0:
            return base
        mx, my, mt = self.memory.sample(self.batch_size or len(y))
        return base + self.lam * mixed_task_loss(model, mx, my, mt, self.memory.names)
