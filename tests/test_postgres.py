"""PostgreSQL for real: a server from the system's packages on 127.0.0.1, password authentication
on, holding both the Optuna storage and the MLflow backend store of a 2-worker search.

Checks the trial counts on both sides (no duplicates, none missing), that artifacts stay local,
and that the password appears nowhere: not in the printed output, not in what the study stores,
not in any MLflow param or tag. Skips, saying why, where no PostgreSQL can be started. The server
is stopped and its data folder removed at the end whatever happens.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from helpers import free_port, tiny_pool_yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

POOL_YAML = tiny_pool_yaml("tiny-pg", 120, 80)
TRIALS = 6


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: Debian keeps them in /usr/lib/postgresql/VERSION/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


class Postgres:
    """A throw-away PostgreSQL cluster in a temporary folder (as the `postgres` user when we are root:
    the server refuses to run as root)."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl, self.psql = pg_bin("initdb"), pg_bin("pg_ctl"), pg_bin("psql")
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(12)
        self.dir = Path(tempfile.mkdtemp(prefix="lll-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.user: str | None = None
        self.started = False

    def why_not(self) -> str | None:
        if not (self.initdb and self.pg_ctl and self.psql):
            return "PostgreSQL server programs (initdb, pg_ctl) are not installed: apt-get install -y postgresql"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no `postgres` user to run the server as"
            if shutil.which("runuser") is None:
                return "running as root without `runuser` to drop to the `postgres` user"
            self.user = "postgres"
        return None

    def _as_owner(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else list(cmd)

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_owner(*cmd), capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self.user:
            shutil.chown(self.dir, self.user)
        pwfile = self.dir / "superpw"
        pwfile.write_text(secrets.token_hex(16) + "\n")
        if self.user:
            shutil.chown(pwfile, self.user)
        init = self._run(
            self.initdb, "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        start = self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "120", "start"
        )
        self.started = True
        if start.returncode != 0:
            log = self.log.read_text()[-800:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()[-500:]} {log}")
        sql = [f"CREATE ROLE lll LOGIN PASSWORD '{self.password}'", "CREATE DATABASE optuna OWNER lll"]
        sql.append("CREATE DATABASE mlflow OWNER lll")
        for stmt in sql:
            res = self._run(self.psql, "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-c", stmt)
            if res.returncode != 0:
                raise RuntimeError(f"psql {stmt.split(' PASSWORD')[0]!r} failed: {res.stderr.strip()}")

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://lll:{self.password}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.started:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            pidfile = self.data / "postmaster.pid"
            if pidfile.exists():  # pg_ctl could not stop it: kill the postmaster
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(request) -> Postgres:
    pg = Postgres()
    reason = pg.why_not()
    if reason:
        shutil.rmtree(pg.dir, ignore_errors=True)
        pytest.skip(reason)
    request.addfinalizer(pg.stop)
    try:
        pg.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        # The programs are installed, so a server that will not start is a real failure, not a skip.
        pytest.fail(f"PostgreSQL is installed but did not start on 127.0.0.1: {exc}")
    return pg


@pytest.fixture(scope="module")
def searched(postgres, tmp_path_factory):
    d = tmp_path_factory.mktemp("pg-search")
    (d / "pool.yaml").write_text(POOL_YAML)
    args = ["search", "--pool", "pool.yaml", "--strategies", "naive,ewc", "--trials", str(TRIALS), "--seeds", "1"]
    args += ["--epochs", "1", "--workers", "2", "--study", "pg", "--no-prune", "--validate", "0"]
    args += ["--storage", postgres.url("optuna"), "--tracking-uri", postgres.url("mlflow")]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    res = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], cwd=d, env=env, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:].replace(postgres.password, "***")
    return d, res


def test_search_on_postgres_records_every_trial_once(postgres, searched):
    d, _res = searched
    study = optuna.load_study(study_name="pg", storage=postgres.url("optuna"))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == len(complete) == TRIALS
    client = MlflowClient(postgres.url("mlflow"))
    exp = client.get_experiment_by_name("pg")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lll.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    trials = [r for r in trials if r.data.tags.get("lll.kind") != "validation"]  # held-out runs at the end
    numbers = [int(r.data.tags["optuna_trial_number"]) for r in trials]
    assert len(numbers) == len(set(numbers)) == TRIALS, "a trial was recorded twice or lost"
    assert set(numbers) == {t.number for t in complete}
    assert all(r.info.status == "FINISHED" and "acc" in r.data.metrics for r in trials)
    # Runs are in PostgreSQL, artifacts on the local disk (./mlruns of the folder the search ran in).
    assert str(d / "mlruns") in exp.artifact_location
    run = trials[0]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"R.json", "R.png"}
    local = Path(client.download_artifacts(run.info.run_id, "R.json", str(d)))
    assert json.loads(local.read_text())["tasks"] == run.data.params["order"].split(",")


def test_password_is_never_shown_or_stored(postgres, searched):
    d, res = searched
    pw = postgres.password
    assert pw not in res.stdout and pw not in res.stderr
    assert "lll:***@127.0.0.1" in res.stdout, "the summary should show the storage URL, masked"
    study = optuna.load_study(study_name="pg", storage=postgres.url("optuna"))
    stored = json.dumps(study.user_attrs, default=str) + json.dumps([t.user_attrs for t in study.trials], default=str)
    assert pw not in stored
    assert study.user_attrs.get("tracking_uri_masked") is True
    client = MlflowClient(postgres.url("mlflow"))
    exp = client.get_experiment_by_name("pg")
    assert pw not in json.dumps(exp.tags) and pw not in str(exp.artifact_location)
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        assert pw not in json.dumps(r.data.params) + json.dumps(r.data.tags), r.info.run_name
    # `lll ui` cannot recover a masked password: it asks for it, without echoing it.
    ui = subprocess.run(
        [sys.executable, "-m", "search.cli", "ui", "--study", "pg", "--storage", postgres.url("optuna")],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ui.returncode == 2 and "--tracking-uri" in ui.stderr
    assert pw not in ui.stdout + ui.stderr
    # Nor is it in the files the search left in its folder (logs, artifacts).
    for f in d.rglob("*"):
        if f.is_file() and f.stat().st_size < 5_000_000:
            assert pw.encode() not in f.read_bytes(), f


def test_wrong_password_fails_fast_without_echoing_it(postgres, tmp_path):
    wrong = "wrong-" + secrets.token_hex(8)
    cases = [
        ["--storage", postgres.url("optuna").replace(postgres.password, wrong)],
        [
            "--storage",
            postgres.url("optuna"),
            "--tracking-uri",
            postgres.url("mlflow").replace(postgres.password, wrong),
        ],
    ]
    for extra in cases:
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "search.cli", "search", "--study", "never", *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 2 and "unreachable" in res.stderr, res.stderr[-2000:].replace(wrong, "***")
        assert "Traceback" not in res.stderr
        assert wrong not in res.stdout + res.stderr and postgres.password not in res.stdout + res.stderr
        assert time.perf_counter() - t0 < 20
