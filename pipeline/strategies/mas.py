"""Memory Aware Synapses (Aljundi et al., 2018).

Importance is how much the *output* moves when a weight moves, measured without labels:
b_i = mean_x |∂ ‖f(x)‖²₂ / ∂θ_i| over the task's inputs.

    loss = CE + λ Σ_i b_i (θ_i − θ*_i)²      (the paper's λ, no ½)

Options: ``samples`` (inputs used, default 1000).
"""

import torch

from pipeline.strategies.quadratic import ImportanceLockstep, QuadraticPenalty, per_sample_grad_stat, stacked_grad_stat


class MASLockstep(ImportanceLockstep):
    """The same importance for all lockstep members at once (see stacked_grad_stat)."""

    def stacked_importance(self):
        st = self.st
        x = torch.stack([t.x_train[: st.members[0].samples] for t in st.tasks]).to(st.device)
        return stacked_grad_stat(st, x, lambda out: 2 * out, torch.abs)


class MAS(QuadraticPenalty):
    name = "mas"
    lockstep = MASLockstep
    default_lam = 0.1  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (0.01, 1.0)

    def __init__(self, lam: float | None = None, samples: int = 1000) -> None:
        super().__init__(lam)
        self.samples = int(samples)

    def importance(self, model, task):
        device = next(model.parameters()).device
        x = task.x_train[: self.samples].to(device)
        dummy = torch.zeros(len(x), dtype=torch.long, device=device)
        return per_sample_grad_stat(model, task.name, x, dummy, lambda out, _: out.pow(2).sum(), torch.abs)
