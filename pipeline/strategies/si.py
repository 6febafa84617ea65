"""Synaptic Intelligence (Zenke et al., 2017).

While a task trains, each weight's contribution to the drop in loss is summed along the
optimisation path, ω_i = Σ_steps −g_i Δθ_i, where g is the gradient of the task's own loss (without
the penalty, like the reference code's ``unreg_grads``) and Δθ the step actually taken (momentum,
clipping included). After the task the guard is
b_i = ω_i / (Δ_i² + ξ), with Δ_i the weight's total change over the task, and guards add up
over tasks.

    loss = CE + λ Σ_i b_i (θ_i − θ*_i)²      (λ is the paper's c, no ½)

Options: ``xi`` (damping ξ, default 0.1).
"""

from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import PathIntegralLockstep, PathIntegralPenalty


class SI(PathIntegralPenalty):
    name = "si"
    lockstep = PathIntegralLockstep
    default_lam = 100.0  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (3.0, 3000.0)

    def __init__(self, lam: float | None = None, xi: float = 0.1) -> None:
        super().__init__(lam)
        self.xi = float(xi)

    def importance(self, model, task):
        out = {}
        for n, p in trainable(model).items():
            delta = p.detach() - self._start[n]
            out[n] = (self._omega[n] / (delta.pow(2) + self.xi)).clamp_(min=0)
        return out
