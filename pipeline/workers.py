"""Ray worker actors: long-lived learners that hold the task pool and a prefix cache in memory.

A worker is given work as batches of units (:meth:`TrialWorker.train_units`, pipeline/units.py),
each one task-training over the prefix tree, trained by the same :class:`UnitRunner` as ``lll run``;
compatible units stack into one model up to the worker's population K (lockstep), which changes
speed, never a result. The driver reports each task's accuracy to Optuna and prunes between tasks.
Workers never write to the tracking store: they return R, sizes and checkpoint bytes, and the
driver records them (SQLite allows one writer).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import torch

from pipeline.cpu_kernels import capability
from pipeline.lockstep import choose_population
from pipeline.prefix import MemoryPrefixCache
from pipeline.train import pick_device
from pipeline.units import Unit, UnitRunner
from tasks import pool_cache
from tasks.errors import LLLError
from tasks.pool import PoolSpec, TaskPool, build_pool

#: Intra-op threads of a worker with the default one CPU, and of `lll run`: a result can depend on the
#: thread count (the CNN's kernels round differently with more threads), so both use the same.
WORKER_THREADS = 1


class TrialWorker:
    """Plain class; the driver wraps it with ``ray.remote(...)`` and its resource options."""

    def __init__(
        self,
        pool_spec_json: str,
        data_dir: str | None = None,
        download: bool = False,
        cache_bytes: int = 1 << 30,
        threads: int = WORKER_THREADS,
        population: int | str = "auto",
        device: str = "auto",
        pool_fingerprint: str | None = None,
    ) -> None:
        """``population``: how many compatible units to train at once as one stacked model (K);
        ``"auto"`` picks K from free memory; 1 stacks nothing. K changes speed, not results.
        ``device``: the run's --device, so ``--device cpu`` on a GPU host sizes K for the CPU and
        ``info`` reports where training really runs. ``pool_fingerprint``: the pool the driver built
        and saved (tasks/pool_cache.py); loaded from that file when this machine has it, else built."""
        torch.set_num_threads(max(1, int(threads)))
        spec = PoolSpec.model_validate_json(pool_spec_json)
        cached = pool_cache.load(spec, pool_fingerprint)
        self.pool: TaskPool = cached or build_pool(spec, data_dir, download)
        self.pool_from_cache = cached is not None
        # train_units always caches (pinning its last results even past a tiny budget).
        self.unit_cache = MemoryPrefixCache(max(0, cache_bytes))
        try:
            self.device = pick_device(device)
        except LLLError:  # no GPU on this node: each unit fails with that one-line error when trained
            self.device = torch.device("cpu")
        self.population, self.population_note = choose_population(population, self.device)
        self.units = UnitRunner(self.pool, self.unit_cache, self.population)

    def info(self) -> dict[str, Any]:
        """Where this worker runs: Ray node id and IP, host, pid, device, and the GPU share Ray gave it."""
        node_id, node_ip, gpus = "local", "127.0.0.1", 0.0
        try:
            import ray

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
                node_ip = ray.util.get_node_ip_address()
                gpus = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
        except Exception:  # outside Ray (tests call the class directly)
            pass
        return {
            "population": self.population,
            "population_note": self.units.trainer.note or self.population_note,
            "node_id": node_id,
            "node_ip": node_ip,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device.type,
            "cpu_kernels": capability(),  # pipeline/cpu_kernels.py: AVX2 on every x86 node unless chosen
            "gpus": gpus,  # --gpus-per-worker as Ray assigned it to this actor
            "pool_fingerprint": self.pool.fingerprint(),
            "pool_from_cache": self.pool_from_cache,
        }

    def train_units(self, units: list[Unit]) -> list[dict[str, Any]]:
        """Train each unit (order[-1] on top of the state after order[:-1]); one dict per unit, in order:

        ``rows`` (accuracy on every pool task after each prefix 0..len(order)), ``row`` (= rows[-1]),
        ``sizes`` (params / stored bytes after each task), ``lam``, ``trained`` (task-trainings run
        for it: 1, more if its prefix had to be rebuilt, 0 if it was cached), ``reused`` (1 if its
        prefix came from the cache), ``seconds``, ``checkpoint`` (bytes or None) and ``error``
        (None, or why it failed: the other keys are then empty). A unit never raises.
        """
        return self.units.train(list(units))

    def cache_stats(self) -> dict[str, int]:
        c = self.unit_cache
        return {"entries": len(c), "bytes": c.bytes, "hits": c.hits}
