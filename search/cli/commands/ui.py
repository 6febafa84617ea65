"""`lll ui`: the MLflow UI on the store a study used."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from search.cli.commands.common import LLLError, err, open_study, out
from search.cli.options import StorageWithStudy

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow ui`` command and environment `lll ui` runs.

    The store URI goes through the environment (MLFLOW_BACKEND_STORE_URI), not argv, so a database
    password never shows in ``ps``; MLflow's background job runners (not used by lll) stay off,
    which saves seven processes and half the start-up time."""
    import os
    import shutil

    exe = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return [exe, "ui", "--host", host, "--port", str(port), "--workers", "1"], env


def ui_store(study: str | None, storage: str, tracking_uri: str | None) -> str:
    """The tracking store to browse: --tracking-uri, else the one the study logged to, else the default."""
    from pipeline.tracking import DEFAULT_TRACKING_URI, mask_url, sqlite_path

    uri = tracking_uri
    if study is not None and uri is None:
        from search.study.storage import study_settings

        settings = study_settings(open_study(study, storage))
        if settings.tracking_uri_masked:
            raise LLLError(
                f"study {study!r} logged to {settings.tracking_uri}, which needs a password; "
                "pass it with --tracking-uri"
            )
        if not settings.tracking_uri:
            raise LLLError(f"study {study!r} was run without MLflow tracking; there are no runs to browse")
        uri = settings.tracking_uri
    uri = uri or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if db is not None and not db.expanduser().is_file():
        raise LLLError(
            f"no MLflow store at {db} (from {mask_url(uri)}); run `lll ui` in the folder the search ran in, "
            "or pass --tracking-uri sqlite:///PATH/mlflow.db"
        )
    return uri


def study_runs_url(uri: str, study: str, host: str, port: int) -> str:
    """The UI page listing a study's runs. MLflow 3 opens on its GenAI view unless asked for the
    model-training one (``workflowType=machine_learning``), where runs are."""
    from pipeline.tracking import client

    exp = client(uri).get_experiment_by_name(study)
    page = f"#/experiments/{exp.experiment_id}/runs" if exp is not None else "#/experiments"
    return f"http://{host}:{port}/{page}?workflowType=machine_learning"


def ui(
    study: Annotated[str | None, typer.Option(help="Open the MLflow store this study logged to")] = None,
    storage: StorageWithStudy = "journal:///optuna.journal",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store [default: sqlite:///mlflow.db]")] = None,
    host: Annotated[str, typer.Option(help="Bind address (127.0.0.1 keeps it private)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 5000,
) -> None:
    """Open the MLflow UI on the store a study used (default: the embedded sqlite:///mlflow.db)."""
    import socket
    import subprocess

    from pipeline.tracking import mask_url

    uri = ui_store(study, storage, tracking_uri)
    if uri.startswith(("http://", "https://")):
        out.print(f"study runs are on the tracking server: open {mask_url(uri)} in a browser", markup=False)
        return
    try:  # a busy port fails here, in one line, not in a uvicorn traceback
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        raise LLLError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from None
    if host not in LOOPBACK:
        err.print(
            f"warning: the MLflow UI on {host} is reachable from other machines and has no login; "
            "prefer --host 127.0.0.1 with an SSH tunnel",
            markup=False,
        )
    cmd, env = ui_command(uri, host, port)
    out.print(f"MLflow UI for {mask_url(uri)} at http://{host}:{port} (Ctrl-C to stop)", markup=False, soft_wrap=True)
    if study is not None:
        out.print(f"runs of study {study}: {study_runs_url(uri, study, host, port)}", markup=False, soft_wrap=True)
    try:
        raise SystemExit(subprocess.call(cmd, env=env))
    except FileNotFoundError:
        raise LLLError("the `mlflow` command is not installed in this environment; pip install mlflow") from None
