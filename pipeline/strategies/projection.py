"""Helpers for strategies that rewrite the gradient (GEM, A-GEM): flatten, memory gradients, write back."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.strategies.base import trainable


def flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in trainable(model).values()]
    )


def set_flat_grad(model: nn.Module, g: torch.Tensor) -> None:
    i = 0
    for p in trainable(model).values():
        n = p.numel()
        p.grad = g[i : i + n].view_as(p).clone()
        i += n


def grad_of(loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Flat gradient of ``loss`` w.r.t. the trainable parameters, leaving ``p.grad`` untouched."""
    params = list(trainable(model).values())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )
