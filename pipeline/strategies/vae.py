"""A small task-conditioned VAE: the generator of generative replay (no Strategy here).

Encoder and decoder are one-hidden-layer MLPs; both also read a learned embedding of the task
the input belongs to, so replayed inputs can be drawn *for a given past task* and answered by
that task's head. The embedding table grows by one row per task. Inputs are flattened images in
[0, 1]; the decoder outputs Bernoulli logits (loss: binary cross-entropy + KL, summed per input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TaskVAE(nn.Module):
    def __init__(self, input_dim: int, hidden: int, latent: int, n_tasks: int, embed: int = 8) -> None:
        super().__init__()
        self.config = {"input_dim": input_dim, "hidden": hidden, "latent": latent, "n_tasks": n_tasks, "embed": embed}
        self.tasks = nn.Parameter(torch.randn(n_tasks, embed) * 0.1)
        self.enc = nn.Sequential(nn.Linear(input_dim + embed, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent + embed, hidden), nn.ReLU(), nn.Linear(hidden, input_dim))

    def add_task(self) -> None:
        """One more task embedding (old rows unchanged)."""
        new = torch.randn(1, self.config["embed"], device=self.tasks.device) * 0.1
        self.tasks = nn.Parameter(torch.cat([self.tasks.detach(), new]))
        self.config["n_tasks"] += 1

    def loss(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per input, averaged over the batch."""
        x = x.flatten(1)
        e = self.tasks[t]
        mu, logvar = self.enc(torch.cat([x, e], 1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.dec(torch.cat([z, e], 1))
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (rec + kl) / len(x)

    @torch.no_grad()
    def sample(self, t: torch.Tensor) -> torch.Tensor:
        """One generated input (flattened, in [0, 1]) for each task index in ``t``."""
        z = torch.randn(len(t), self.config["latent"], device=self.tasks.device)
        return torch.sigmoid(self.dec(torch.cat([z, self.tasks[t]], 1)))
