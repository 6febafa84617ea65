"""A complete bring-your-own example: a 5-task pool and a model from your own code.

The tasks are scikit-learn's bundled 8×8 digits (1,797 images, installed with lll's
dependencies, no download) seen in five domains — upright, mirrored, rotated by 90°, noisy, and
inverted — one shared 10-way head, like lll's own `mixed-mnist` but from data lll knows nothing
about. Use it from this folder:

    lll run --pool digits.yaml                              # the pool's defaults (its `train:`)
    lll run --pool digits.yaml --model cnn --seeds 0,1      # the built-in CNN, two seeds
    lll run --pool digits.yaml --model digits:make_model    # the model below
    lll search --pool digits.yaml --model cnn --trials 12   # the curriculum search

``make_tasks`` is the pool's ``factory:``: it returns ``{task: (x_train, y_train, x_test, y_test)}``
(numpy arrays here; tensors work too), integer labels 0..9. ``make_model`` follows lll's model
convention: called as ``make_model(input_shape, n_classes)``, it returns an ``nn.Module`` with a
``features(x)`` method and a final ``nn.Linear`` named ``head``; lll keeps the features and puts its
own head(s) on them, so ``--heads per-task`` and ``growing`` work too.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


def make_tasks(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Five domains of the 8×8 digits; the same 80/20 train/test split for every domain."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    noise = rng.normal(0.0, 0.35, size=x.shape).astype(np.float32)
    domains = {
        "upright": x,
        "mirrored": x[:, :, ::-1],
        "rot90": np.rot90(x, k=1, axes=(1, 2)),
        "noisy": np.clip(x + noise, 0.0, 1.0),
        "inverted": 1.0 - x,
    }
    return {name: (d[train].copy(), y[train], d[test].copy(), y[test]) for name, d in domains.items()}


class SmallNet(nn.Module):
    """One conv layer and one hidden layer: ``features`` is everything but the final ``head``."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        h, w = input_shape[-2:]
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * h * w, 64), nn.ReLU()
        )
        self.head = nn.Linear(64, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.unsqueeze(1))  # (N, 8, 8) → (N, 1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_model(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return SmallNet(input_shape, n_classes)
