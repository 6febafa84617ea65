"""Tasks and task pools: built once from a spec (a built-in name or a YAML file), then immutable.

A :class:`Task` carries its tensors and the spec it was built from; ``fingerprint()`` hashes that
spec so that results and caches can be keyed by *what* was learned, not by a file name.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import LLLError
from tasks.sources import load_source
from tasks.transforms import Classes, Transform, n_classes_after

if TYPE_CHECKING:
    import torch  # imported where tensors are built: checking a spec should not pay for torch

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
TEXT_SOURCES = ("babi-gen", "babi")  # built by tasks/babi.py into token tensors


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
    babi_task: int | None = Field(None, ge=1, le=20)  # which bAbI task (text sources only)


class PoolSpec(BaseModel):
    """What a pool YAML file holds. Unknown keys are errors (a typo should not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    source: Literal["mnist-5k", "mnist", "babi-gen", "babi", "python"] = "mnist-5k"
    factory: str | None = None  # source python: "module:function" returning the tasks (tasks/user_code.py)
    n_classes: int | None = Field(None, gt=0)  # source python: labels are 0..n_classes-1 (default: max + 1)
    babi_variant: str = Field("en", pattern=NAME_PATTERN)  # folder of tasks_1-20_v1-2 read by source babi
    train_per_task: int | None = Field(1000, gt=0)  # None: all (source python's default)
    test_per_task: int | None = Field(500, gt=0)
    seed: int = 0
    heads: Literal["shared", "per-task", "growing"] = "shared"  # growing: class-incremental
    train: dict[str, Any] = {}  # training defaults for this pool (keys of `lll run`'s `train:`); flags override
    tasks: list[TaskSpec] = []  # source python: optional (default: every task the factory returns, in its order)

    @model_validator(mode="before")
    @classmethod
    def _python_takes_all(cls, data: Any) -> Any:
        """A python source uses all the examples its factory returns unless the pool caps them."""
        if isinstance(data, dict) and data.get("source") == "python":
            data = {"train_per_task": None, "test_per_task": None, **data}
        return data

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique, repeated: {', '.join(dup)}; rename or remove the repeats")
        return tasks

    @model_validator(mode="after")
    def _text_or_images(self) -> PoolSpec:
        if self.source == "python":
            if self.factory is None:
                raise ValueError("source python needs `factory: module:function` (a function returning the tasks)")
            for t in self.tasks:
                if t.transforms or t.babi_task is not None:
                    raise ValueError(f"task {t.name}: a python source's tasks take no transforms or babi_task")
            return self
        if self.factory is not None or self.n_classes is not None:
            raise ValueError(f"`factory:` and `n_classes:` need `source: python`, not {self.source}")
        if not self.tasks:
            raise ValueError("list at least one task under `tasks:`")
        text = self.source in TEXT_SOURCES
        for t in self.tasks:
            if text and (t.babi_task is None or t.transforms):
                raise ValueError(f"task {t.name}: source {self.source} needs `babi_task: N` and no transforms")
            if not text and t.babi_task is not None:
                raise ValueError(f"task {t.name}: babi_task needs source babi-gen or babi, not {self.source}")
        return self


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
    meta: dict = field(default_factory=dict)  # what a model needs beyond the tensors (text: vocab sizes)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def names(self) -> list[str]:
        return list(self.tasks)

    @cached_property
    def _fingerprint(self) -> str:
        # What was learned: the spec (its description aside) and every task's fingerprint, which
        # also records what the source provided (e.g. full MNIST or its test set split 80/20).
        # Training defaults are not what is learned (the training config is keyed separately), and
        # keys a pool does not use are left out so that older pools keep their fingerprints.
        spec = self.spec.model_dump(mode="json", exclude={"description", "train"})
        for key in ("factory", "n_classes"):
            if spec[key] is None:
                del spec[key]
        return stable_hash(spec, {n: t.fingerprint() for n, t in self.tasks.items()})[:16]

    def fingerprint(self) -> str:
        return self._fingerprint

    def __getitem__(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise LLLError(f"pool {self.name!r} has no task {name!r}; its tasks are: {', '.join(self.tasks)}") from None

    def resolve_order(self, order: str | list[str] | None) -> list[str]:
        """Validate an ordering (comma-separated or a list); ``None`` means the pool's own order."""
        return check_order(self.names, order, self.name)

    @classmethod
    def from_arrays(cls, name: str, tasks: dict, heads: str = "shared", **spec: Any) -> TaskPool:
        """A pool from ``{task: (x_train, y_train, x_test, y_test)}`` (tensors or numpy arrays) or
        ``{task: (train_dataset, test_dataset)}`` (torch Datasets of (x, y) items), for the Python
        API (``run_ordering``). ``spec`` takes other pool keys (``n_classes``, ``seed``, ``train``…).
        For the command line and Ray workers, name a factory in a pool YAML instead."""
        pool_spec = parse_pool_spec(
            {"name": name, "source": "python", "factory": "<arrays>:from_arrays", "heads": heads, **spec},
            f"pool {name}",
        )
        return python_pool(pool_spec, tasks)

    @classmethod
    def from_datasets(cls, name: str, tasks: dict, heads: str = "shared", **spec: Any) -> TaskPool:
        """``{task: (train_dataset, test_dataset)}``: see :meth:`from_arrays`."""
        return cls.from_arrays(name, tasks, heads, **spec)


def check_order(names: list[str], order: str | list[str] | None, pool_name: str) -> list[str]:
    """Validate an ordering against a pool's task ``names`` — before any data is built, so a typo
    fails at once. Comma-separated text or a list; blank entries are ignored; nothing means the
    pool's own order. A subset is fine; an unknown or repeated task is an error."""
    items = (order.split(",") if isinstance(order, str) else list(order)) if order else []
    wanted = [str(s).strip() for s in items if str(s).strip()]
    if not wanted:
        return list(names)
    seen: set[str] = set()
    for n in wanted:
        if n not in names:
            raise LLLError(f"pool {pool_name!r} has no task {n!r}; its tasks are: {', '.join(names)}")
        if n in seen:
            raise LLLError(f"task {n!r} appears twice in the order; list each task at most once")
        seen.add(n)
    return wanted


def build_task(spec: TaskSpec, pool: PoolSpec, source) -> Task:
    """Filter classes, sample the pool's image counts (same images for every task of the pool where
    their classes allow, so tasks differ by their transform), then apply the pixel transforms.

    A random transform draws from a seed derived from its own ``seed`` (else the task's) and the
    split, so train and test images get independent noise."""
    import torch

    task_seed = spec.seed if spec.seed is not None else seed_from(pool.seed, spec.name)
    class_filters = [t for t in spec.transforms if isinstance(t, Classes)]
    pixel = [t for t in spec.transforms if not isinstance(t, Classes)]

    def part(x: torch.Tensor, y: torch.Tensor, n: int, salt: str) -> tuple[torch.Tensor, torch.Tensor]:
        for t in class_filters:
            x, y = t.apply(x, y, task_seed)
        if len(y) == 0:
            keep = [t.keep for t in class_filters]
            raise LLLError(
                f"task {spec.name!r} keeps no {salt} images: source {pool.source} has none of the classes {keep}; "
                "fix its `classes` transform (MNIST digits are 0-9)"
            )
        g = torch.Generator().manual_seed(seed_from(pool.seed, salt))
        idx = torch.randperm(len(y), generator=g)[:n]
        x, y = x[idx].clone(), y[idx].clone()
        for t in pixel:
            own = getattr(t, "seed", None)
            x, y = t.apply(x, y, seed_from(task_seed if own is None else own, salt))
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
        "source_size": [len(source.y_train), len(source.y_test)],
    }
    return Task(spec.name, xtr, ytr, xte, yte, n_classes_after(list(spec.transforms)), spec_dict)


def python_pool(spec: PoolSpec, data: object) -> TaskPool:
    """A pool from what a factory returned (checked by :func:`tasks.user_code.check_tasks`). The
    spec lists the tasks (all the factory returned, in its order, unless the spec picks some), and
    each task's spec holds a hash of its data, so a changed factory is a different pool."""
    from tasks.user_code import check_tasks

    where = f"task factory {spec.factory}" if not spec.factory.startswith("<") else f"pool {spec.name}"
    checked = check_tasks(data, where, spec.n_classes, spec.train_per_task, spec.test_per_task, spec.seed)
    wanted = [t.name for t in spec.tasks] or list(checked)
    missing = [n for n in wanted if n not in checked]
    if missing:
        raise LLLError(f"{where} returned no task {missing[0]!r} (it returned {', '.join(checked)}); fix `tasks:`")
    if not spec.tasks:
        spec = parse_pool_spec({**spec.model_dump(mode="json"), "tasks": [{"name": n} for n in wanted]}, where)
    tasks = {}
    for n in wanted:
        c = checked[n]
        task_spec = {
            "name": n,
            "source": "python",
            "factory": spec.factory,
            "data": c["data_hash"],
            "pool_seed": spec.seed,
            "train": len(c["y_train"]),
            "test": len(c["y_test"]),
        }
        tasks[n] = Task(n, c["x_train"], c["y_train"], c["x_test"], c["y_test"], c["n_classes"], task_spec)
    return TaskPool(spec, tasks)


def build_pool(spec: PoolSpec, data_dir: str | None = None, download: bool = False) -> TaskPool:
    if spec.source == "python":
        from tasks.user_code import call_factory

        return python_pool(spec, call_factory(spec.factory))
    if spec.source in TEXT_SOURCES:
        from tasks.babi import build_babi_pool  # imports this module

        return build_babi_pool(spec, data_dir, download)
    source = load_source(spec.source, data_dir=data_dir, download=download)
    tasks = {t.name: build_task(t, spec, source) for t in spec.tasks}
    notes = [source.note] if source.note else []
    for split, want in (("train", spec.train_per_task), ("test", spec.test_per_task)):
        got = [len(getattr(t, f"y_{split}")) for t in tasks.values()]
        short = [n for n in got if n < want]
        if short:
            span = f"{min(short)}-{max(short)}" if min(short) != max(short) else str(min(short))
            notes.append(f"only {span} of {want} {split} images for {len(short)} task(s), the source has no more")
    return TaskPool(spec, tasks, note="; ".join(notes))


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _tag(model: type[BaseModel]) -> object:
    """The tag of one member of a tagged union (its ``type`` default), e.g. ``"rotate"``."""
    return getattr(model.model_fields.get("type"), "default", None)


def _walk(model: type[BaseModel], loc: tuple, data: object) -> tuple[str, type[BaseModel] | None, list]:
    """Follow a pydantic error location through the models: a readable path (``tasks[1] (rot90)
    .transforms[0]``), the model holding the last key, and the choices of a tagged union there."""
    path, holder, choices, node = "", model, [], data
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            path += f"[{part}]" + (f" ({name})" if isinstance(name, str) else "")
            continue
        if choices:  # a tagged union's tag, e.g. "rotate": not a key the user wrote
            holder = next((c for c in choices if _tag(c) == part), None)
            choices = []
            continue
        path += f".{part}" if path else str(part)
        node = node.get(part) if isinstance(node, dict) else None
        field_info = holder.model_fields.get(part) if holder is not None else None
        inner = _models_in(field_info.annotation) if field_info is not None else []
        if len(inner) == 1:
            holder = inner[0]
        elif len(inner) > 1:
            choices = inner
    return path, holder, choices


def first_error(exc: ValidationError) -> dict:
    """The error worth showing. A misspelt key is reported twice (an unknown key and a missing
    one): the unknown key is the clue, so it comes first."""
    errors = exc.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def explain_validation_error(exc: ValidationError, model: type[BaseModel], data: object = None) -> tuple[str, str]:
    """The first problem pydantic found, for a person: (key path, "what is wrong; how to fix it")."""
    err = first_error(exc)
    loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx", {})
    path, holder, choices = _walk(model, loc, data)
    path = path or "(top level)"
    if kind == "extra_forbidden":
        if holder is None:
            return path, f"unknown key {loc[-1]!r}; remove it"
        close = difflib.get_close_matches(str(loc[-1]), list(holder.model_fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return path, f"unknown key {loc[-1]!r}; {hint}the keys allowed there are: {', '.join(holder.model_fields)}"
    if kind == "missing":
        return path, "required key missing; add it"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ", ".join(str(_tag(c)) for c in choices)
        bad = f"unknown type {ctx.get('tag')!r}" if kind == "union_tag_invalid" else "no `type:` key"
        return path, f"{bad}; give `type:` one of {tags}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return path, msg
    got = repr(err.get("input"))
    return path, f"{msg} (got {got[:60] + '...' if len(got) > 60 else got}); fix that value"


def parse_pool_spec(data: object, where: str) -> PoolSpec:
    """Validate a pool spec; the first problem becomes one line naming the file, the key and the fix."""
    try:
        return PoolSpec.model_validate(data)
    except ValidationError as exc:
        path, problem = explain_validation_error(exc, PoolSpec, data)
        raise LLLError(f"{where}: {path}: {problem}") from None


def read_yaml(path: Path, what: str, read_hint: str) -> object:
    """A YAML file's data (``yaml.safe_load``: a ``!!python`` tag is refused, never run); a missing
    file or a syntax error is one line naming ``what`` it is and where the problem sits."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LLLError(f"cannot read {what} {path}: {exc.strerror}; {read_hint}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        why = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
        raise LLLError(f"{what} {path} is not valid YAML{at}{why}; fix the syntax") from None


def load_pool_file(path: str | Path) -> PoolSpec:
    p = Path(path)
    data = read_yaml(p, "pool file", "check the path (built-ins: `lll pools`)")
    if not isinstance(data, dict):
        raise LLLError(f"pool file {p} must be a YAML mapping with `name:` and `tasks:` keys")
    return parse_pool_spec(data, str(p))
