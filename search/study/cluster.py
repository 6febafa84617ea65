"""Connecting to Ray: the embedded local default, or an existing cluster, failing fast."""

from __future__ import annotations

import logging
import os
import socket

from tasks.errors import LLLError


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (exit 2, before any training) when a Ray head is not listening at ``address``."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LLLError(f"--ray-address {address!r} must look like HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise LLLError(
            f"no Ray head reachable at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` or fix --ray-address"
        ) from None


def runtime_env() -> dict | None:
    """The user's task and model modules (imported so far through ``module:function``), shipped
    to every worker as ``py_modules``: the same factories then import on a cluster whose nodes do
    not have the user's files. None when there is nothing to ship."""
    from tasks.user_code import shipped_modules

    modules = shipped_modules()
    return {"py_modules": modules} if modules else None


def check_gpus(gpus_per_worker: float, resources: dict[str, float] | None = None) -> None:
    """Fail fast when workers ask for more GPU than this machine (or, given its ``resources``, the
    cluster) has, before Ray starts and before a study is created."""
    if gpus_per_worker <= 0:
        return
    if resources is None:
        import torch

        have, where = float(torch.cuda.device_count()), "this machine"
    else:
        have, where = resources.get("GPU", 0.0), "the Ray cluster"
    if have < gpus_per_worker:
        raise LLLError(
            f"--gpus-per-worker {gpus_per_worker:g} but {where} has {have:g} GPUs; "
            "drop the flag to train on CPUs (or join a cluster with GPUs via --ray-address)"
        )


def connect(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """``ray.init`` on this machine (address None) or join a cluster; returns cluster resources.

    Locally Ray stays on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) without a dashboard.
    Call it after the pool is built and a ``--model module:function`` imported: their modules are
    shipped to the workers (:func:`runtime_env`).
    """
    if not address:  # a local Ray stays on 127.0.0.1 (and refuses other nodes)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    env = runtime_env()
    if address:
        check_address(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, runtime_env=env)
        except Exception as exc:  # auth token refused, version mismatch, ...
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise LLLError(
                f"could not join the Ray cluster at {address}: {first}; check RAY_AUTH_TOKEN and that "
                "the cluster runs the same Ray and Python versions"
            ) from None
    else:
        ray.init(
            address="local",  # always a fresh embedded instance, never someone's running cluster
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            object_store_memory=200 * 1024 * 1024,
            runtime_env=env,
        )
    return ray.cluster_resources()


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
