"""The search driver: a short loop of ask → units → results → record → tell.

The pieces live in their own modules: the Optuna side (ask/tell, pruning) in
:mod:`search.study.optuna_bridge`, the units-to-workers side (prefix affinity, lockstep batches,
retries, lost workers) in :mod:`search.study.scheduler`, the MLflow writes in :mod:`search.study.recording`
(on background threads, off the critical path: :mod:`search.study.recorder`) and the recovery of a killed search in
:mod:`search.study.resume`. Every finished trial is recorded in MLflow *before* it is told to Optuna,
so a search killed at any moment resumes without losing or repeating a finished trial.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from pipeline.faults import fault_point
from pipeline.units import Unit
from search.study.journal import batched
from search.study.optuna_bridge import BEST_LABEL, OptunaBridge, TrialRun
from search.study.outcome import State, TrialOutcome
from search.study.racing import SeedBook, candidate_key, key_of
from search.study.recorder import Recorder
from search.study.recording import StudyContext, trial_record
from search.study.resume import recover
from search.study.scheduler import Scheduler, WorkerSpec
from search.study.settings import StudySettings
from search.study.storage import finished_trials
from search.study.unit_table import Event
from tasks.errors import LLLError

warnings.filterwarnings("ignore", message=".*is already reported.*")

HEARTBEAT = 5.0  # seconds between progress callbacks when nothing finishes
ASK_CHUNK = 8  # trials asked per turn of the loop


@dataclass(frozen=True)
class Resources:
    """How one run of a study uses the cluster and the clock. Not stored with the study (that is
    :class:`StudySettings`): a resumed study may run on other machines, for another budget."""

    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    cache_bytes: int = 1 << 30  # per-worker prefix cache; 0 disables it
    download: bool = False
    time_budget: float | None = None  # seconds from the driver's start
    max_retries: int = 2
    tracking_uri: str | None = None  # the unmasked URI this run records to (None: no MLflow)


@dataclass
class SearchSummary:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    trained: int = 0  # task-trainings run by workers
    reused: int = 0  # task-trainings taken from a worker's prefix cache
    rebuilt: int = 0  # extra task-trainings: a prefix trained again on a worker that did not hold it
    saved_by_pruning: int = 0  # task-trainings not run because a trial was pruned
    reevaluated: int = 0  # complete re-evaluations: one more seed for a promising ordering (racing.py)
    recovered: int = 0  # stale trials found already recorded on resume
    requeued: int = 0  # stale trials re-run on resume
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)  # each worker's info (device, population K)
    # driver seconds: startup (command start → workers ready), ask, tell, wait, record (thread), close
    timing: dict[str, float] = field(default_factory=dict)
    validation: dict[str, Any] | None = None  # held-out validation at the end (search/study/validation.py)


Progress = Callable[[dict[str, Any]], None]


def worker_spec(settings: StudySettings, r: Resources) -> WorkerSpec:
    """How this search's worker actors start (launch.py starts them early with the same spec)."""
    return WorkerSpec(
        settings.pool_spec, settings.data_dir, r.download, r.cache_bytes, r.cpus_per_worker, r.gpus_per_worker,
        settings.population, settings.train.device, settings.pool_fingerprint,
    )  # fmt: skip


class SearchDriver:
    def __init__(
        self,
        settings: StudySettings,
        resources: Resources,
        study: optuna.Study,
        parent_run_id: str | None,
        progress: Progress | None = None,
    ) -> None:
        self.settings, self.res, self.study, self.parent_run_id = settings, resources, study, parent_run_id
        self.progress = progress
        self.summary = SearchSummary()
        self.bridge = OptunaBridge(study, settings)
        r = resources
        self.sched = Scheduler(worker_spec(settings, r), r.workers, r.max_retries, memo=r.cache_bytes > 0)
        # One request per ordering when nothing prunes (its prefixes wait on each other in the unit table).
        no_prune = settings.exhaustive or settings.objective == "both" or not settings.prune
        self.bridge.whole = no_prune and r.cache_bytes > 0
        self.recorder = Recorder(r.tracking_uri)
        self.ctx = StudyContext(study.study_name, parent_run_id, settings)
        self.queue: list[TrialRun] = []  # asked, not started
        self.finishing: list[tuple[tuple, Any]] = []  # ended this turn: (token, record) for the recorder
        self.active: list[TrialRun] = []  # started, not yet told
        self.t0 = time.perf_counter()
        self.last_note = 0.0
        self.asked = 0
        self.to_run = 0
        self.done_before = 0
        self.book: SeedBook | None = None  # per-seed results and the race (re-evaluation), set in run()

    # ---- budget ------------------------------------------------------------------------------
    def _time_left(self) -> bool:
        budget = self.res.time_budget
        return budget is None or time.perf_counter() - self.t0 < budget

    def _fill(self) -> None:
        """Ask ahead and start trials. Exhaustive: every trial, ASK_CHUNK per turn (workers get
        their first units while the rest are asked). Otherwise one running trial per worker, as
        many asked ahead, and a free worker's next trial is the queued one with the longest
        prefix already trained (the unit table answers that prefix without training)."""
        exhaustive, workers = self.settings.exhaustive, self.res.workers
        cap = self.to_run if exhaustive else workers
        # Identical candidates (same ordering, strategy and λ) share every unit: they count once.
        running = {r.identity for r in self.active if r.state == "running"}
        want = workers + 1 if not exhaustive else min(cap - len(running), ASK_CHUNK)
        if len(self.queue) < want and self.asked < self.to_run:
            with batched(self.study):  # the turn's asks: one lock, one append (search/study/journal.py)
                while len(self.queue) < want and self.asked < self.to_run and self._time_left():
                    t0 = time.perf_counter()
                    self._race()
                    run = self._repeat_as_reevaluation(self.bridge.ask())
                    if run.reevaluate and self.book is not None:
                        self.book.enqueued.discard((key_of(run.reevaluate), run.seeds[0]))
                    self.queue.append(run)
                    self.asked += 1
                    self._clock("ask", t0)
                t0 = time.perf_counter()
            self._clock("ask", t0)  # the batch's one write
        while len(running) < cap and self.queue:
            run = max(self.queue, key=self._cached)
            self.queue.remove(run)
            self.active.append(run)
            running.add(run.identity)
            self._next(run)

    def _race(self) -> None:
        """Re-evaluation: enqueue one more seed for a promising ordering when the race says so."""
        if self.book is None or not self.book.on:
            return
        pick = self.book.next(self.study, self._reevaluating())
        if pick is not None:
            self.book.enqueue(self.study, *pick)

    def _reevaluating(self) -> set[tuple]:
        """(ordering key, seed) of every re-evaluation asked and not yet ended."""
        return {(key_of(r.reevaluate), r.seeds[0]) for r in self.queue + self.active if r.reevaluate}

    def _repeat_as_reevaluation(self, run: TrialRun) -> TrialRun:
        """A new trial that repeats a recorded ordering trains its next seed instead (racing on)."""
        if run.reevaluate or self.book is None:
            return run
        seed = self.book.seed_for_repeat(candidate_key(run.candidate), self._reevaluating())
        return run if seed is None else self.bridge.as_reevaluation(run, seed)

    def _cached(self, run: TrialRun) -> tuple[int, int]:
        """(tasks of the ordering already trained for its first seed, -trial number): what to start first."""
        c = run.candidate
        path = Unit(c.order, run.identity[1], self.bridge.train_json, run.seeds[0])
        return self.sched.table.cached_len(path), -run.trial.number

    def _next(self, run: TrialRun) -> None:
        for unit in self.bridge.units(run):
            self.sched.submit(unit, run)

    # ---- events ------------------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        run: TrialRun = ev.job  # type: ignore[assignment]
        if run.state != "running":
            return  # a seed's unit of a trial already failed or pruned
        if ev.failure is not None:
            run.node = ev.node or run.node
            self._finish(run, "failed", ev.failure)
            return
        if not self.bridge.take(run, ev.unit.seed, ev.result, ev.node):
            return
        if self.bridge.should_prune(run):
            self._finish(run, "pruned")
        elif run.step == len(run.candidate.order):
            self._finish(run, "complete")
        else:
            self._next(run)

    def _finish(self, run: TrialRun, state: State, reason: str = "") -> None:
        """Record the trial in MLflow (background thread, with the others that finish in this turn
        of the loop); Optuna is told once the record is written."""
        self.sched.cancel(run)
        run.state = "recording"
        if run.reevaluate and self.book is not None:
            run.prior = self.book.prior(key_of(run.reevaluate))
        outcome = self.bridge.outcome(run, state, reason)
        if self.book is not None:
            if state == "complete":
                self.book.note(outcome, run.trial.params)
            elif run.reevaluate:
                self.book.gave_up.add(key_of(run.reevaluate))
        self.finishing.append(((run, outcome), trial_record(self.ctx, outcome)))

    def _on_written(self, token: tuple, run_id: str | None, error: str | None, index: int = 0) -> None:
        run, outcome = token
        if error is not None:
            raise LLLError(f"recording trial {run.trial.number} in MLflow failed ({error[:300]}); check --tracking-uri")
        # tests: a kill between MLflow and Optuna (of trial N, of the first re-evaluation, or after the
        # index-th tell of a batch told together)
        fault_point("after_record", trial=run.trial.number, reevaluation=int(bool(run.reevaluate)), index=index)
        t0 = time.perf_counter()
        self.bridge.end(run, replace(outcome, mlflow_run_id=run_id))
        if self.book is not None:
            self.book.written(outcome, run_id)
        self._count(run, outcome)
        run.state = "done"
        self.active.remove(run)
        self._clock("tell", t0)
        self._notify()

    def _count(self, run: TrialRun, outcome: TrialOutcome) -> None:
        s = self.summary
        if outcome.state == "complete":
            s.complete += 1
            s.reevaluated += int(bool(run.reevaluate))
            s.trained += run.trained
            s.reused += run.reused
            s.rebuilt += run.rebuilt
        elif outcome.state == "pruned":
            s.pruned += 1
            s.saved_by_pruning += self.bridge.remaining(run)
        else:
            s.failed += 1
            s.failures.append(f"trial {run.trial.number}: {outcome.reason}")

    def _clock(self, what: str, t0: float) -> None:
        self.summary.timing[what] = self.summary.timing.get(what, 0.0) + time.perf_counter() - t0

    # ---- progress ----------------------------------------------------------------------------
    def _notify(self) -> None:
        self.last_note = time.perf_counter()
        if self.progress is None:
            return
        best = self.bridge.progress_best() or {}
        s = self.summary
        self.progress(
            {
                "done": self.done_before + s.complete + s.pruned + s.failed,
                "total": self.settings.trials,
                "best_acc": best.get("acc"),
                "best_bwt": best.get("bwt"),
                "best_trial": best.get("number"),
                "best_label": BEST_LABEL[self.settings.objective],
                "pruned": s.pruned,
                "failed": s.failed,
                "elapsed": time.perf_counter() - self.t0,
            }
        )

    # ---- main loop ---------------------------------------------------------------------------
    def run(self) -> SearchSummary:
        st = self.settings
        rec = recover(self.study, st, self.res.tracking_uri, self.parent_run_id)
        self.summary.recovered, self.summary.requeued = rec.recovered, rec.requeued
        if st.exhaustive:
            self.bridge.enqueue_exhaustive(list(st.tasks))
            # Every trial is enqueued: TPE's model (fitted on every ask, 0.1-0.25 s each) is not used.
            self.study.sampler = optuna.samplers.RandomSampler(seed=st.seed)
        self.book = SeedBook(self.study, st)
        self.done_before = len(finished_trials(self.study))
        self.to_run = max(0, st.trials - self.done_before)
        self._notify()
        if self.to_run == 0:
            self.recorder.close()
            return self.summary
        self.sched.start()
        try:
            while True:
                self._fill()
                if not self._time_left():
                    self._drop_unstarted()
                t0 = time.perf_counter()
                busy = self.recorder.busy() or (st.exhaustive and self.asked < self.to_run)
                booting = not self.sched.booted
                events = self.sched.poll(timeout=0.05 if busy else 1.0)
                self._clock("boot" if booting else "wait", t0)
                for ev in events:
                    self._on_event(ev)
                self._check_progress(events)
                self.recorder.submit_batch(self.finishing)
                self.finishing = []
                # Nothing in flight but records being written: wait for them here rather than spin
                # (a spinning loop takes the GIL from the recorder thread).
                idle = not events and not self.sched.inflight and self.recorder.busy()
                t0 = time.perf_counter()
                written = self.recorder.done(wait=0.05 if idle else 0.0)
                self._clock("wait", t0)
                if written:
                    with batched(self.study):  # the turn's tells: one append; a kill before it loses
                        for i, w in enumerate(written):  # none of what MLflow holds (resume completes it)
                            self._on_written(w.token, w.run_id, w.error, i)
                        t0 = time.perf_counter()
                    self._clock("tell", t0)  # the batch's one write
                if time.perf_counter() - self.last_note > HEARTBEAT:
                    self._notify()
                if not self.active and not self.queue and (self.asked >= self.to_run or not self._time_left()):
                    break
        finally:
            self.summary.workers = self.sched.infos()
            self.summary.retried = self.sched.retried
            # the scheduler's share of "wait": dispatching and taking results (the rest is idle)
            self.summary.timing["dispatch"] = self.sched.timing["busy"] - self.sched.timing["idle"]
            self.sched.close()
            self.recorder.close()
            self.summary.timing["record"] = self.recorder.seconds  # summed over the writer threads
            self.summary.timing["record_wall"] = self.recorder.wall  # with at least one write in flight
            self.summary.timing["record_cpu"] = self.recorder.cpu  # the driver's CPU in them
        self.summary.seconds = time.perf_counter() - self.t0
        return self.summary

    def _check_progress(self, events: list) -> None:
        """A running trial that no unit in the table will ever answer would spin this loop for
        ever: fail loudly instead (a scheduler bug; the study keeps everything told so far)."""
        s = self.sched
        if events or s.inflight or s.table.ready or s.table.events or not s.booted:
            return
        stuck = [r.trial.number for r in self.active if r.state == "running"]
        if stuck:
            raise LLLError(
                f"trials {stuck} wait for results no worker will send (a scheduler bug; please report it); "
                "what finished is recorded: continue with --resume"
            )

    def _drop_unstarted(self) -> None:
        """Time is up: trials asked ahead that were never started go back to the study, unrun."""
        for run in self.queue:
            self.bridge.end(run, self.bridge.outcome(run, "interrupted"))
        self.queue = []
