"""What the end-to-end tests share: the `lll` command in a subprocess, a tiny pool file, a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

# A local Ray stays on 127.0.0.1 (see the README); a wide terminal keeps rich's lines unwrapped.
LLL_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "COLUMNS": "160"}


def lll(*args: str, cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run ``lll ARGS`` (as ``python -m search.cli.app``, so no installed script is needed) in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        env=LLL_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def tiny_pool_yaml(name: str, train_per_task: int, test_per_task: int, rotated_and_permuted: bool = True) -> str:
    """A pool file of small, mutually interfering tasks: upright, rot90 and (by default) permuted digits."""
    tasks = "  - name: upright\n  - name: rot90\n    transforms: [{type: rotate, angle: 90}]\n"
    if rotated_and_permuted:
        tasks += "  - name: permuted\n    transforms: [{type: permute, seed: 1}]\n"
    return f"name: {name}\ntrain_per_task: {train_per_task}\ntest_per_task: {test_per_task}\ntasks:\n{tasks}"


def pool_workdir(tmp_path_factory, name: str, pool_yaml: str) -> Path:
    """A fresh folder holding ``pool.yaml`` for a module's `lll` commands to run in."""
    d = tmp_path_factory.mktemp(name)
    (d / "pool.yaml").write_text(pool_yaml)
    return d


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_storage(d: Path):
    """The Optuna storage `lll` writes in folder ``d`` when no --storage is given (the journal file
    of search/study/journal.py)."""
    from search.study.storage import open_storage

    return open_storage(f"journal:///{d}/optuna.journal")
