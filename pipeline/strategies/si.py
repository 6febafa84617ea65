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

import torch

from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import QuadraticPenalty


class SI(QuadraticPenalty):
    name = "si"
    default_lam = 100.0  # tuned on mixed-mnist (README, "Default λ")
    lam_range = (3.0, 3000.0)

    def __init__(self, lam: float | None = None, xi: float = 0.1) -> None:
        super().__init__(lam)
        self.xi = float(xi)
        self._omega: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def before_task(self, model, task):
        params = trainable(model)
        self._omega = {n: torch.zeros_like(p) for n, p in params.items()}
        self._start = {n: p.detach().clone() for n, p in params.items()}
        self._prev = {n: p.detach().clone() for n, p in params.items()}
        return super().before_task(model, task)

    def after_backward(self, model):
        # p.grad also holds the penalty's gradient 2λB(θ − Ā) from the second task on; remove it so
        # that ω measures each weight's share in lowering the *task* loss.
        self._grad = {}
        for n, p in trainable(model).items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if n in self.B:
                g -= 2 * self.lam * self.B[n] * (p.detach() - self.A[n])
            self._grad[n] = g

    def after_step(self, model):
        for n, p in trainable(model).items():
            now = p.detach()
            if n in self._grad:
                self._omega[n] -= self._grad[n] * (now - self._prev[n])
            self._prev[n].copy_(now)

    def importance(self, model, task):
        out = {}
        for n, p in trainable(model).items():
            delta = p.detach() - self._start[n]
            out[n] = (self._omega[n] / (delta.pow(2) + self.xi)).clamp_(min=0)
        return out
