"""`lll pools` and `lll run` as a user runs them: the installed command in a fresh folder.

One real training run (config file + overriding flags) is checked from every side: the printed R
and metrics, the --out JSON, and the MLflow store (params, metrics, artifacts, a checkpoint that
loads with weights_only=True). Then every kind of bad input must fail with exit code 2 and one
`error:` line, without touching what the first run recorded.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tasks.registry import BUILTIN_POOLS, load_pool

_script = Path(sys.executable).with_name("lll")
LLL = [str(_script)] if _script.exists() else [sys.executable, "-m", "search.cli"]
ENV = {**os.environ, "COLUMNS": "120", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def lll(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LLL, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


RUN_YAML = """\
pool: mixed-mnist          # overridden by --pool
order: clean,noisy
seed: 7
strategy:
  name: l2
  lam: 1.0                 # overridden by --lambda
train:
  epochs: 1                # overridden by --epochs
  hidden: [32, 32]
"""
RUN_FLAGS = [
    "--config", "run.yaml", "--pool", "noisy-clean", "--epochs", "2", "--lambda", "3",
    "--train-per-task", "200", "--test-per-task", "100", "--out", "r.json",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def ran(workdir: Path) -> subprocess.CompletedProcess:
    (workdir / "run.yaml").write_text(RUN_YAML)
    return lll("run", *RUN_FLAGS, cwd=workdir)


def _mlflow_runs(workdir: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lll-run")
    assert exp is not None
    return client.search_runs([exp.experiment_id])


def test_pools_lists_every_builtin_pool(workdir: Path) -> None:
    done = lll("pools", cwd=workdir)
    assert done.returncode == 0, done.stderr
    for name in BUILTIN_POOLS:
        assert name in done.stdout
    assert "(default)" in done.stdout


def test_run_prints_r_and_metrics(ran: subprocess.CompletedProcess) -> None:
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    out = ran.stdout
    for label in ("init", "after clean", "after noisy"):
        assert label in out
    assert re.search(r"ACC \d+\.\d\d\s+BWT [+-]\d+\.\d\d\s+FWT [+-]\d+\.\d\d", out)


def test_run_writes_json_with_config_and_flags_merged(ran: subprocess.CompletedProcess, workdir: Path) -> None:
    assert ran.returncode == 0, ran.stderr
    data = json.loads((workdir / "r.json").read_text())
    assert {"tasks", "R", "acc", "bwt", "fwt", "strategy", "params"} <= set(data)
    assert data["tasks"] == ["clean", "noisy"]  # order from the config file
    R = data["R"]
    assert len(R) == 3 and all(len(row) == 2 for row in R)  # (T+1) × T
    assert all(0.0 <= v <= 1.0 for row in R for v in row)
    assert data["acc"] == pytest.approx((R[2][0] + R[2][1]) / 2)
    assert data["bwt"] == pytest.approx(R[2][0] - R[1][0])
    assert data["fwt"] == pytest.approx(R[1][1] - R[0][1])
    assert data["strategy"] == "l2"  # from the config
    params = data["params"]
    assert params["pool"] == "noisy-clean"  # flag beats config
    assert params["lambda"] == 3.0  # flag beats config
    assert params["seed"] == 7  # config
    assert params["train"]["epochs"] == 2  # flag beats config
    assert params["train"]["hidden"] == [32, 32]  # config
    # What was printed is what was written.
    assert f"ACC {data['acc'] * 100:.2f}" in ran.stdout
    assert f"BWT {data['bwt'] * 100:+.2f}" in ran.stdout


def test_run_is_recorded_in_mlflow(ran: subprocess.CompletedProcess, workdir: Path, tmp_path: Path) -> None:
    assert ran.returncode == 0, ran.stderr
    from mlflow.tracking import MlflowClient

    data = json.loads((workdir / "r.json").read_text())
    runs = _mlflow_runs(workdir)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == data["mlflow_run_id"] and run.info.status == "FINISHED"
    p = run.data.params
    assert p["order"] == "clean,noisy" and p["strategy"] == "l2" and p["seed"] == "7"
    assert float(p["lambda"]) == 3.0
    # The fingerprint names the data: the same pool built here, in another process, matches.
    assert p["pool_fingerprint"] == load_pool("noisy-clean", train_per_task=200, test_per_task=100).fingerprint()
    m = run.data.metrics
    for key in ("acc", "bwt", "fwt"):
        assert m[key] == pytest.approx(data[key])

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"R.json", "R.png", "checkpoints"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/final.pt"]
    r_json = json.loads(Path(client.download_artifacts(run.info.run_id, "R.json", str(tmp_path))).read_text())
    assert r_json["R"] == data["R"] and r_json["tasks"] == data["tasks"]
    png = Path(client.download_artifacts(run.info.run_id, "R.png", str(tmp_path))).read_bytes()
    assert png.startswith(b"\x89PNG")
    ckpt = torch.load(
        client.download_artifacts(run.info.run_id, "checkpoints/final.pt", str(tmp_path)), weights_only=True
    )
    assert {"model_spec", "model", "strategy", "meta"} <= set(ckpt)
    assert ckpt["meta"]["order"] == ["clean", "noisy"] and ckpt["strategy"]["lam"] == 3.0
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())


# ---------------------------------------------------------------------------------------------
# bad input: exit code 2, one `error:` line, nothing recorded is lost
# ---------------------------------------------------------------------------------------------
BAD = {
    "unknown pool": (["--pool", "no-such-pool"], "unknown pool 'no-such-pool'"),
    "unknown task in order": (["--pool", "noisy-clean", "--order", "noisy,dirty"], "has no task 'dirty'"),
    "task twice in order": (["--pool", "noisy-clean", "--order", "clean,noisy,clean"], "appears twice"),
    "unknown strategy": (["--strategy", "no-such-strategy"], "unknown strategy 'no-such-strategy'"),
    "negative lambda": (["--strategy", "ewc", "--lambda", "-1"], "--lambda"),
    "malformed config": (["--config", "broken.yaml"], "broken.yaml is not valid YAML at line"),
    "malformed pool file": (["--pool", "broken-pool.yaml"], "broken-pool.yaml is not valid YAML at line"),
    "pool file unknown key": (["--pool", "typo-pool.yaml"], "unknown key 'tsks'; did you mean 'tasks'?"),
    "missing data dir": (["--data-dir", "no-such-dir"], "data dir no-such-dir does not exist"),
    "unknown strategy option": (["--strategy", "ewc", "--option", "colour=red"], "has no option colour"),
    "typer usage error": (["--epochs", "many"], "Invalid value for '--epochs'"),
    "unknown flag": (["--epoch", "2"], "No such option: --epoch"),
    "missing output folder": (["--out", "nowhere/r.json"], "--out nowhere/r.json: folder nowhere does not exist"),
    # Fails late: after the strategy and the tracking store were checked, while reading the data.
    "corrupt data file": (["--pool", "noisy-clean", "--data-dir", "corrupt"], "bad magic number"),
}


@pytest.fixture(scope="module")
def bad_runs(ran: subprocess.CompletedProcess, workdir: Path) -> dict[str, subprocess.CompletedProcess]:
    """Every bad command, run (two at a time) in the folder of the successful run."""
    (workdir / "broken.yaml").write_text("strategy: {name: ewc\nseed: 1\n")
    (workdir / "broken-pool.yaml").write_text("name: p\ntasks: [{name: a}\n")
    (workdir / "typo-pool.yaml").write_text("name: p\ntsks:\n  - name: a\n")
    corrupt = workdir / "corrupt"
    corrupt.mkdir(exist_ok=True)
    (corrupt / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + bytes(20))
    (corrupt / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(4))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(lll, "run", *args, cwd=workdir) for name, (args, _) in BAD.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(bad_runs: dict[str, subprocess.CompletedProcess], case: str) -> None:
    done = bad_runs[case]
    expected = BAD[case][1]
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_failed_runs_keep_what_was_recorded(
    ran: subprocess.CompletedProcess, bad_runs: dict[str, subprocess.CompletedProcess], workdir: Path
) -> None:
    assert ran.returncode == 0
    data = json.loads((workdir / "r.json").read_text())
    runs = _mlflow_runs(workdir)
    assert [r.info.run_id for r in runs] == [data["mlflow_run_id"]]  # nothing lost, nothing half-added
    assert runs[0].data.metrics["acc"] == pytest.approx(data["acc"])
    with sqlite3.connect(workdir / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not (workdir / "nowhere").exists()
