"""The unit table: every unit of work somebody asked for, and who waits for it.

Split from :mod:`search.study.scheduler` so that the bookkeeping (no Ray, no workers) stands on its
own. A unit (pipeline/units.py: train ``order[-1]`` from the state after ``order[:-1]``) is asked for
on behalf of *jobs* (any hashable owner: a trial, an affinity seed). The table makes sure that a unit
asked for by several jobs is trained once (the others wait on it), a unit already trained is answered
from the table, and a unit whose parent prefix is still being trained waits for it instead of
training it a second time elsewhere; lost units are charged to their jobs and queued again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pipeline.units import Unit

UnitKey = tuple  # (strategy_json, train_json, seed, order)


def unit_key(u: Unit, order: tuple[str, ...] | None = None) -> UnitKey:
    return (u.strategy_json, u.train_json, u.seed, u.order if order is None else order)


def parent_key(u: Unit) -> UnitKey | None:
    return unit_key(u, u.order[:-1]) if len(u.order) > 1 else None


@dataclass
class Pending:
    """A unit somebody waits for: who (job → wants a checkpoint), and how many tries it took."""

    unit: Unit
    waiters: dict[Hashable, bool] = field(default_factory=dict)
    seq: int = 0  # submission order, the last tie-break
    solo: bool = False  # was in a batch whose worker died: sent alone from now on, to find the culprit


@dataclass
class Event:
    """What :meth:`search.study.scheduler.Scheduler.poll` reports: ``result`` (the worker's dict) or
    ``failure`` (reason)."""

    job: Hashable
    unit: Unit
    result: dict[str, Any] | None = None
    failure: str | None = None
    node: dict[str, Any] = field(default_factory=dict)  # the worker's info (node id/IP, device)


class UnitTable:
    """Every unit somebody asked for: queued (``ready``), waiting for its parent (``blocked``),
    in flight, or finished (``memo``); and the :class:`Event` s for the jobs that wait on them."""

    def __init__(self, memo: bool = True) -> None:
        self.memo_on = memo
        self.pending: dict[UnitKey, Pending] = {}  # asked for, not finished (queued or in flight)
        self.ready: dict[UnitKey, Pending] = {}  # dispatchable now
        self.blocked: dict[UnitKey, list[UnitKey]] = {}  # parent key → children waiting for it
        self.memo: dict[UnitKey, dict[str, Any]] = {}  # finished units (without checkpoint bytes)
        self.attempts: dict[Hashable, int] = {}  # job → workers lost while it was in flight
        self.events: list[Event] = []
        self.seq = 0

    def submit(self, unit: Unit, job: Hashable) -> None:
        """``job`` needs ``unit``'s result; it comes back as an :class:`Event`."""
        key = unit_key(unit)
        done = self.memo.get(key)
        if done is not None and (not unit.keep_checkpoint or done.get("checkpoint") is not None):
            self.events.append(Event(job, unit, {**done, "trained": 0, "reused": 1, "seconds": 0.0}))
            return
        p = self.pending.get(key) if self.memo_on else None
        if p is not None:
            p.waiters[job] = p.waiters.get(job, False) or unit.keep_checkpoint
            return
        self.seq += 1
        p = Pending(unit, {job: unit.keep_checkpoint}, self.seq)
        if not self.memo_on:  # every submission is its own unit (prefix cache off)
            key = (*key, self.seq)
        self.pending[key] = p
        parent = parent_key(unit)
        if self.memo_on and parent is not None and parent in self.pending:
            self.blocked.setdefault(parent, []).append(key)
        else:
            self.ready[key] = p

    def cancel(self, job: Hashable) -> None:
        """Forget ``job``: its queued units are dropped unless another job waits for them."""
        for key, p in list(self.ready.items()):
            p.waiters.pop(job, None)
            if not p.waiters:
                del self.ready[key]
                self.pending.pop(key, None)
                self._release_children(key)
        self.events = [e for e in self.events if e.job != job]

    def cached_len(self, unit: Unit) -> int:
        """How many tasks of ``unit``'s ordering are already trained (answered without training)."""
        n = 0
        while n < len(unit.order) and unit_key(unit, unit.order[: n + 1]) in self.memo:
            n += 1
        return n

    def take_events(self) -> list[Event]:
        """What finished since the last call."""
        out, self.events = self.events, []
        return out

    def finished(self, key: UnitKey, res: dict[str, Any], node: dict[str, Any]) -> None:
        """A worker's answer for one unit: an event for every job waiting on it. The first waiter
        is credited with the training; the others got it for free (``trained`` 0, ``reused`` 1)."""
        p = self.pending.pop(key)
        if res.get("error"):
            self.failed(key, p, str(res["error"]), node)
            return
        ckpt = res.get("checkpoint")
        if self.memo_on:
            self.memo[key] = {**res, "checkpoint": None}
        shared = {**res, "trained": 0, "reused": 1, "seconds": 0.0}
        for n, (job, wants) in enumerate(p.waiters.items()):
            if wants and ckpt is None:  # joined after it was sent: ask again (the worker's cache answers)
                self.submit(dataclasses.replace(p.unit, keep_checkpoint=True), job)
                continue
            got = {**(res if n == 0 else shared), "checkpoint": ckpt if wants else None}
            self.events.append(Event(job, p.unit, got, None, node))
        self._release_children(key)

    def failed(self, key: UnitKey, p: Pending, reason: str, node: dict[str, Any]) -> None:
        for job in p.waiters:
            self.events.append(Event(job, p.unit, None, reason, node))
        self._release_children(key)

    def lost(self, key: UnitKey, why: str, max_retries: int, charged: dict[Hashable, bool] | None = None) -> int:
        """The unit's worker died: charge each waiting job one attempt (once per lost batch:
        ``charged`` maps the jobs charged so far to whether they gave up), fail those past
        ``max_retries``, queue the unit again (alone from now on) for the rest — behind its parent
        when that was lost too; returns the retries."""
        charged = {} if charged is None else charged
        p = self.pending[key]
        p.solo = True
        retries = 0
        for job in list(p.waiters):
            if job not in charged:
                n = self.attempts[job] = self.attempts.get(job, 0) + 1
                charged[job] = n > max_retries
                if charged[job]:
                    reason = f"worker lost {n} times ({why}); gave up after {max_retries} retries"
                    self.events.append(Event(job, p.unit, None, reason, {}))
                else:
                    retries += 1
            if charged[job]:
                del p.waiters[job]
        parent = parent_key(p.unit)
        if p.waiters and self.memo_on and parent is not None and parent in self.pending:
            self.blocked.setdefault(parent, []).append(key)
        elif p.waiters:
            self.ready[key] = p
        else:
            del self.pending[key]
            self._release_children(key)
        return retries

    def _release_children(self, key: UnitKey) -> None:
        for child in self.blocked.pop(key, []):
            if child in self.pending:
                self.ready[child] = self.pending[child]
