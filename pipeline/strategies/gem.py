"""Gradient Episodic Memory (Lopez-Paz & Ranzato, 2017).

Keep ``memory_size`` examples per past task. At every step, if the proposed gradient g would
increase the loss on any past task's memory (g·g_k < 0), replace it by the closest gradient that
does not, solving the paper's dual quadratic program with quadprog (as the reference code does):

    min_v ½ vᵀ G Gᵀ v + gᵀ Gᵀ v   s.t. v ≥ γ,   then g̃ = Gᵀ v + g

λ is the memory strength γ (the reference code's margin, default 0.5): γ > 0 pushes the update to
also *decrease* past losses. Options: ``memory_size`` (per task, default 256).
"""

import numpy as np
import quadprog
import torch
import torch.nn.functional as F

from pipeline.strategies.memory import EpisodicMemory, WithMemory
from pipeline.strategies.projection import flat_grad, grad_of, set_flat_grad


def project_gem(g: torch.Tensor, G: torch.Tensor, margin: float, eps: float = 1e-3) -> torch.Tensor:
    """Project ``g`` so that its dot product with every row of ``G`` is ≥ 0 (quadprog QP)."""
    mem = G.double().cpu().numpy()
    grad = g.double().cpu().numpy()
    t = mem.shape[0]
    P = mem @ mem.T
    P = 0.5 * (P + P.T) + np.eye(t) * eps
    q = -(mem @ grad)
    v = quadprog.solve_qp(P, q, np.eye(t), np.zeros(t) + margin)[0]
    return torch.from_numpy(v @ mem + grad).to(g.dtype).to(g.device)


class GEM(WithMemory):
    name = "gem"
    default_lam = 0.5  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (0.05, 2.0)  # log-uniform: the lower end must be > 0

    def __init__(self, lam: float | None = None, memory_size: int = 256) -> None:
        super().__init__(lam)
        self.memory = EpisodicMemory(int(memory_size))

    def after_backward(self, model):
        names = self.memory.names()
        if not names:
            return
        g = flat_grad(model)
        G = torch.stack([grad_of(F.cross_entropy(model(x, n), y), model) for n, (x, y) in self.memory.data.items()])
        if (G @ g < 0).any():
            set_flat_grad(model, project_gem(g, G, self.lam))
