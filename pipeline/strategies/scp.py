"""Sliced Cramér Preservation (Kolouri et al., 2020).

Guard the *distribution* of the network's outputs rather than its likelihood: project the
outputs f(x) ∈ R^C on random unit directions ξ_l (slices) and measure how much each weight moves
the projected outputs. The guard is the squared sensitivity, averaged over slices and inputs:

    b_i = mean_x mean_l (∂⟨ξ_l, f(x)⟩ / ∂θ_i)²      loss = CE + λ Σ_i b_i (θ_i − θ*_i)²   (no ½)

f is the task's head (logits). Each input gets its own ``slices`` directions, drawn uniformly on
the sphere with the seeded global RNG. The paper differentiates the projection of the *mean*
output over a batch, b_i = mean_l (∂⟨ξ_l, mean_x f(x)⟩ / ∂θ_i)²; ``mean_first: true`` does that.

Options: ``samples`` (inputs used, default 500), ``slices`` (per input, default 4),
``mean_first`` (default false).
"""

import torch
import torch.nn.functional as F

from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import QuadraticLockstep, QuadraticPenalty, per_sample_grad_stat


class SCP(QuadraticPenalty):
    name = "scp"
    lockstep = QuadraticLockstep
    default_lam = 3.0
    lam_range = (0.1, 100.0)

    def __init__(self, lam: float | None = None, samples: int = 500, slices: int = 4, mean_first: bool = False) -> None:
        super().__init__(lam)
        if samples <= 0 or slices <= 0:
            raise ValueError("samples and slices must be positive")
        self.samples, self.slices, self.mean_first = int(samples), int(slices), bool(mean_first)

    def importance(self, model, task):
        device = next(model.parameters()).device
        x = task.x_train[: self.samples].to(device)
        with torch.no_grad():
            width = model(x[:1], task.name).shape[1]
        n_dirs = self.slices if self.mean_first else len(x) * self.slices
        xi = F.normalize(torch.randn(n_dirs, width, device=device), dim=1)
        if not self.mean_first:
            xs = x.repeat_interleave(self.slices, dim=0)
            return per_sample_grad_stat(
                model, task.name, xs, xi, lambda out, direction: (out * direction).sum(), torch.square
            )
        params = list(trainable(model).values())
        names = list(trainable(model))
        mean_out = model(x, task.name).mean(0)
        total = [torch.zeros_like(p) for p in params]
        for d in xi:
            grads = torch.autograd.grad(mean_out @ d, params, retain_graph=True, allow_unused=True)
            for t, g in zip(total, grads, strict=True):
                if g is not None:
                    t += g.pow(2)
        return {n: t / self.slices for n, t in zip(names, total, strict=True)}
