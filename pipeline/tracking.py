"""MLflow recording: one run per trained ordering (params, metrics, R as JSON + PNG, checkpoint).

Uses ``MlflowClient`` with explicit run ids rather than the global ``mlflow.start_run`` state, so
one driver process can record many trials (and nest them under a search's parent run) safely.
With the embedded SQLite store only the driver writes (SQLite and many writers end in
"database is locked"); workers return results and files instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.rmatrix import RMatrix
from tasks.errors import LLLError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# With a tracking server MLflow prints two "View run ... at: URL" lines per finished run on stdout,
# which would bury the search's progress bar; `lll ui` and the summary say where runs are.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


_SECRET_QUERY = re.compile(r"([?&;](?:password|passwd|pwd|pass|token|secret|api_key)=)[^&;#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Hide a password in a URL before it is printed, logged or stored.

    ``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``: the user-info part up
    to the *last* ``@`` before the query, so an unescaped ``@`` or ``/`` in the password is hidden
    whole; password-like query parameters (``?password=...``) too. Every URL lll shows goes
    through here."""
    head, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@", 0, rest.find("?") if "?" in rest else len(rest))
        user, colon, _ = rest[: max(at, 0)].partition(":")
        if at > 0 and colon and "/" not in user:
            rest = f"{user}:***{rest[at:]}"
        url = head + sep + rest
    return _SECRET_QUERY.sub(r"\1***", url)


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, keep artifacts in ``mlartifacts/`` beside the database file."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.expanduser().resolve().parent / "mlartifacts").as_uri()


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when the tracking store cannot be reached."""
    db = sqlite_path(uri)
    if db is not None:
        parent = db.expanduser().resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise LLLError(
                f"MLflow store {mask_url(uri)}: folder {parent} is missing or not writable; fix --tracking-uri"
            )
        return
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise OSError(f"HTTP {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LLLError(
                f"MLflow tracking server {mask_url(uri)} is unreachable ({reason}); start it "
                "(`mlflow server --host 127.0.0.1 --port 5000`) or fix --tracking-uri"
            ) from None
        return
    if uri.startswith(("postgresql", "mysql", "mssql")):
        from sqlalchemy import create_engine, text

        # A bounded connect: an address that drops packets must not hang the command for minutes.
        args = {"connect_timeout": max(1, int(timeout))} if uri.startswith(("postgresql", "mysql")) else {}
        try:
            engine = create_engine(uri, connect_args=args)
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            raise LLLError(
                f"MLflow database {mask_url(uri)} is unreachable ({type(exc).__name__}); check the URL"
            ) from None
        return
    if uri.startswith("file:") or "://" not in uri:
        return
    raise LLLError(f"unsupported tracking URI {mask_url(uri)}; use sqlite:///FILE, http://HOST:PORT or a DB URL")


@functools.cache
def sqlite_fast_commits() -> None:
    """Every SQLite connection this process opens (Optuna's and MLflow's stores) runs in WAL mode
    with ``synchronous=NORMAL``: a commit no longer waits for an fsync. Measured on the default
    pool's exhaustive search, the ~4,000 commits of 120 trials took 32 s of the driver's time with
    the default rollback journal. A killed process (SIGKILL) still loses no committed transaction;
    only a power cut could drop the last few, which resume then re-runs. Registered once per
    process; a database another process holds locked keeps its mode (WAL is stored in the file)."""
    global _FAST_COMMITS
    if _FAST_COMMITS:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_conn, _record) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            cur = dbapi_conn.cursor()
            with contextlib.suppress(sqlite3.OperationalError):  # another process holds it: same mode
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    event.listen(Engine, "connect", on_connect)
    _FAST_COMMITS = True


_FAST_COMMITS = False


_CLIENT_LOCK = threading.Lock()


def client(uri: str):
    """THE MLflow client of ``uri`` (every module asks here; one per URI per process, so its
    store connection and experiment lookups are reused instead of rebuilt per call)."""
    with _CLIENT_LOCK:  # a prewarm thread may be building it: wait for that one, never build two
        return _new_client(uri)


def prewarm(uri: str | None) -> None:
    """Build ``uri``'s client on a daemon thread: importing MLflow and opening (on a new SQLite
    file: migrating) its store take seconds of mostly Python work that overlap Ray's start-up,
    which mostly waits for its own processes. Errors surface later, at the first real use."""
    if uri:
        threading.Thread(target=_quiet_client, args=(uri,), daemon=True).start()


def _quiet_client(uri: str) -> None:
    with contextlib.suppress(Exception):
        client(uri)


@functools.lru_cache(maxsize=8)
def _new_client(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sqlite_fast_commits()
    if uri.startswith(("http://", "https://")):
        databricks_probe_once()
    return MlflowClient(tracking_uri=uri)


@functools.cache
def databricks_probe_once() -> None:
    """Ask once per process whether it runs inside Databricks. MLflow's REST client asks before
    every HTTP request (its Databricks header provider imports ``dbruntime``, ``IPython`` and
    ``pyspark``), and Python does not remember a failed import: each request scanned ``sys.path``
    ~16 times, 1.7-2.7 ms of the driver's CPU of a ~6 ms call (bench/driver_ceiling.py). Outside
    Databricks (no ``dbruntime``) the answer cannot change while the process lives, so the
    provider keeps its first one; inside, nothing changes."""
    import importlib.util

    with contextlib.suppress(Exception):  # a later MLflow without this registry: nothing to do
        if importlib.util.find_spec("dbruntime") is not None:
            return
        from mlflow.tracking.request_header.registry import _request_header_provider_registry

        for provider in _request_header_provider_registry:
            if type(provider).__name__ == "DatabricksRequestHeaderProvider":
                answer = bool(provider.in_context())
                provider.in_context = lambda answer=answer: answer


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside a SQLite DB) if missing."""
    mc = client(uri)
    exp = mc.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mc.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return mc.create_experiment(name, artifact_location=artifact_root_for(uri))


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    experiments: dict[str, str] | None = None,
) -> str:
    """A new RUNNING run with its tags. ``experiments``: experiment ids by name, filled and reused
    (a recorder writing many runs into one experiment looks it up once)."""
    mc = client(uri)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if experiments is None:
        exp_id = experiment_id(uri, experiment)
    else:
        exp_id = experiments.get(experiment) or experiments.setdefault(experiment, experiment_id(uri, experiment))
    run = mc.create_run(exp_id, run_name=run_name, tags=all_tags)
    _ARTIFACT_URIS[run.info.run_id] = run.info.artifact_uri
    return run.info.run_id


# Artifact URIs of runs this process created and has not logged artifacts to yet: the run's
# artifact repository is built from it directly (MlflowClient.log_artifacts fetches the whole run
# again to learn it, a store round trip per run).
_ARTIFACT_URIS: dict[str, str] = {}


def log_blobs(uri: str, run_id: str, blobs: list[tuple[str, str, bytes]]) -> None:
    """Each (folder, name, bytes) as the run's artifact ``folder/name``, from memory: a local
    artifact store gets the files written in place, a remote one each file uploaded from one
    staging folder per thread (a temporary folder per run, made and removed, cost the driver more
    CPU than uploading: bench/driver_ceiling.py)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    art = _ARTIFACT_URIS.pop(run_id, None) or client(uri).get_run(run_id).info.artifact_uri
    repo = get_artifact_repository(art, tracking_uri=uri)
    if isinstance(repo, LocalArtifactRepository):
        for folder, name, blob in blobs:
            target = Path(repo.artifact_dir, folder)
            target.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(blob)
        return
    stage = _staging_folder()
    for folder, name, blob in blobs:
        path = stage / name
        path.write_bytes(blob)
        try:
            repo.log_artifact(str(path), folder or None)
        finally:
            path.unlink(missing_ok=True)


_STAGING = threading.local()


def _staging_folder() -> Path:
    """This thread's folder for files on their way to a remote artifact store (removed at exit)."""
    stage = getattr(_STAGING, "path", None)
    if stage is None:
        import atexit
        import shutil

        stage = _STAGING.path = Path(tempfile.mkdtemp(prefix="lll-artifacts-"))
        atexit.register(shutil.rmtree, stage, ignore_errors=True)
    return stage


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _ARTIFACT_URIS.pop(run_id, None)
    client(uri).set_terminated(run_id, status=status)


def log_ordering_run(
    uri: str,
    run_id: str,
    rmatrix: RMatrix | None,
    params: Mapping[str, Any],
    extra_metrics: Mapping[str, float] | None = None,
    step_metrics: Mapping[str, list[float]] | None = None,
    files: list[tuple[str, str | Path]] | None = None,
    tags: Mapping[str, str] | None = None,
    heatmap: bool = True,
    blobs: list[tuple[str, str, bytes]] | None = None,
) -> None:
    """Record one trained ordering in run ``run_id``: params, ACC/BWT/FWT/forgetting, per-task
    series (``step_metrics``, step = tasks trained so far), R as JSON + heatmap, and ``files``
    (artifact sub-folder, local file) or ``blobs`` (sub-folder, file name, bytes), e.g. checkpoints.

    Two store calls: one ``log_batch``, and the artifacts (R, heatmap, blobs) written from memory
    (:func:`log_blobs`), instead of one call per file. The heatmap PNG is drawn with Pillow
    (:meth:`RMatrix.heatmap_bytes`: milliseconds; matplotlib took three quarters of this
    function's time); ``heatmap=False`` keeps R.json only."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    mc = client(uri)
    now = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), now, 0)
        for k, v in {**(rmatrix.metrics() if rmatrix else {}), **(extra_metrics or {})}.items()
    ]
    for name, series in (step_metrics or {}).items():
        metrics += [Metric(name, float(v), now, step) for step, v in enumerate(series, start=1)]
    mc.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )
    arts = list(blobs or [])
    if rmatrix is not None:
        arts[:0] = [("", "R.json", rmatrix.to_json().encode())]
        if heatmap:
            arts.insert(1, ("", "R.png", rmatrix.heatmap_bytes()))
    if arts:
        log_blobs(uri, run_id, arts)
    for folder, path in files or []:
        mc.log_artifact(run_id, str(path), artifact_path=folder)
