"""Tasks and task pools: built once from a spec (a built-in name or a YAML file), then immutable.

A :class:`Task` carries its tensors and the spec it was built from; ``fingerprint()`` hashes that
spec so that results and caches can be keyed by *what* was learned, not by a file name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.errors import LLLError
from tasks.sources import load_source
from tasks.transforms import Classes, Transform, n_classes_after

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


def stable_hash(*parts: object) -> str:
    """SHA-256 of a canonical JSON encoding: the same across processes, machines and runs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def seed_from(*parts: object) -> int:
    """A 63-bit seed derived from anything JSON-encodable (used for every per-task seed)."""
    return int(stable_hash(*parts)[:15], 16)


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    transforms: list[Transform] = []
    seed: int | None = None


class PoolSpec(BaseModel):
    """What a pool YAML file holds. Unknown keys are errors (a typo should not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    source: Literal["mnist-5k", "mnist"] = "mnist-5k"
    train_per_task: int = Field(1000, gt=0)
    test_per_task: int = Field(500, gt=0)
    seed: int = 0
    heads: Literal["shared", "per-task"] = "shared"
    tasks: list[TaskSpec] = Field(min_length=1)

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique, repeated: {', '.join(dup)}")
        return tasks


@dataclass(frozen=True, eq=False)
class Task:
    """One task: train/test tensors, the number of classes, and the spec it was built from."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    spec: dict = field(repr=False)

    def fingerprint(self) -> str:
        return stable_hash(self.spec)[:16]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True, eq=False)
class TaskPool:
    """Tasks built from one :class:`PoolSpec`, in the pool's own order."""

    spec: PoolSpec
    tasks: dict[str, Task]
    note: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def names(self) -> list[str]:
        return list(self.tasks)

    @cached_property
    def _fingerprint(self) -> str:
        return stable_hash(self.spec.model_dump(mode="json"))[:16]

    def fingerprint(self) -> str:
        return self._fingerprint

    def __getitem__(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise LLLError(f"pool {self.name!r} has no task {name!r}; its tasks are: {', '.join(self.tasks)}") from None

    def resolve_order(self, order: str | list[str] | None) -> list[str]:
        """Validate an ordering (comma-separated or a list); ``None`` means the pool's own order."""
        if order is None or order == "" or order == []:
            return self.names
        names = [s.strip() for s in order.split(",")] if isinstance(order, str) else list(order)
        for n in names:
            self[n]  # raises a clear error for unknown names
        seen = set()
        for n in names:
            if n in seen:
                raise LLLError(f"task {n!r} appears twice in the order; list each task at most once")
            seen.add(n)
        return names


def build_task(spec: TaskSpec, pool: PoolSpec, source) -> Task:
    """Filter classes, sample the pool's image counts (same images for every task of the pool where
    their classes allow, so tasks differ by their transform), then apply the pixel transforms."""
    task_seed = spec.seed if spec.seed is not None else seed_from(pool.seed, spec.name)
    class_filters = [t for t in spec.transforms if isinstance(t, Classes)]
    pixel = [t for t in spec.transforms if not isinstance(t, Classes)]

    def part(x: torch.Tensor, y: torch.Tensor, n: int, salt: str) -> tuple[torch.Tensor, torch.Tensor]:
        for t in class_filters:
            x, y = t.apply(x, y, task_seed)
        g = torch.Generator().manual_seed(seed_from(pool.seed, salt))
        idx = torch.randperm(len(y), generator=g)[:n]
        x, y = x[idx].clone(), y[idx].clone()
        for t in pixel:
            x, y = t.apply(x, y, task_seed)
        return x.contiguous(), y

    xtr, ytr = part(source.x_train, source.y_train, pool.train_per_task, "train")
    xte, yte = part(source.x_test, source.y_test, pool.test_per_task, "test")
    spec_dict = {
        "name": spec.name,
        "source": pool.source,
        "transforms": [t.model_dump(mode="json") for t in spec.transforms],
        "seed": task_seed,
        "pool_seed": pool.seed,
        "train": len(ytr),
        "test": len(yte),
    }
    return Task(spec.name, xtr, ytr, xte, yte, n_classes_after(list(spec.transforms)), spec_dict)


def build_pool(spec: PoolSpec, data_dir: str | None = None, download: bool = False) -> TaskPool:
    source = load_source(spec.source, data_dir=data_dir, download=download)
    tasks = {t.name: build_task(t, spec, source) for t in spec.tasks}
    return TaskPool(spec, tasks, note=source.note)


def parse_pool_spec(data: object, where: str) -> PoolSpec:
    try:
        return PoolSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise LLLError(f"{where}: {loc}: {err['msg']}; fix that key (see `lll pools` for examples)") from None


def load_pool_file(path: str | Path) -> PoolSpec:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise LLLError(f"cannot read pool file {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LLLError(f"pool file {p} is not valid YAML{at}; fix the syntax") from None
    if not isinstance(data, dict):
        raise LLLError(f"pool file {p} must be a YAML mapping with `name:` and `tasks:` keys")
    return parse_pool_spec(data, str(p))
