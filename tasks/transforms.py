"""Seeded image transforms that turn one source into many tasks.

Each transform is a small pydantic model (so a YAML pool is validated with clear errors) with an
``apply(x, y, seed)`` method on float images ``(N, H, W)`` in [0, 1]. Anything random draws from
a generator seeded explicitly, never from global state, so a task is a pure function of its spec.
``build_task`` derives ``seed`` from the transform's own ``seed`` field (else the task's seed) and
the split, so train and test images get independent random draws.

torch is imported inside ``apply``: validating a pool file then does not pay for importing it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import torch


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def apply(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class Permute(_Transform):
    """A fixed random pixel permutation (the permuted-MNIST benchmark). Same seed, same permutation,
    whatever the task: the permutation *is* the task."""

    type: Literal["permute"] = "permute"
    seed: int = 0

    def apply(self, x, y, seed):
        import torch

        n, h, w = x.shape
        perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(self.seed))
        return x.reshape(n, -1)[:, perm].reshape(n, h, w), y


class Rotate(_Transform):
    """Rotation of square images by any angle (degrees, counter-clockwise as displayed), about the
    image centre. Multiples of 90° are exact pixel moves; other angles are bilinear, zero fill."""

    type: Literal["rotate"] = "rotate"
    angle: float

    def apply(self, x, y, seed):
        import torch
        import torch.nn.functional as F

        turns = self.angle / 90
        if turns == int(turns):
            return torch.rot90(x, int(turns) % 4, dims=(1, 2)), y
        a = math.radians(self.angle)
        # affine_grid maps each output pixel (x right, y down) to where it samples the input: the
        # inverse rotation, which for y pointing down is this matrix (checked against rot90 in the tests).
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), [len(x), 1, *x.shape[1:]], align_corners=False)
        out = F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.squeeze(1), y


class Noise(_Transform):
    """Additive Gaussian pixel noise N(0, sigma²), clipped back to [0, 1].

    ``seed`` (default: the task's seed) picks the noise stream: tasks with the same noise seed see
    the same noise on the same images. Train and test images always get independent noise.
    """

    type: Literal["noise"] = "noise"
    sigma: float = Field(gt=0)
    seed: int | None = None

    def apply(self, x, y, seed):
        import torch

        g = torch.Generator().manual_seed(seed)
        return (x + self.sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp_(0.0, 1.0), y


class Invert(_Transform):
    """Negative image: 1 − x."""

    type: Literal["invert"] = "invert"

    def apply(self, x, y, seed):
        return 1.0 - x, y


class Blur(_Transform):
    """Separable Gaussian blur with standard deviation ``sigma`` pixels (edges replicated, so a
    constant image stays constant)."""

    type: Literal["blur"] = "blur"
    sigma: float = Field(gt=0, le=10)

    def apply(self, x, y, seed):
        import torch
        import torch.nn.functional as F

        radius = max(1, math.ceil(3 * self.sigma))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        k = torch.exp(-(t**2) / (2 * self.sigma**2))
        k = k / k.sum()
        img = x.unsqueeze(1)
        img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
        return img.squeeze(1), y


class Classes(_Transform):
    """Keep only some classes; ``relabel`` maps them to 0..k−1 in the order given
    (task-incremental) while ``relabel: false`` keeps the original labels (class-incremental)."""

    type: Literal["classes"] = "classes"
    keep: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    relabel: bool = True

    @field_validator("keep")
    @classmethod
    def _distinct(cls, keep: list[int]) -> list[int]:
        if len(set(keep)) != len(keep):
            raise ValueError(f"keep lists a class twice: {keep}; list each class once")
        return keep

    def apply(self, x, y, seed):
        import torch

        keep = torch.tensor(self.keep)
        mask = torch.isin(y, keep)
        x, y = x[mask], y[mask]
        if self.relabel:
            lut = torch.full((max(self.keep) + 1,), -1, dtype=torch.int64)
            lut[keep] = torch.arange(len(keep))
            y = lut[y]
        return x, y


Transform = Annotated[Permute | Rotate | Noise | Invert | Blur | Classes, Field(discriminator="type")]


def n_classes_after(transforms: list[_Transform], base: int = 10) -> int:
    """How many output classes a task needs after its transforms."""
    n = base
    for t in transforms:
        if isinstance(t, Classes):
            n = len(t.keep) if t.relabel else base
    return n
