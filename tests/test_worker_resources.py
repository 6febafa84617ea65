"""`--device` and `--gpus-per-worker` reach the Ray worker actors, seen from inside them.

A real Ray head is started on 127.0.0.1 that declares one GPU (a logical resource: Ray hands out
shares of it and sets CUDA_VISIBLE_DEVICES, while torch, finding no CUDA device, trains on the
CPU). `lll search --ray-address` joins it with ``--gpus-per-worker 0.5 --device cpu``: each of the
two workers reports the GPU share Ray assigned it and the device it trains on, and every trial's
MLflow record carries both. The one-line errors for these flags on a machine without a GPU are
tests/test_cli_errors.py.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LLL_ENV, tiny_pool_yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

HEAD = """
import sys, ray
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=200 * 1024 * 1024)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes our stdin (or dies): then shut this Ray down
ray.shutdown()
"""


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head with 2 CPUs and 1 (logical) GPU, owned by one process of this test: its address
    and the environment (token authentication on, as the README's cluster setup) to join it with."""
    cwd = tmp_path_factory.mktemp("gpu-head")
    env = {**LLL_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HEAD], cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        address = proc.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address, env
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.extended
def test_gpu_share_and_device_reach_the_workers(head: tuple[str, dict], tmp_path: Path) -> None:
    address, env = head
    (tmp_path / "pool.yaml").write_text(tiny_pool_yaml("tiny-gpu", 32, 32))
    args = ["search", "--ray-address", address, "--pool", "pool.yaml", "--strategies", "naive", "--trials", "4"]
    args += ["--seeds", "1", "--epochs", "1", "--hidden", "16", "--checkpoints", "none", "--study", "gpu"]
    args += ["--workers", "2", "--gpus-per-worker", "0.5", "--device", "cpu", "--validate", "0"]
    res = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "workers: 2 on cpu" in res.stdout, res.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("gpu")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("lll.kind") != "search"]
    assert len(runs) == 4
    assert {(r.data.tags["device"], r.data.tags["gpus"]) for r in runs} == {("cpu", "0.5")}
