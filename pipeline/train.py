"""The training loop: a plain function of (model, batch, strategy), plus evaluation.

Kept deliberately small and generic: it does not know which strategy runs, whether inputs are
images or token sequences, or how many heads the model has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.strategies.base import Strategy
from tasks.errors import LLLError
from tasks.pool import Task


class TrainingDiverged(LLLError):
    """The loss became NaN or infinite (usually λ or the learning rate is too large)."""


def pick_device(setting: str = "auto") -> torch.device:
    """``auto``: the GPU this process holds (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise LLLError(f"unknown device {setting!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LLLError(f"device {setting!r} asked for but no CUDA GPU is visible; use --device cpu")
    return device


def make_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """A fresh optimiser per task (the usual continual-learning protocol)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    strategy: Strategy,
    x: torch.Tensor,
    y: torch.Tensor,
    clip: float | None,
) -> torch.Tensor:
    """One optimisation step; returns the (detached) loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = strategy.loss(model, x, y)
    loss.backward()
    strategy.after_backward(model)
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    strategy.after_step(model)
    return loss.detach()


def train_task(
    model: nn.Module,
    task: Task,
    strategy: Strategy,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """Train ``model`` on ``task`` for ``cfg.epochs`` epochs; returns the model that was trained
    (a strategy may swap it in ``before_task``). All randomness comes from ``seed``."""
    torch.manual_seed(seed)
    grow = getattr(model, "grow_for", None)  # a class-incremental head adds the task's new classes first
    if grow is not None:
        grow(task)
    model = strategy.before_task(model, task) or model
    model.train()
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    x, y = task.x_train.to(device), task.y_train.to(device)
    n, bs = len(y), cfg.batch_size
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            total += train_step(model, optimizer, strategy, x[idx], y[idx], cfg.clip)
        if not torch.isfinite(total):
            raise TrainingDiverged(
                f"training diverged on task {task.name!r} (epoch {epoch + 1}): the loss became NaN/inf; "
                f"lower --lambda (now {strategy.lam}) or --lr (now {cfg.lr})"
            )
        if on_epoch is not None:
            on_epoch(epoch + 1)
    strategy.after_task(model, task)
    return model


@torch.no_grad()
def evaluate(
    model: nn.Module, strategy: Strategy, tasks: Iterable[Task], device: torch.device, batch: int = 4096
) -> dict[str, float]:
    """Test accuracy on each task, through whatever the strategy says answers for it."""
    model.eval()
    out = {}
    for task in tasks:
        predict = strategy.predictor(model, task)
        x, y = task.x_test, task.y_test
        correct = 0
        for i in range(0, len(y), batch):
            logits = predict(x[i : i + batch].to(device))
            correct += int((logits.argmax(1) == y[i : i + batch].to(device)).sum())
        out[task.name] = correct / max(1, len(y))
    model.train()
    return out
