"""Every setting of a training run, validated once (pydantic), so a typo is an error, not a default."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BUILTIN_MODELS = ("mlp", "cnn", "memn2n")  # built by pipeline/models.py; any other model is module:function
MODEL_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class TrainConfig(BaseModel):
    """How each task is trained. Defaults were checked so every default-pool task is learnable
    (see docs/results.md, "Checking the defaults")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # mlp | cnn | memn2n | module:function; None: the pool's (memn2n for text, else mlp)
    hidden: tuple[Annotated[int, Field(gt=0)], ...] = (50, 50, 50)
    heads: Literal["shared", "per-task", "growing"] | None = None  # None: the pool's default
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(10, gt=0)
    init: Literal["he", "torch"] = "he"
    clip: float | None = Field(1.0, gt=0)  # gradient-norm clipping; None disables it
    device: str = "auto"  # auto: CUDA when this process holds a GPU, else CPU

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str | None) -> str | None:
        if v is None or v in BUILTIN_MODELS or MODEL_REF.match(v):
            return v
        raise ValueError(f"unknown model {v!r}; use {', '.join(BUILTIN_MODELS)} or module:function (your own factory)")


class StrategyConfig(BaseModel):
    """A strategy name, its strength λ (``lam``; None means the strategy's own default) and any
    strategy-specific options (memory size, temperature, decay, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "naive"
    lam: float | None = Field(None, ge=0)
    options: dict[str, Any] = {}


class RunConfig(BaseModel):
    """One `lll run`: which pool and ordering, which strategy, how to train, where to record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: str = "mixed-mnist"
    order: list[str] | None = None  # None: the pool's own order
    strategy: StrategyConfig = StrategyConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0
    seeds: list[int] | None = Field(None, min_length=1)  # several seeds: R and metrics are their mean
    data_dir: str | None = None
    download: bool = False
    train_per_task: int | None = Field(None, gt=0)
    test_per_task: int | None = Field(None, gt=0)
    tracking_uri: str | None = "sqlite:///mlflow.db"  # None: do not record
    experiment: str = "lll-run"
