"""Averaged GEM (Chaudhry et al., 2019): one constraint instead of one per task.

The reference gradient g_ref is the gradient on a batch drawn from the memory of all past tasks;
when the proposed gradient conflicts with it (g·g_ref < 0) it is projected:

    g̃ = g − (g·g_ref / g_ref·g_ref) g_ref

No λ. Options: ``memory_size`` (per task, default 256), ``sample_size`` (reference batch, 256).
"""

from pipeline.strategies.memory import EpisodicMemory, WithMemory, mixed_task_loss
from pipeline.strategies.projection import flat_grad, grad_of, set_flat_grad


class AGEM(WithMemory):
    name = "agem"

    def __init__(self, lam: float | None = None, memory_size: int = 256, sample_size: int = 256) -> None:
        super().__init__(lam)
        self.memory = EpisodicMemory(int(memory_size))
        self.sample_size = int(sample_size)

    def after_backward(self, model):
        if not self.memory.data:
            return
        g = flat_grad(model)
        x, y, t = self.memory.sample_all(self.sample_size)
        ref = grad_of(mixed_task_loss(model, x, y, t, self.memory.names()), model)
        dot = g @ ref
        if dot < 0:
            set_flat_grad(model, g - dot / (ref @ ref).clamp_min(1e-12) * ref)
