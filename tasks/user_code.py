"""Tasks from the user's own code: a ``module:function`` factory, arrays, or torch Datasets.

Why a factory and not a file format: a researcher's data already lives in Python (a sensor
dataset's domains, splits of their images, features from a frozen encoder). The factory returns
``{task: (x_train, y_train, x_test, y_test)}`` (tensors or numpy arrays, any feature shape, integer
labels) or ``{task: (train_dataset, test_dataset)}``; everything is checked here once, so a wrong
shape or label is one line naming the task and the fix, not a traceback deep in training.

Modules imported through :func:`import_object` are remembered so that ``search/study/cluster.py`` can
ship them to Ray workers (``runtime_env={"py_modules": ...}``): the same import then works on a
cluster whose nodes do not have the user's files.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.errors import LLLError

if TYPE_CHECKING:
    import torch

_IMPORTED: dict[str, str] = {}  # module name → the file or package folder to ship to Ray workers


def import_object(ref: str, what: str = "factory") -> Callable:
    """``"module:function"`` → the callable, importing the module from the current directory or
    ``PYTHONPATH``. Every failure is one line naming the reference and the fix."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise LLLError(f"{what} {ref!r} must look like module:function (e.g. my_tasks:make_tasks)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LLLError(
                f"{what} {ref!r}: cannot import module {module_name!r} (not found); run lll from the folder that "
                f"holds {module_name.split('.')[0]}.py or add that folder to PYTHONPATH"
            ) from None
        raise LLLError(f"{what} {ref!r}: importing {module_name!r} failed: {exc}; install what it needs") from None
    except Exception as exc:  # a user module may raise anything while importing
        raise LLLError(f"{what} {ref!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise LLLError(f"{what} {ref!r}: module {module_name!r} has no {attr!r}; check the name after the colon")
    if not callable(obj):
        raise LLLError(f"{what} {ref!r} is a {type(obj).__name__}, not a function; point it at a function")
    _remember(module_name, module)
    return obj


def _remember(module_name: str, module: Any) -> None:
    top = module_name.split(".")[0]
    top_module = sys.modules.get(top, module)
    where = getattr(top_module, "__file__", None)
    if where is None:
        return
    path = Path(where)
    if path.name == "__init__.py":
        path = path.parent
    if "site-packages" in path.parts or "dist-packages" in path.parts or top in ("tasks", "pipeline", "search"):
        return  # installed (or lll's own) code: already importable on every worker
    _IMPORTED[top] = str(path)


def shipped_modules() -> list[str]:
    """Files/folders of the user modules imported so far (for Ray's ``py_modules``)."""
    return sorted(set(_IMPORTED.values()))


def call_factory(ref: str) -> Mapping:
    """Import and call a task factory; its result is checked by :func:`tasks_from_arrays`."""
    factory = import_object(ref, "task factory")
    try:
        result = factory()
    except LLLError:
        raise
    except Exception as exc:
        raise LLLError(f"task factory {ref!r} raised {type(exc).__name__}: {exc}; fix the factory") from None
    return result


# ---------------------------------------------------------------------------------------------
# checking and converting what the user hands in
# ---------------------------------------------------------------------------------------------
def _tensor(value: Any, where: str) -> torch.Tensor:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        arr = np.asarray(value)
    except Exception:
        arr = None
    if arr is None or arr.dtype == object or arr.dtype.kind not in "biuf":
        kind = type(value).__name__
        raise LLLError(f"{where} is a {kind}, not a numeric array; return a torch tensor or numpy array")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _features(value: Any, where: str) -> torch.Tensor:
    import torch

    x = _tensor(value, where)
    if x.ndim < 2:
        raise LLLError(f"{where} has shape {tuple(x.shape)}; give one row per example: (N, features...)")
    if x.is_floating_point() or x.dtype == torch.bool:
        return x.to(torch.float32).contiguous()
    if x.is_complex():
        raise LLLError(f"{where} is complex; give real features")
    return x.to(torch.int64).contiguous()  # integer features (e.g. token ids) stay integers


def _labels(value: Any, where: str, n_classes: int | None) -> torch.Tensor:
    import torch

    y = _tensor(value, where)
    if y.ndim != 1:
        raise LLLError(f"{where} has shape {tuple(y.shape)}; labels must be one integer per example, shape (N,)")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise LLLError(
            f"{where} holds {y.dtype} values; labels must be integers 0..n-1 (cast them, e.g. y.astype(int))"
        )
    y = y.to(torch.int64)
    if len(y) and int(y.min()) < 0:
        raise LLLError(f"{where} has label {int(y.min())}; labels must be integers 0..n-1 (re-map the classes)")
    if n_classes is not None and len(y) and int(y.max()) >= n_classes:
        raise LLLError(
            f"{where} has label {int(y.max())} but the pool declares n_classes: {n_classes}; labels must be "
            f"integers 0..{n_classes - 1} (raise n_classes or re-map the classes)"
        )
    return y.contiguous()


def dataset_arrays(dataset: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style ``torch.utils.data.Dataset`` of ``(x, y)`` items as two stacked tensors."""
    import torch

    try:
        n = len(dataset)
    except TypeError:
        raise LLLError(f"{where} has no len(); give a map-style torch Dataset of (x, y) items") from None
    if n == 0:
        raise LLLError(f"{where} is empty; every split needs examples")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise LLLError(f"{where}[{i}] is not an (x, y) pair; a Dataset item must be (features, label)")
        xs.append(_tensor(item[0], f"{where}[{i}] x"))
        ys.append(_tensor(item[1], f"{where}[{i}] y").reshape(()))
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise LLLError(f"{where}: items have different feature shapes {sorted(shapes)[:3]}; pad or resize them")
    return torch.stack(xs), torch.stack(ys)


def _four(name: str, value: Any, ref: str) -> tuple:
    """One task's value → (x_train, y_train, x_test, y_test), Datasets materialised."""
    import torch

    arrays = (np.ndarray, torch.Tensor)
    if isinstance(value, tuple | list) and len(value) == 2 and not isinstance(value[0], arrays):
        train, test = value
        return (
            *dataset_arrays(train, f"task {name!r} train dataset"),
            *dataset_arrays(test, f"task {name!r} test dataset"),
        )
    if not isinstance(value, tuple | list) or len(value) != 4:
        got = f"a {len(value)}-tuple" if isinstance(value, tuple | list) else f"a {type(value).__name__}"
        raise LLLError(
            f"{ref}: task {name!r} is {got}; give (x_train, y_train, x_test, y_test) or (train_dataset, test_dataset)"
        )
    return tuple(value)


def data_hash(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' shapes, dtypes and bytes: a changed factory is a different pool."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx].clone(), y[idx].clone()


def check_tasks(
    data: Any,
    ref: str,
    n_classes: int | None = None,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    seed: int = 0,
) -> dict[str, dict]:
    """Validate a factory's result; returns, per task in the factory's order, its tensors
    (``x_train``, ``y_train``, ``x_test``, ``y_test``), ``n_classes`` and ``data_hash``."""
    import re

    from tasks.pool import NAME_PATTERN, seed_from

    if not isinstance(data, Mapping) or not data:
        got = "an empty mapping" if isinstance(data, Mapping) else f"a {type(data).__name__}"
        raise LLLError(f"{ref} returned {got}; return a dict {{task_name: (x_train, y_train, x_test, y_test)}}")
    out: dict[str, dict] = {}
    shape = None
    for name, value in data.items():
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise LLLError(
                f"{ref}: task name {name!r} is not a plain name; use letters, digits and _.+- (e.g. 'domain-a')"
            )
        xtr, ytr, xte, yte = _four(name, value, ref)
        where = f"{ref}: task {name!r}"
        xtr, xte = _features(xtr, f"{where} x_train"), _features(xte, f"{where} x_test")
        ytr, yte = _labels(ytr, f"{where} y_train", n_classes), _labels(yte, f"{where} y_test", n_classes)
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            if len(x) != len(y):
                raise LLLError(f"{where}: x_{split} has {len(x)} rows but y_{split} has {len(y)} labels; match them")
            if len(y) == 0:
                raise LLLError(f"{where}: the {split} split is empty; every task needs train and test examples")
        if xtr.shape[1:] != xte.shape[1:]:
            raise LLLError(
                f"{where}: x_train rows have shape {tuple(xtr.shape[1:])} but x_test rows {tuple(xte.shape[1:])}; "
                "give both splits the same feature shape"
            )
        if shape is not None and xtr.shape[1:] != shape[1]:
            raise LLLError(
                f"{where} has features of shape {tuple(xtr.shape[1:])} but task {shape[0]!r} has {tuple(shape[1])}; "
                "one model learns every task, so give all tasks the same feature shape"
            )
        shape = shape or (name, xtr.shape[1:])
        digest = data_hash(xtr, ytr, xte, yte)
        xtr, ytr = _subsample(xtr, ytr, train_per_task, seed_from(seed, name, "train"))
        xte, yte = _subsample(xte, yte, test_per_task, seed_from(seed, name, "test"))
        n = n_classes if n_classes is not None else int(max(int(ytr.max()), int(yte.max()))) + 1
        out[name] = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, "n_classes": n, "data_hash": digest}
    return out
