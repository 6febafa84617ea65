"""The one scheduler: units of work (task-trainings over the prefix tree) → Ray worker actors.

Search trials, ``--exhaustive`` enumeration and affinity measurement all hand this module *units*
(pipeline/units.py: train ``order[-1]`` from the state after ``order[:-1]``) on behalf of *jobs*
(any hashable owner: a trial, an affinity seed). The scheduler

* keeps one table of units (:mod:`search.study.unit_table`: a unit asked for by several jobs is
  trained once, a trained one is answered from the table, a child waits for its parent prefix);
* gives a free worker up to K ready units per call (K = the worker's population: lockstep
  members): first the units whose prefix it holds longest, deepest first (so caches stay bounded:
  the tree is walked depth-first-ish, not level by level, and siblings go out together), then a
  fair share of units nobody holds; a unit whose prefix another worker holds waits for that worker
  unless that worker has a backlog of two or more (then the idle one steals the shallowest);
* replaces a lost worker (process or node) and retries its units: a job is retried at most
  ``max_retries`` times, then failed with the reason; the units of a lost batch are sent alone
  from then on, so one unit that kills its worker does not take its batch-mates down with it; a
  unit's own error fails its jobs.

It never blocks on one worker: :meth:`Scheduler.poll` waits on all calls in flight at once.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pipeline.units import Unit
from pipeline.workers import TrialWorker
from search.study.unit_table import Event, UnitKey, UnitTable, unit_key
from tasks.errors import LLLError

BOOT_GRACE = 30.0  # seconds to wait for every worker to boot before the first dispatch


@dataclass
class WorkerSpec:
    """How to start a worker actor (the arguments of :class:`pipeline.workers.TrialWorker`)."""

    pool_spec_json: str
    data_dir: str | None = None
    download: bool = False
    cache_bytes: int = 1 << 30
    cpus: float = 1.0
    gpus: float = 0.0
    population: int | str = "auto"
    device: str = "auto"
    pool_fingerprint: str | None = None  # the driver saved the pool under it (tasks/pool_cache.py)

    def start(self) -> Any:
        import ray

        remote = ray.remote(TrialWorker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)
        threads = max(1, math.floor(self.cpus))
        return remote.remote(
            self.pool_spec_json,
            self.data_dir,
            self.download,
            self.cache_bytes,
            threads,
            self.population,
            self.device,
            self.pool_fingerprint,
        )


_EARLY: list[tuple[WorkerSpec, Any]] = []  # actors started ahead of their scheduler (start_early)


def start_early(spec: WorkerSpec, n: int) -> None:
    """Start ``n`` worker actors now, so that they boot (import torch, load the pool) while the
    driver is still creating its study and MLflow run; the next :class:`Scheduler` with an equal
    spec adopts them instead of starting its own."""
    _EARLY.extend((spec, spec.start()) for _ in range(n))


def drop_early() -> None:
    """Forget actors nobody adopted (Ray is shutting down, they go with it)."""
    _EARLY.clear()


def _adopt(spec: WorkerSpec) -> Any | None:
    for i, (s, actor) in enumerate(_EARLY):
        if s == spec:
            del _EARLY[i]
            return actor
    return None


@dataclass
class Slot:
    """One worker actor: where it runs (``info``, None while it boots), what it is training, and
    which prefixes it holds (claimed when dispatched, so other workers keep off them)."""

    actor: Any
    info: dict[str, Any] | None = None
    batch: list[Unit] | None = None
    held: set[UnitKey] = field(default_factory=set)

    @property
    def population(self) -> int:
        return max(1, int((self.info or {}).get("population", 1)))

    def held_len(self, u: Unit) -> int:
        """Length of the longest prefix of ``u``'s parent this worker holds."""
        for i in range(len(u.order) - 1, 0, -1):
            if unit_key(u, u.order[:i]) in self.held:
                return i
        return 0


LOST = (
    "RayActorError",
    "WorkerCrashedError",
    "ObjectLostError",
    "OwnerDiedError",
    "ActorDiedError",
    "ActorUnavailableError",
    "NodeDiedError",
)


class Scheduler:
    """Units → workers. ``submit`` what jobs need; ``poll`` for what finished; ``close`` at the end."""

    def __init__(self, spec: WorkerSpec, workers: int, max_retries: int = 2, memo: bool = True) -> None:
        self.spec, self.n_workers, self.max_retries = spec, workers, max_retries
        self.table = UnitTable(memo)
        self.slots: list[Slot] = []
        self.inflight: dict[Any, tuple[int, str]] = {}  # ray future → (slot index, "info" | "units")
        self.batch_keys: dict[int, list[UnitKey]] = {}  # slot index → keys of the units it trains
        self.retried = 0
        self.deaths_in_a_row = 0
        self.started = time.monotonic()
        self.turn = 0
        self.timing = {"idle": 0.0, "busy": 0.0}  # seconds in poll: blocked on ray.wait, all of it

    # ---- workers -----------------------------------------------------------------------------
    def start(self) -> None:
        self.started = time.monotonic()
        for _ in range(self.n_workers):
            self.slots.append(Slot(_adopt(self.spec) or self.spec.start()))
            self._boot(len(self.slots) - 1)

    @property
    def booted(self) -> bool:
        """Every worker has started (or BOOT_GRACE passed): units may go out."""
        return all(s.info is not None for s in self.slots) or time.monotonic() - self.started >= BOOT_GRACE

    def _boot(self, idx: int) -> None:
        self.inflight[self.slots[idx].actor.info.remote()] = (idx, "info")

    def infos(self) -> list[dict[str, Any]]:
        return [s.info for s in self.slots if s.info is not None]

    def close(self) -> None:
        import ray

        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        self.slots, self.inflight = [], {}

    def submit(self, unit: Unit, job: Hashable) -> None:
        """``job`` needs ``unit``'s result; it comes back as an :class:`Event` from :meth:`poll`."""
        self.table.submit(unit, job)

    def cancel(self, job: Hashable) -> None:
        self.table.cancel(job)

    # ---- dispatch ----------------------------------------------------------------------------
    def pick(self, idx: int) -> list[UnitKey]:
        """The ready units worker ``idx`` should train next (empty: nothing it should take now).

        1. Units whose prefix this worker holds longest (it holds more of it than any other
           worker), deepest first — depth-first keeps caches bounded — up to K;
        2. then units nobody holds (new trials, the tree's first level); 1 and 2 together at most
           a fair share of the ready units when other workers are idle too.
        3. Nothing of its own: steal from a busy worker's backlog only when that backlog has at
           least two units (siblings with the shallowest prefix first: the cheapest to rebuild);
           a lone unit, or one an idle worker holds, waits for the worker that holds its prefix.
        """
        slot = self.slots[idx]
        k = slot.population
        mine, unheld, others_ = [], [], []
        for key, p in self.table.ready.items():
            here = slot.held_len(p.unit)
            others = [(s.held_len(p.unit), s) for s in self.slots if s is not slot]
            there, holder = max(others, key=lambda t: t[0], default=(0, None))
            if here > 0 and here >= there:
                mine.append((-here, -len(p.unit.order), p.seq, key))
            elif here == 0 and there == 0:
                unheld.append((p.seq, key))
            elif holder is not None and holder.batch is not None:  # only a busy worker's backlog is stolen
                others_.append((len(p.unit.order), p.seq, key))
        idle = sum(1 for s in self.slots if s.batch is None)  # this one included
        cap = min(k, -(-len(self.table.ready) // max(1, idle)))  # leave idle workers their share
        batch = [key for *_, key in sorted(mine)[:cap]]
        batch += [key for _, key in sorted(unheld)[: cap - len(batch)]]
        if not batch and len(others_) >= 2:
            batch = [key for *_, key in sorted(others_)[: min(k, len(others_) // 2)]]
        solo = [key for key in batch if self.table.ready[key].solo]
        return solo[:1] or batch

    def dispatch(self) -> None:
        """Give every idle, booted worker its next batch. Nothing goes out until every worker has
        booted (or BOOT_GRACE seconds passed): the first to boot would otherwise take a short
        search alone while a remote node still loads its pool."""
        if not self.booted:
            return
        n = len(self.slots)
        self.turn += 1  # idle workers take turns at going first, so ties spread over workers
        for idx in ((self.turn + i) % n for i in range(n)):
            slot = self.slots[idx]
            if slot.info is None or slot.batch is not None:
                continue
            keys = self.pick(idx)
            if not keys:
                continue
            units = []
            keys = self._with_descendants(keys, slot.population)
            for key in keys:
                p = self.table.ready.pop(key, None) or self.table.pending[key]
                keep = any(p.waiters.values())
                units.append(Unit(p.unit.order, p.unit.strategy_json, p.unit.train_json, p.unit.seed, keep))
                slot.held.update(unit_key(p.unit, p.unit.order[:i]) for i in range(1, len(p.unit.order) + 1))
            slot.batch = units
            self.inflight[slot.actor.train_units.remote(units)] = (idx, "units")
            self.batch_keys[idx] = keys

    def _with_descendants(self, keys: list[UnitKey], k: int) -> list[UnitKey]:
        """``keys`` and the units waiting for them (a trial that cannot be pruned submits its whole
        ordering at once: each prefix waits for the one before), level by level, at most ``k`` per
        level, parents first: the worker trains a whole ordering in one request, and a lockstep
        round still stacks at most K. Solo units (from a lost batch) go out alone."""
        if any(self.table.pending[key].solo for key in keys):
            return keys
        out, level = list(keys), list(keys)
        while level:
            children = []
            for parent in level:
                waiting = self.table.blocked.get(parent, [])
                while waiting and len(children) < k:
                    child = waiting.pop(0)
                    if child in self.table.pending and not self.table.pending[child].solo:
                        children.append(child)
                if not waiting:
                    self.table.blocked.pop(parent, None)
            out += children
            level = children
        return out

    # ---- results out -------------------------------------------------------------------------
    def poll(self, timeout: float = 1.0) -> list[Event]:
        """Dispatch, wait up to ``timeout`` s for any worker call, and return what finished."""
        import ray

        t0 = time.perf_counter()
        self.dispatch()
        if not self.table.events and self.inflight:
            futures = list(self.inflight)
            t1 = time.perf_counter()
            ready, _ = ray.wait(futures, num_returns=1, timeout=timeout)
            self.timing["idle"] += time.perf_counter() - t1
            if ready and len(futures) > 1:  # and every other call that is done by now, in one go
                ready, _ = ray.wait(futures, num_returns=len(futures), timeout=0)
            for fut in ready:
                idx, kind = self.inflight.pop(fut)
                try:
                    res = ray.get(fut)
                except Exception as exc:
                    self._call_failed(idx, kind, exc)
                    continue
                self.deaths_in_a_row = 0
                if kind == "info":
                    self.slots[idx].info = res
                else:
                    self._finished(idx, res)
            self.dispatch()
        self.timing["busy"] += time.perf_counter() - t0  # minus idle: dispatching and taking results
        return self.table.take_events()

    def _finished(self, idx: int, results: list[dict[str, Any]]) -> None:
        slot = self.slots[idx]
        keys = self.batch_keys.pop(idx)
        slot.batch = None
        for key, res in zip(keys, results, strict=True):
            self.table.finished(key, res, slot.info or {})

    def _call_failed(self, idx: int, kind: str, exc: BaseException) -> None:
        """A call raised: a lost worker (replace it, retry its units) or a bug in the call (fail them)."""
        import ray

        slot = self.slots[idx]
        keys = self.batch_keys.pop(idx, []) if kind == "units" else []
        cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None else exc
        lost = type(exc).__name__ in LOST or isinstance(exc, ray.exceptions.RayActorError)
        if not lost:
            slot.batch = None
            reason = f"{type(cause).__name__}: {str(cause)[:500]}"
            for key in keys:
                self.table.failed(key, self.table.pending.pop(key), reason, slot.info or {})
            return
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > self.n_workers * (self.max_retries + 2):
            raise LLLError(
                f"workers keep dying ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                "check the workers' logs (ray logs) and the pool's data dir on every node"
            )
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        self.inflight = {f: v for f, v in self.inflight.items() if v[0] != idx}
        self.slots[idx] = Slot(self.spec.start())
        self._boot(idx)
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        charged: dict[Hashable, bool] = {}
        for key in keys:  # parents first: a lost child waits for its parent again
            self.retried += self.table.lost(key, why, self.max_retries, charged)
