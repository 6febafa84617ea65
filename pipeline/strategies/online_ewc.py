"""Online EWC (Schwarz et al., 2018, "Progress & Compress").

One running Fisher F ← γ F + F_t and one anchor (the latest weights, importance-weighted), so the
cost stays constant however many tasks came before and old tasks fade at rate γ.

    loss = CE + λ Σ_i F_i (θ_i − θ*_i)²      (no ½)

Options: ``gamma`` (decay, default 0.9), ``fisher_samples`` (default 1000).
"""

from pipeline.strategies.quadratic import FisherLockstep, QuadraticPenalty, fisher_diagonal


class OnlineEWC(QuadraticPenalty):
    name = "online-ewc"
    lockstep = FisherLockstep
    default_lam = 30.0  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (1.0, 1000.0)

    def __init__(self, lam: float | None = None, gamma: float = 0.9, fisher_samples: int = 1000) -> None:
        super().__init__(lam)
        if not 0 < gamma <= 1:
            raise ValueError("gamma must be in (0, 1]")
        self.decay = float(gamma)
        self.fisher_samples = int(fisher_samples)

    def importance(self, model, task):
        return fisher_diagonal(model, task, self.fisher_samples)
