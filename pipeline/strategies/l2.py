"""L2 transfer: every weight is equally important (b_i = 1), anchored at the end of each task."""

import torch

from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import QuadraticLockstep, QuadraticPenalty


class L2(QuadraticPenalty):
    """loss + λ Σ_k Σ_i (θ_i − θ^k_i)² over the finished tasks k (no ½). Too small a λ forgets, too
    large cannot learn the new task."""

    name = "l2"
    lockstep = QuadraticLockstep
    default_lam = 0.3  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (0.03, 3.0)

    def importance(self, model, task):
        return {n: torch.ones_like(p) for n, p in trainable(model).items()}
