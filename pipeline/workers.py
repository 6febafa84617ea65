"""Ray worker actors: long-lived learners that hold the task pool and a prefix cache in memory.

Two ways to give a worker work, sharing one training code path (pipeline/runner.py):

* :meth:`TrialWorker.train_units` — a batch of units (pipeline/units.py), each one task-training
  over the prefix tree; compatible units are trained together as one stacked model when the worker
  runs a population (lockstep, pipeline/lockstep.py).
* ``start`` → ``step``… → ``finish`` — one ordering, one task per call.

Either way the driver can report each task's accuracy to Optuna and prune between tasks. Workers
never write to the tracking store: they return R, sizes and checkpoint bytes, and the driver
records them (SQLite allows one writer).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import torch

from pipeline.checkpoint import checkpoint_bytes
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.lockstep import LockstepTrainer, choose_population
from pipeline.runner import MemoryPrefixCache, SequenceRun
from pipeline.train import TrainingDiverged, pick_device
from pipeline.units import Unit, UnitRunner
from tasks import pool_cache
from tasks.errors import LLLError
from tasks.pool import PoolSpec, TaskPool, build_pool


class TrialWorker:
    """Plain class; the driver wraps it with ``ray.remote(...)`` and its resource options."""

    def __init__(
        self,
        pool_spec_json: str,
        data_dir: str | None = None,
        download: bool = False,
        cache_bytes: int = 1 << 30,
        threads: int = 1,
        population: int | str = "auto",
        device: str = "auto",
        pool_fingerprint: str | None = None,
    ) -> None:
        """``population``: how many compatible units to train at once as one stacked model (K);
        ``"auto"`` picks K from free memory, 1 trains one model at a time (today's path).
        ``device``: the run's --device, so ``--device cpu`` on a GPU host sizes K for the CPU and
        ``info`` reports where training really runs. ``pool_fingerprint``: the pool the driver built
        and saved (tasks/pool_cache.py); loaded from that file when this machine has it, else built."""
        torch.set_num_threads(max(1, int(threads)))
        spec = PoolSpec.model_validate_json(pool_spec_json)
        cached = pool_cache.load(spec, pool_fingerprint)
        self.pool: TaskPool = cached or build_pool(spec, data_dir, download)
        self.pool_from_cache = cached is not None
        # train_units always caches (pinning its last results even past a tiny budget); the
        # start/step path keeps its old meaning of cache_bytes <= 0: no cache at all.
        self.unit_cache = MemoryPrefixCache(max(0, cache_bytes))
        self.cache = self.unit_cache if cache_bytes > 0 else None
        try:
            self.device = pick_device(device)
        except LLLError:  # no GPU on this node: each unit fails with that one-line error when trained
            self.device = torch.device("cpu")
        self.population, self.population_note = choose_population(population, self.device)
        # population 1: one model at a time, bit for bit what `lll run` gives. Otherwise every unit
        # whose strategy has a stacked loop trains in lockstep — even alone (K=1), so a state never
        # depends on how units happened to be grouped (lockstep results do not depend on K).
        self.lockstep = LockstepTrainer(self.pool, self.population) if self.population > 1 else None
        self.units = UnitRunner(self.pool, self.unit_cache, self.lockstep)
        self.run: SequenceRun | None = None
        self.checkpoints: list[bytes] = []
        self.keep: str = "final"

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
            "population_note": (self.lockstep.note if self.lockstep and self.lockstep.note else self.population_note),
            "node_id": node_id,
            "node_ip": node_ip,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device.type,
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

    def start(
        self, order: list[str], strategy_json: str, train_json: str, seed: int, checkpoints: str = "final"
    ) -> dict[str, Any]:
        """Set up one ordering; returns the rows already known from the cache (``done`` tasks)."""
        try:
            self.run = SequenceRun(
                self.pool,
                order,
                StrategyConfig.model_validate_json(strategy_json),
                TrainConfig.model_validate_json(train_json),
                seed,
                self.cache,
            )
        except LLLError as exc:
            return {"error": str(exc)}
        self.keep, self.checkpoints = checkpoints, []
        return {"done": self.run.done, "rows": self.run.rows}

    def step(self) -> dict[str, Any]:
        """Train the next task; ``{"row": ...}`` or ``{"error": reason}`` (e.g. diverged)."""
        assert self.run is not None, "start() first"
        try:
            row = self.run.step()
        except (TrainingDiverged, LLLError) as exc:
            self.run = None
            return {"error": str(exc)}
        if self.keep == "all":
            self.checkpoints.append(checkpoint_bytes(self.run.model, self.run.strategy, {"after": self.run.done}))
        return {"row": row, "done": self.run.done}

    def finish(self) -> dict[str, Any]:
        """R, sizes, counts, and the checkpoints asked for (bytes)."""
        assert self.run is not None and self.run.finished, "step() to the end first"
        result = self.run.result()
        ckpts = list(self.checkpoints)
        if self.keep == "final" or (self.keep == "all" and not ckpts):
            ckpts = [checkpoint_bytes(result.model, result.strategy, {"after": self.run.done})]
        if self.keep == "none":
            ckpts = []
        self.run, self.checkpoints = None, []
        return {
            "R": result.rmatrix.to_dict(),
            "sizes": result.sizes,
            "trained": result.trained,
            "reused": result.reused,
            "seconds": result.seconds,
            "checkpoints": ckpts,
            "lam": result.strategy.lam,
        }

    def cache_stats(self) -> dict[str, int]:
        c = self.unit_cache
        return {"entries": len(c), "bytes": c.bytes, "hits": c.hits}
