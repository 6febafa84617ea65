"""Elastic Weight Consolidation (Kirkpatrick et al., 2017).

Guard each weight by its diagonal Fisher information F_i after the task: weights the old task's
predictions are sensitive to move little, the rest stay free for the new task.

    loss = CE + λ Σ_i F_i (θ_i − θ*_i)²      (no ½: the paper's λ is twice lll's)

One penalty per past task, kept consolidated (see quadratic.py). Options: ``fisher_samples``
(inputs used to estimate F, default 1000).
"""

from pipeline.strategies.quadratic import FisherLockstep, QuadraticPenalty, fisher_diagonal


class EWC(QuadraticPenalty):
    name = "ewc"
    lockstep = FisherLockstep
    default_lam = 30.0  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (1.0, 1000.0)

    def __init__(self, lam: float | None = None, fisher_samples: int = 1000) -> None:
        super().__init__(lam)
        self.fisher_samples = int(fisher_samples)

    def importance(self, model, task):
        return fisher_diagonal(model, task, self.fisher_samples)
