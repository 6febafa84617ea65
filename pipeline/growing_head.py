"""A class-incremental output layer: one head for all tasks that grows when new classes arrive.

Why blocks: the head is a list of ``nn.Linear`` blocks whose outputs are concatenated. Growing
appends a block and never touches the old ones, so (1) old logits are unchanged by construction,
(2) existing parameters keep their names and shapes — strategies that hold per-parameter state
(EWC's Fisher, SI's path integral, GEM's gradients) see only *new* parameters appear.

Output unit k is label k: the head has 1 + the largest label seen so far. A class with a smaller
label that arrives later uses a unit that already existed (trained as a negative until then).
Before any class has arrived the head has no units and answers a single constant logit (class 0);
only R's row 0 ever sees that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GrowingHead(nn.Module):
    def __init__(self, width: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(width, n) for n in blocks])

    def sizes(self) -> list[int]:
        return [b.out_features for b in self.blocks]

    @property
    def out_features(self) -> int:
        return sum(self.sizes())

    def grow(self, width: int, n_out: int, init: str, device: torch.device) -> bool:
        """Add units so the head has ``n_out`` outputs; returns whether it grew."""
        if n_out <= self.out_features:
            return False
        block = nn.Linear(width, n_out - self.out_features)
        if init == "he":
            nn.init.kaiming_normal_(block.weight, nonlinearity="relu")
            nn.init.zeros_(block.bias)
        self.blocks.append(block.to(device))
        return True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.blocks:
            return h.new_zeros(len(h), 1)
        return torch.cat([b(h) for b in self.blocks], dim=1)
