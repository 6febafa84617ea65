"""What the end-to-end tests share: the `lll` command in a subprocess, a tiny pool file, a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


# ---- a real `mlflow server` on 127.0.0.1 -----------------------------------------------------------
def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, SIGKILL what is left after 5 s."""
    if proc.poll() is None or _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def mlflow_server(d: Path, request, workers: int = 1) -> str:
    """`mlflow server` in folder ``d`` (SQLite backend, proxied local artifacts) until the end of
    ``request``'s scope (finalizer: its whole process group); returns its http URL once healthy."""
    port = free_port()
    log = d / "server.log"
    exe = str(Path(sys.executable).parent / "mlflow")
    cmd = [exe, "server", "--backend-store-uri", f"sqlite:///{d}/srv.db", "--artifacts-destination", str(d / "art")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    request.addfinalizer(lambda: stop_group(proc))
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log)
    return url
