"""Averaged GEM (Chaudhry et al., 2019): one constraint instead of one per task.

The reference gradient g_ref is the gradient on a batch drawn from the memory of all past tasks;
when the proposed gradient conflicts with it (g·g_ref < 0) it is projected:

    g̃ = g − (g·g_ref / g_ref·g_ref) g_ref

No λ. Options: ``memory_size`` (per task, default 256), ``sample_size`` (reference batch, 256).
"""

import torch

from pipeline.strategies.base import LockstepHooks
from pipeline.strategies.memory import EpisodicMemory, WithMemory, member_batch, mixed_task_loss
from pipeline.strategies.projection import flat_grad, grad_of, set_flat_grad


class AGEMLockstep(LockstepHooks):
    """The projection per member: its own flat gradient, its own memory's reference gradient."""

    def after_backward(self):
        st, batches = self.st, []
        for m, gen in zip(st.members, st.gens, strict=True):
            if not m.memory.data:
                batches.append(None)
                continue
            x, y, t = m.memory.sample_all(m.sample_size, generator=gen)
            batches.append(member_batch(st, x, y, m.memory.names(), t, 1.0 / max(1, len(y))))
        ref_loss = st.memory_loss(batches)
        if ref_loss is None:
            return
        g = st.flat_grad()
        params = list(st.params.values())
        grads = torch.autograd.grad(ref_loss.sum(), params, allow_unused=True)
        ref = torch.cat(
            [
                (r if r is not None else torch.zeros_like(p)).reshape(st.K, -1)
                for r, p in zip(grads, params, strict=True)
            ],
            1,
        )
        dot = (g * ref).sum(1)
        has = torch.tensor([b is not None for b in batches], device=g.device)
        project = has & (dot < 0)
        if bool(project.any()):
            new = g - (dot / (ref * ref).sum(1).clamp_min(1e-12)).unsqueeze(1) * ref
            st.set_flat_grad(torch.where(project.unsqueeze(1), new, g))


class AGEM(WithMemory):
    name = "agem"
    lockstep = AGEMLockstep

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
