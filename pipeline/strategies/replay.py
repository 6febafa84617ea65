"""Experience replay with a reservoir memory (Chaudhry et al., 2019, "Tiny Episodic Memories").

A fixed-size uniform sample of every example seen so far; each step adds the loss on a memory
batch to the current task's loss:

    loss = CE(current batch) + λ · CE(memory batch)

Options: ``memory_size`` (total examples kept, default 500), ``batch_size`` (memory batch,
default: the training batch size).
"""

from pipeline.strategies.memory import ReservoirMemory, WithMemory, mixed_task_loss


class Replay(WithMemory):
    name = "replay"
    default_lam = 1.0  # tuned on mixed-mnist (README, "Default λ")
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
