"""Riemannian Walk (Chaudhry et al., 2018): online Fisher + KL-normalised path-integral importance.

While a task trains, two things are tracked from the task-loss gradient g (the penalty's own
gradient 2λB(θ − Ā) is subtracted from p.grad, so it is exactly the task's gradient):

* an online ("EWC++") Fisher, a moving average F ← β F + (1 − β) g² over the steps;
* SI's path integral w_i = Σ_steps −g_i Δθ_i (how much each weight lowered the loss).

After the task the path integral is KL-normalised — divided by the distance the weight moved
measured in the Fisher metric, s_i = max(0, w_i / (½ F_i Δ_i² + ξ)), Δ_i the change over the
task — and the guard is the sum of both, each scaled to [0, 1] by its largest value:

    b_i = F_i / max F + s_i / max s          loss = CE + λ Σ_i b_i (θ_i − θ*_i)²   (no ½)

Simplifications (as FACIL's RWalk does): the score is normalised once per task over the whole
task (the paper normalises every few steps), and instead of one running Fisher, score averaging
and the latest anchor, each task's b_t joins the shared consolidation B ← γB + b_t with anchors
(quadratic.py); γ = 0.5 halves older tasks' weight each task, like the paper's score averaging.

Options: ``fisher_decay`` (β, default 0.9), ``xi`` (damping ξ, default 0.1), ``gamma`` (γ, 0.5).
"""

import torch

from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import PathIntegralLockstep, PathIntegralPenalty


class RWalkLockstep(PathIntegralLockstep):
    """The online Fisher, stacked [K, ...] (β is the same for every member: same options)."""

    def begin(self):
        super().begin()
        self.fisher = self.st.stack_dicts([m._fisher for m in self.st.members])
        self.beta = self.st.members[0].fisher_decay

    def observe_grad(self, name, g):
        self.fisher[name].mul_(self.beta).add_((1 - self.beta) * g.pow(2))

    def end(self):
        super().end()
        self.st.unstack_into(self.fisher, [m._fisher for m in self.st.members])


class RWalk(PathIntegralPenalty):
    name = "rwalk"
    lockstep = RWalkLockstep
    default_lam = 10.0
    lam_range = (0.3, 300.0)

    def __init__(
        self, lam: float | None = None, fisher_decay: float = 0.9, xi: float = 0.1, gamma: float = 0.5
    ) -> None:
        super().__init__(lam)
        if not 0 <= fisher_decay < 1:
            raise ValueError("fisher_decay must be in [0, 1)")
        if not 0 < gamma <= 1:
            raise ValueError("gamma must be in (0, 1]")
        self.fisher_decay, self.xi, self.decay = float(fisher_decay), float(xi), float(gamma)
        self._fisher: dict[str, torch.Tensor] = {}

    def before_task(self, model, task):
        self._fisher = {n: torch.zeros_like(p) for n, p in trainable(model).items()}
        return super().before_task(model, task)

    def observe_grad(self, name, g):
        self._fisher[name].mul_(self.fisher_decay).add_((1 - self.fisher_decay) * g.pow(2))

    def importance(self, model, task):
        params = trainable(model)
        score = {
            n: (self._omega[n] / (0.5 * self._fisher[n] * (p.detach() - self._start[n]).pow(2) + self.xi)).clamp_(min=0)
            for n, p in params.items()
        }
        f_max = max(float(f.max()) for f in self._fisher.values()) or 1.0
        s_max = max(float(s.max()) for s in score.values()) or 1.0
        return {n: self._fisher[n] / f_max + score[n] / s_max for n in params}
