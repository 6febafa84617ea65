"""Security defaults, each checked against the real code path.

* UIs and Ray bind to 127.0.0.1 unless the user asks otherwise (the `mlflow ui` command `lll ui`
  builds; the sockets a local Ray really listens on; no Ray dashboard).
* Checkpoints load with ``weights_only=True``: a file that pickles code is refused and the code
  never runs.
* YAML is loaded safely: a ``!!python/object/apply`` tag in a pool file, a ``--config`` file or an
  ``--option`` value is an error and runs nothing.
* Database URLs with passwords are masked wherever lll prints them (the end-to-end check of a real
  search with a password-protected PostgreSQL is in tests/test_postgres.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.config import StrategyConfig
from pipeline.models import build_model
from pipeline.strategies import make_strategy
from pipeline.tracking import mask_url
from search.cli.app import parse_options, ui_command
from tasks.errors import LLLError
from tasks.registry import load_pool


def lll(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr


# ---- listening sockets, read from /proc (no psutil needed) ----------------------------------------
def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = {pid}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state owned by ``pids``."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[link[8:-1]] = pid
    found = []
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                continue
            hexip, hexport = f[1].split(":")
            raw = bytes.fromhex(hexip)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
            found.append((inodes[f[9]], socket.inet_ntop(family, raw), int(hexport, 16)))
    return found


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1") or addr.startswith("::ffff:127.")


# ---- binding ---------------------------------------------------------------------------------------
def test_ui_command_binds_to_loopback_and_keeps_the_password_out_of_argv():
    cmd, env = ui_command("postgresql+psycopg://lll:s3cret@db.example:5432/mlflow")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "s3cret" not in " ".join(cmd), "the store URL (and its password) would show in `ps`"
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@db.example:5432/mlflow")
    cmd, _ = ui_command("sqlite:///mlflow.db", host="10.0.0.5", port=5999)
    assert cmd[cmd.index("--host") + 1] == "10.0.0.5" and cmd[cmd.index("--port") + 1] == "5999"


def test_ui_default_host_is_loopback(tmp_path):
    res = lll("ui", "--help", cwd=tmp_path)
    assert res.returncode == 0
    assert "127.0.0.1" in res.stdout


@pytest.mark.slow
def test_local_ray_has_no_dashboard_and_listens_on_loopback_only():
    import ray

    from search.study.cluster import connect

    connect(num_cpus=1)
    try:
        info = ray._private.worker.global_worker.node.address_info
        assert not info.get("webui_url"), f"a Ray dashboard was started at {info.get('webui_url')}"
        assert info["node_ip_address"] == "127.0.0.1"
        sockets = listening(descendants(os.getpid()))
        assert sockets, "found no Ray sockets at all; the /proc scan is broken"
        exposed = [s for s in sockets if not is_loopback(s[1])]
        assert not exposed, f"Ray processes listen beyond loopback: {exposed}"
    finally:
        ray.shutdown()


# ---- checkpoints -----------------------------------------------------------------------------------
class Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the loader runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_pickled_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model_spec": {"kind": "mlp"}, "model": Payload(marker), "strategy": {}, "meta": {}}, evil)
    with pytest.raises(LLLError, match="cannot be loaded safely"):
        load_checkpoint(evil)
    assert not marker.exists(), "loading the checkpoint ran the pickled code"
    # The payload is real: an unsafe load does run it (so the check above can fail).
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_a_real_checkpoint_still_loads(tmp_path):
    spec = {"kind": "mlp", "input_dim": 784, "hidden": [16], "heads": {"a": 10, "b": 10}, "shared_head": True}
    model = build_model(spec)
    strategy = make_strategy(StrategyConfig(name="ewc"))
    path = save_checkpoint(tmp_path / "ok.pt", model, strategy, {"order": ["a", "b"]})
    ckpt = load_checkpoint(path)
    again = model_from_checkpoint(ckpt)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


# ---- YAML ------------------------------------------------------------------------------------------
TAG = '!!python/object/apply:os.system ["touch {marker}"]'


@pytest.mark.parametrize(
    ("file", "text", "flag"),
    [
        ("evil-pool.yaml", "name: evil\ntasks:\n  - name: a\n    seed: {tag}\n", "--pool"),
        ("evil-run.yaml", "pool: {tag}\nseed: 1\n", "--config"),
    ],
)
def test_yaml_with_a_python_tag_is_an_error_and_runs_nothing(tmp_path, file, text, flag):
    marker = tmp_path / "pwned"
    path = tmp_path / file
    path.write_text(text.format(tag=TAG.format(marker=marker)))
    res = lll("run", flag, str(path), "--no-track", cwd=tmp_path)
    one_line_error(res, "not valid YAML")
    if flag == "--pool":  # `lll search --pool` takes the same path
        with pytest.raises(LLLError, match="not valid YAML"):
            load_pool(str(path))
    assert not marker.exists()


def test_option_value_with_a_python_tag_is_an_error_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(LLLError, match="--option"):
        parse_options([f"memory_size={TAG.format(marker=marker)}"])
    with pytest.raises(LLLError, match="--option"):
        parse_options(["memory_size=[1,"])
    assert parse_options(["memory_size=200", "name=x"]) == {"memory_size": 200, "name": "x"}
    assert not marker.exists()


# ---- passwords -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://lll:s3cret@db:5432/optuna", "postgresql+psycopg://lll:***@db:5432/optuna"),
        ("postgresql://lll:p@ss@db/optuna", "postgresql://lll:***@db/optuna"),  # unescaped @ in the password
        ("postgresql://lll:pa/ss@db/optuna", "postgresql://lll:***@db/optuna"),
        ("http://user:s3cret@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
        ("postgresql://db/optuna?user=lll&password=s3cret&sslmode=require", None),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("sqlite:////data/a:b@c/mlflow.db", "sqlite:////data/a:b@c/mlflow.db"),  # a path, not a password
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("postgresql://lll@db/optuna", "postgresql://lll@db/optuna"),
    ],
)
def test_mask_url(url, masked):
    out = mask_url(url)
    assert "s3cret" not in out and "p@ss" not in out and "pa/ss" not in out
    if masked is not None:
        assert out == masked
    else:
        assert "password=***" in out and "sslmode=require" in out


def test_unreachable_password_urls_are_masked_in_errors(tmp_path):
    secret = "Sup3rSecretPw"
    # `lll run` / `lll search` with such URLs: tests/test_mlflow_server.py and tests/test_search.py.
    cases = [("ui", "--study", "x", "--storage", f"postgresql+psycopg://lll:{secret}@127.0.0.1:1/optuna")]
    for args in cases:
        t0 = time.perf_counter()
        res = lll(*args, cwd=tmp_path)
        one_line_error(res, "unreachable")
        assert secret not in res.stdout + res.stderr, args
        assert "lll:***@127.0.0.1:1" in res.stderr, res.stderr
        assert time.perf_counter() - t0 < 20, f"{args[0]} took too long to fail"
