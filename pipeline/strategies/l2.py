"""L2 transfer: every weight is equally important (b_i = 1), anchored at the end of each task."""

import torch

from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import QuadraticPenalty


class L2(QuadraticPenalty):
    """loss + λ Σ_i (θ_i − θ^b_i)². Too small a λ forgets, too large cannot learn the new task."""

    name = "l2"
    default_lam = 0.01
    lam_range = (1e-4, 1.0)

    def importance(self, model, task):
        return {n: torch.ones_like(p) for n, p in trainable(model).items()}
