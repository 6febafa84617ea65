"""A built pool saved once, keyed by its fingerprint, so that worker processes load it instead of
building it again (reading the source, sampling, rotating, blurring, generating stories).

The driver builds the pool anyway (it needs the fingerprint and the task names), then
:func:`save` writes its tensors to ``<cache dir>/<fingerprint>.pt``; a worker on the same machine
calls :func:`load` with the fingerprint the driver sent and gets the same tensors back, verified:
the file's spec must equal the worker's spec and the fingerprint recomputed from the file must be
the one asked for, else the worker builds the pool itself (a cluster node without the file does
that too). Files load with ``torch.load(weights_only=True)``: nothing in them is unpickled as code.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

from tasks.pool import PoolSpec, Task, TaskPool

MAX_CACHE_BYTES = 2 << 30  # oldest files are removed beyond this
_FORMAT = 1


def cache_dir() -> Path:
    """``$LLL_CACHE_DIR`` or ``~/.cache/lll``, with a ``pools`` folder inside."""
    root = os.environ.get("LLL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lll")
    return Path(root) / "pools"


def _path(fingerprint: str) -> Path:
    if not fingerprint.isalnum():
        raise ValueError(f"not a pool fingerprint: {fingerprint!r}")
    return cache_dir() / f"{fingerprint}.pt"


def save(pool: TaskPool) -> Path | None:
    """Write ``pool`` to the cache unless it is there already; None when the cache is not writable
    (workers then build the pool themselves, as before)."""
    import torch

    path = _path(pool.fingerprint())
    if path.exists():
        os.utime(path)  # recently used: kept by the size cap
        return path
    payload = {
        "format": _FORMAT,
        "fingerprint": pool.fingerprint(),
        "spec": pool.spec.model_dump_json(),
        "note": pool.note,
        "meta": json.dumps(pool.meta),
        "tasks": [
            {
                "name": t.name,
                "x_train": t.x_train,
                "y_train": t.y_train,
                "x_test": t.x_test,
                "y_test": t.y_test,
                "n_classes": t.n_classes,
                "spec": json.dumps(t.spec),
            }
            for t in pool.tasks.values()
        ],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    except OSError:
        return None
    _trim(path.parent)
    return path


def load(spec: PoolSpec, fingerprint: str | None) -> TaskPool | None:
    """The cached pool of ``spec`` with this ``fingerprint``, or None (missing, other spec, damaged)."""
    if not fingerprint:
        return None
    import torch

    try:
        path = _path(fingerprint)
        with open(path, "rb") as f:
            d = torch.load(f, weights_only=True)
        if d.get("format") != _FORMAT or d["fingerprint"] != fingerprint or d["spec"] != spec.model_dump_json():
            return None
        tasks = {}
        for t in d["tasks"]:
            tensors = (t["x_train"], t["y_train"], t["x_test"], t["y_test"])
            tasks[t["name"]] = Task(t["name"], *tensors, int(t["n_classes"]), json.loads(t["spec"]))
        pool = TaskPool(spec, tasks, note=d["note"], meta=json.loads(d["meta"]))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None
    return pool if pool.fingerprint() == fingerprint else None


def _trim(folder: Path) -> None:
    """Keep the cache under MAX_CACHE_BYTES, dropping the least recently used files first."""
    try:
        files = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for p in files:
            total += p.stat().st_size
            if total > MAX_CACHE_BYTES:
                p.unlink(missing_ok=True)
    except OSError:
        pass
