"""A real two-host Ray cluster on this machine: network namespaces joined by a veth pair.

Host A (10.77.0.1) runs the Ray head and drives the search; host B (10.77.0.2) runs a Ray worker
node. Token authentication stays on: the token is generated here and handed to every process.
Needs root (ip netns); skips with that reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import default_storage, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.cpu_kernels import has_avx2

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POOL_YAML = tiny_pool_yaml("tiny-cluster", 150, 100)
HEAD_IP, WORKER_IP, PORT = "10.77.0.1", "10.77.0.2", 6390


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


def netns_possible() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"lllprobe{os.getpid()}"
    res = sh("ip", "netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"cannot create a network namespace: {res.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def kill_namespace(ns: str) -> None:
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = netns_possible()
    if reason:
        pytest.skip(reason)
    tag = str(os.getpid() % 100000)
    head_ns, worker_ns = f"lllh{tag}", f"lllw{tag}"
    veth_a, veth_b = f"lva{tag}", f"lvb{tag}"
    work = tmp_path_factory.mktemp("cluster")
    (work / "pool.yaml").write_text(POOL_YAML)
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        sh("ip", "netns", "add", head_ns)
        sh("ip", "netns", "add", worker_ns)
        sh("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        sh("ip", "link", "set", veth_a, "netns", head_ns)
        sh("ip", "link", "set", veth_b, "netns", worker_ns)
        for ns, dev, ip in ((head_ns, veth_a, HEAD_IP), (worker_ns, veth_b, WORKER_IP)):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        head = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                head_ns,
                ray_bin,
                "start",
                "--head",
                "--node-ip-address",
                HEAD_IP,
                "--port",
                str(PORT),
                "--num-cpus",
                "1",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert head.returncode == 0, head.stderr[-2000:]
        worker = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                worker_ns,
                ray_bin,
                "start",
                "--address",
                f"{HEAD_IP}:{PORT}",
                "--node-ip-address",
                WORKER_IP,
                "--num-cpus",
                "1",
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield {"head_ns": head_ns, "worker_ns": worker_ns, "env": env, "work": work, "token": token}
    finally:
        kill_namespace(worker_ns)
        kill_namespace(head_ns)
        time.sleep(1)
        sh("ip", "netns", "del", worker_ns, check=False)
        sh("ip", "netns", "del", head_ns, check=False)


def lll_in(ns: str, env: dict, cwd: Path, *args: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "search.cli", *args]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=kw.pop("timeout", 600))


def search_args(study: str, trials: int) -> list[str]:
    return [
        "search",
        "--ray-address",
        f"{HEAD_IP}:{PORT}",
        "--pool",
        "pool.yaml",
        "--strategies",
        "naive",
        "--trials",
        str(trials),
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--study",
        study,
        "--no-prune",
        "--workers",
        "2",
        "--validate",
        "0",
    ]


def runs_of(work: Path, study: str):
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name(study)
    return [
        r
        for r in client.search_runs([exp.experiment_id], max_results=500)
        if r.data.tags.get("lll.kind") not in ("search", "validation")
    ]


def test_a_client_without_the_token_is_refused(cluster):
    env = {**cluster["env"], "RAY_AUTH_TOKEN": "0" * 64}
    res = lll_in(cluster["head_ns"], env, cluster["work"], *search_args("refused", 1), timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: could not join the Ray cluster" in res.stderr
    assert "Traceback" not in res.stderr


def test_search_runs_trials_on_both_hosts(cluster):
    res = lll_in(cluster["head_ns"], cluster["env"], cluster["work"], *search_args("two-hosts", 6))
    assert res.returncode == 0, res.stderr[-3000:]
    runs = runs_of(cluster["work"], "two-hosts")
    assert len(runs) == 6 and all(r.data.tags["lll.state"] == "complete" for r in runs)
    assert {r.data.tags["ray_node_ip"] for r in runs} == {HEAD_IP, WORKER_IP}
    assert len({r.data.tags["ray_node_id"] for r in runs}) == 2
    assert len({r.data.tags["cpu_kernels"] for r in runs}) == 1  # the same kernels on both nodes
    assert not has_avx2() or runs[0].data.tags["cpu_kernels"] == "AVX2"


@pytest.mark.extended
def test_killing_the_worker_node_mid_search_still_finishes_the_budget(cluster):
    work, study = cluster["work"], "node-lost"
    proc = lll_in(cluster["head_ns"], cluster["env"], work, *search_args(study, 12), background=True)
    storage = default_storage(work)
    on_worker = False
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and not on_worker:
        time.sleep(1)
        try:
            s = optuna.load_study(study_name=study, storage=storage)
        except Exception:
            continue
        on_worker = any(t.user_attrs.get("node_ip") == WORKER_IP for t in s.get_trials(states=(TrialState.COMPLETE,)))
    assert on_worker, "no trial reached the worker host before the deadline"
    kill_namespace(cluster["worker_ns"])  # the whole worker node dies: raylet, object store, actors
    _out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    s = optuna.load_study(study_name=study, storage=storage)
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 12
    runs = [r for r in runs_of(work, study) if r.data.tags["lll.state"] == "complete"]
    numbers = [int(r.data.tags["optuna_trial_number"]) for r in runs]
    assert len(numbers) == len(set(numbers)) == 12
    assert {r.data.tags["ray_node_ip"] for r in runs} == {HEAD_IP, WORKER_IP}
