"""The search driver: asks Optuna for candidates, hands them to Ray workers, tells results back.

One process drives; long-lived worker actors train. Each candidate is trained one task per actor
call, so the driver reports every task's running accuracy to Optuna and can prune a clearly worse
ordering between tasks. Candidates are asked a little ahead and given to the free worker that
already holds the longest prefix of their ordering in its cache. Every finished trial is recorded
in MLflow (by this process only: SQLite allows one writer) *before* it is told to Optuna, so a
search killed at any moment resumes without losing or repeating a finished trial.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from pipeline import tracking
from pipeline.config import TrainConfig
from pipeline.rmatrix import RMatrix
from pipeline.workers import TrialWorker
from search.ordering import all_orderings, common_prefix
from search.space import Candidate, SearchSpace
from search.study import complete_from_record, finished_trials, mark_interrupted, stale_trials
from tasks.errors import LLLError

warnings.filterwarnings("ignore", message=".*is already reported.*")


@dataclass
class SearchConfig:
    study: str
    storage: str
    tracking_uri: str | None
    experiment: str
    pool_name: str
    pool_spec_json: str
    pool_fingerprint: str
    tasks: list[str]
    space: SearchSpace
    objective: str = "acc"
    trials: int = 30
    time_budget: float | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    seeds: int = 1
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoints: str = "final"
    prune: bool = True
    exhaustive: bool = False
    data_dir: str | None = None
    download: bool = False
    max_retries: int = 2
    cache_bytes: int = 1 << 30


@dataclass
class TrialRun:
    """A candidate in flight: which seed it is on, what it has measured so far."""

    trial: optuna.Trial
    candidate: Candidate
    seeds: list[int]
    seed_idx: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)  # current seed
    results: list[dict[str, Any]] = field(default_factory=list)  # finished seeds
    attempts: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Slot:
    actor: Any
    info: dict[str, Any] | None = None
    busy: TrialRun | None = None
    held: set[tuple] = field(default_factory=set)


@dataclass
class SearchSummary:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    trained: int = 0  # task-trainings run by workers
    reused: int = 0  # task-trainings taken from a worker's prefix cache
    saved_by_pruning: int = 0  # task-trainings not run because a trial was pruned
    recovered: int = 0  # stale trials found already recorded on resume
    requeued: int = 0  # stale trials re-run on resume
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


Progress = Callable[[dict[str, Any]], None]


def running_value(rows: list[dict[str, float]], order: tuple[str, ...], objective: str) -> float:
    """The objective measured on the tasks trained so far (what is reported for pruning)."""
    i = len(rows) - 1
    r = RMatrix(order[:i], [[row[n] for n in order[:i]] for row in rows])
    return r.bwt() if objective == "bwt" else float(r.values[i].mean())


def objective_values(metrics: dict[str, float], objective: str) -> list[float]:
    if objective == "both":
        return [metrics["acc"], metrics["bwt"]]
    return [metrics[objective]]


class SearchDriver:
    def __init__(
        self, cfg: SearchConfig, study: optuna.Study, parent_run_id: str | None, progress: Progress | None = None
    ) -> None:
        self.cfg, self.study, self.parent_run_id, self.progress = cfg, study, parent_run_id, progress
        self.summary = SearchSummary()
        self._best: dict[str, float] | None = None  # best ACC/BWT so far, for the progress line
        self.queue: deque[TrialRun] = deque()  # asked, not started
        self.retry: deque[TrialRun] = deque()
        self.inflight: dict[Any, tuple[int, str, TrialRun | None]] = {}
        self.slots: list[Slot] = []
        self.asked = 0
        self.T = len(cfg.tasks)
        self.seeds = [cfg.seed + k for k in range(cfg.seeds)]
        self.train_json = cfg.train.model_dump_json()
        self.replacements = 0

    # ---- workers -----------------------------------------------------------------------------
    def _new_actor(self):
        import ray

        remote = ray.remote(TrialWorker).options(
            num_cpus=self.cfg.cpus_per_worker, num_gpus=self.cfg.gpus_per_worker, max_restarts=0
        )
        threads = max(1, math.floor(self.cfg.cpus_per_worker))
        return remote.remote(
            self.cfg.pool_spec_json, self.cfg.data_dir, self.cfg.download, self.cfg.cache_bytes, threads
        )

    def _boot(self, idx: int) -> None:
        slot = self.slots[idx]
        self.inflight[slot.actor.info.remote()] = (idx, "info", None)

    # ---- candidates --------------------------------------------------------------------------
    def _budget_left(self) -> int:
        return self.to_run - self.asked

    def _time_left(self) -> bool:
        return self.cfg.time_budget is None or time.perf_counter() - self.t0 < self.cfg.time_budget

    def _ask(self) -> TrialRun:
        trial = self.study.ask()
        self.asked += 1
        cand = self.cfg.space.suggest(trial)
        return TrialRun(trial, cand, list(self.seeds))

    def _fill_queue(self, want: int) -> None:
        while len(self.queue) < want and self._budget_left() > 0 and self._time_left():
            self.queue.append(self._ask())

    def _pick(self, slot: Slot) -> TrialRun | None:
        """The queued candidate this worker is best placed to train: the longest prefix it already
        holds; among equals, the one sharing least with what other workers hold (so prefixes
        spread over workers instead of being trained twice); then the oldest."""
        if self.retry:
            return self.retry.popleft()
        # Exhaustive mode knows every candidate up front: look at all of them.
        self._fill_queue(self.to_run if self.cfg.exhaustive else len(self.slots) + 1)
        if not self.queue:
            return None
        others = [s for s in self.slots if s is not slot]

        def held_by(s: Slot, run: TrialRun) -> int:
            base = (run.candidate.strategy.model_dump_json(), run.seeds[0])
            order = run.candidate.order
            return max((len(p) for b, p in s.held if b == base and common_prefix(p, order) == len(p)), default=0)

        def score(run: TrialRun) -> tuple[int, int]:
            return held_by(slot, run), -max((held_by(s, run) for s in others), default=0)

        best = max(self.queue, key=score)  # ties: the oldest (max keeps the first maximum)
        self.queue.remove(best)
        return best

    # ---- one trial's life on a worker --------------------------------------------------------
    def _start(self, idx: int, run: TrialRun) -> None:
        slot = self.slots[idx]
        slot.busy, run.rows = run, []
        seed = run.seeds[run.seed_idx]
        # Claim the ordering's prefixes now (the worker will hold them), so that other workers
        # prefer candidates that do not repeat this work.
        base = (run.candidate.strategy.model_dump_json(), seed)
        slot.held.update((base, tuple(run.candidate.order[:i])) for i in range(1, self.T + 1))
        fut = slot.actor.start.remote(
            list(run.candidate.order),
            run.candidate.strategy.model_dump_json(),
            self.train_json,
            seed,
            self.cfg.checkpoints,
        )
        self.inflight[fut] = (idx, "start", run)

    def _call(self, idx: int, method: str, run: TrialRun) -> None:
        fut = getattr(self.slots[idx].actor, method).remote()
        self.inflight[fut] = (idx, method, run)

    def _report(self, run: TrialRun, first: int) -> bool:
        """Report the running objective after tasks ``first``..done; True when Optuna says prune."""
        if self.cfg.objective == "both" or not self.cfg.prune or self.cfg.exhaustive:
            return False
        done = len(run.rows) - 1
        for i in range(max(1, first), done + 1):
            value = running_value(run.rows[: i + 1], run.candidate.order, self.cfg.objective)
            run.trial.report(value, run.seed_idx * self.T + i - 1)
        return done >= 1 and run.trial.should_prune()

    def _remaining(self, run: TrialRun) -> int:
        """Task-trainings this trial still has to run (its current seed's rest and later seeds)."""
        return (self.T - (len(run.rows) - 1)) + (len(run.seeds) - run.seed_idx - 1) * self.T

    def _advance(self, idx: int, run: TrialRun, first: int) -> None:
        done = len(run.rows) - 1
        # A trial with nothing left to train is finished, never pruned: pruning would save nothing.
        if self._report(run, first) and self._remaining(run) > 0:
            self._prune(idx, run)
        elif done == self.T:
            self._call(idx, "finish", run)
        else:
            self._call(idx, "step", run)

    def _release(self, idx: int) -> None:
        self.slots[idx].busy = None

    # ---- outcomes ----------------------------------------------------------------------------
    def _tags(self, run: TrialRun, state: str) -> dict[str, str]:
        info = run.info or {}
        return {
            "optuna_study": self.cfg.study,
            "optuna_trial_number": str(run.trial.number),
            "lll.state": state,
            "ray_node_id": str(info.get("node_id", "")),
            "ray_node_ip": str(info.get("node_ip", "")),
            "host": str(info.get("host", "")),
            "device": str(info.get("device", "")),
        }

    def _params(self, run: TrialRun) -> dict[str, Any]:
        c = run.candidate
        lam = run.results[0]["lam"] if run.results else c.strategy.lam
        params = {
            "order": ",".join(c.order),
            "strategy": c.strategy.name,
            "lambda": lam,
            "seeds": ",".join(map(str, run.seeds)),
            "seed": run.seeds[0],
            "pool": self.cfg.pool_name,
            "pool_fingerprint": self.cfg.pool_fingerprint,
            "optuna_trial_number": run.trial.number,
        }
        params.update({f"opt.{k}": v for k, v in c.strategy.options.items()})
        params.update({f"train.{k}": v for k, v in self.cfg.train.model_dump(mode="json").items()})
        return params

    def _log(
        self,
        run: TrialRun,
        rmats: list[RMatrix],
        state: str,
        status: str,
        metrics: dict[str, float],
        extra_tags: dict[str, str] | None = None,
    ) -> str | None:
        if not self.cfg.tracking_uri:
            return None
        uri = self.cfg.tracking_uri
        tags = {**self._tags(run, state), **(extra_tags or {})}
        run_id = tracking.start_run(
            uri,
            self.cfg.experiment,
            f"trial {run.trial.number}: {','.join(run.candidate.order)}",
            tags=tags,
            parent_run_id=self.parent_run_id,
        )
        mean = RMatrix(rmats[0].tasks, np.mean([r.values for r in rmats], axis=0)) if rmats else None
        series: dict[str, list[float]] = {}
        if run.results:
            sizes = run.results[0]["sizes"]
            series["params"] = [s["params"] for s in sizes]
            series["stored_bytes"] = [s["stored_bytes"] for s in sizes]
        if mean is not None:
            series["running_acc"] = [float(mean.values[i, :i].mean()) for i in range(1, mean.T + 1)]
        with tempfile.TemporaryDirectory() as tmp:
            files: list[tuple[str, Path]] = []
            for k, (r, res) in enumerate(zip(rmats, run.results, strict=False)):
                seed_dir = Path(tmp) / f"seed{run.seeds[k]}"
                seed_dir.mkdir()
                if len(rmats) > 1:
                    per_seed = Path(tmp) / f"R_seed{run.seeds[k]}.json"
                    r.to_json(per_seed)
                    files.append(("per_seed", per_seed))
                for j, blob in enumerate(res.get("checkpoints", [])):
                    name = "final.pt" if self.cfg.checkpoints == "final" else f"after_task_{j + 1}.pt"
                    (seed_dir / name).write_bytes(blob)
                    files.append((f"checkpoints/seed{run.seeds[k]}", seed_dir / name))
            tracking.log_ordering_run(
                uri, run_id, mean, self._params(run), extra_metrics=metrics, step_metrics=series, files=files
            )
        tracking.end_run(uri, run_id, status)
        return run_id

    def _complete(self, idx: int, run: TrialRun) -> None:
        rmats = [RMatrix.from_dict(r["R"]) for r in run.results]
        per = {k: [getattr(r, k)() for r in rmats] for k in ("acc", "bwt", "fwt", "forgetting")}
        metrics = {k: float(np.mean(v)) for k, v in per.items()}
        metrics.update({f"{k}_std": float(np.std(v)) for k, v in per.items() if k in ("acc", "bwt")})
        metrics.update(
            trained=sum(r["trained"] for r in run.results),
            reused=sum(r["reused"] for r in run.results),
            seconds=sum(r["seconds"] for r in run.results),
        )
        run_id = self._log(run, rmats, "complete", "FINISHED", metrics)
        mean = RMatrix(rmats[0].tasks, np.mean([r.values for r in rmats], axis=0))
        attrs = {
            "order": list(run.candidate.order),
            "strategy": run.candidate.strategy.name,
            "lambda": run.results[0]["lam"],
            "options": run.candidate.strategy.options,
            "R": mean.values.tolist(),
            "mlflow_run_id": run_id,
            "node_ip": run.info.get("node_ip"),
            **{k: metrics[k] for k in ("acc", "bwt", "fwt", "forgetting", "acc_std", "bwt_std")},
        }
        for k, v in attrs.items():
            run.trial.set_user_attr(k, v)
        self.study.tell(run.trial, objective_values(metrics, self.cfg.objective))
        self._note_best(attrs)
        self.summary.complete += 1
        self.summary.trained += int(metrics["trained"])
        self.summary.reused += int(metrics["reused"])
        self._release(idx)
        self._notify()

    def _prune(self, idx: int, run: TrialRun) -> None:
        done = len(run.rows) - 1
        order = run.candidate.order
        saved = self._remaining(run)
        partial = RMatrix(order[:done], [[row[n] for n in order[:done]] for row in run.rows])
        metrics = {"running_acc_at_prune": float(partial.values[done].mean()), "tasks_done": done}
        self._log(run, [partial], "pruned", "KILLED", metrics)
        run.trial.set_user_attr("order", list(order))
        run.trial.set_user_attr("strategy", run.candidate.strategy.name)
        self.study.tell(run.trial, state=TrialState.PRUNED)
        self.summary.pruned += 1
        self.summary.saved_by_pruning += saved
        self._release(idx)
        self._notify()

    def _fail(self, idx: int | None, run: TrialRun, reason: str) -> None:
        self._log(run, [], "failed", "FAILED", {}, {"fail_reason": reason[:5000]})
        run.trial.set_user_attr("fail_reason", reason)
        run.trial.set_user_attr("order", list(run.candidate.order))
        self.study.tell(run.trial, state=TrialState.FAIL)
        self.summary.failed += 1
        self.summary.failures.append(f"trial {run.trial.number}: {reason}")
        if idx is not None:
            self._release(idx)
        self._notify()

    def _worker_lost(self, idx: int, run: TrialRun | None, exc: BaseException) -> None:
        """A worker process or node died: replace the worker; retry its trial (bounded)."""
        import ray

        self.replacements += 1
        if self.replacements > self.cfg.workers * (self.cfg.max_retries + 2):
            raise LLLError(
                f"workers keep dying ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                "check the workers' logs (ray logs) and the pool's data dir on every node"
            )
        with contextlib.suppress(Exception):
            ray.kill(self.slots[idx].actor, no_restart=True)
        self.slots[idx] = Slot(self._new_actor())
        self._boot(idx)
        if run is None:
            return
        run.attempts += 1
        run.seed_idx, run.results, run.rows = 0, [], []
        if run.attempts <= self.cfg.max_retries:
            self.summary.retried += 1
            self.retry.append(run)
        else:
            self._fail(None, run, f"worker lost {run.attempts} times ({type(exc).__name__}: {str(exc)[:200]})")

    def _note_best(self, attrs: dict[str, Any]) -> None:
        """Keep the best ACC and BWT seen so far (for the progress line) without re-reading the study."""
        if self._best is None:
            return
        for k in ("acc", "bwt"):
            v = attrs.get(k)
            if v is not None and (self._best.get(k) is None or v > self._best[k]):
                self._best[k] = v

    def _notify(self) -> None:
        if self.progress is None:
            return
        if self._best is None:  # read the study once (trials of earlier runs); then kept up to date
            self._best = {}
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                self._note_best(t.user_attrs)
        best_acc, best_bwt = self._best.get("acc"), self._best.get("bwt")
        self.progress(
            {
                "done": self.done_before + self.summary.complete + self.summary.pruned + self.summary.failed,
                "total": self.cfg.trials,
                "best_acc": best_acc,
                "best_bwt": best_bwt,
                "pruned": self.summary.pruned,
                "failed": self.summary.failed,
            }
        )

    # ---- resume ------------------------------------------------------------------------------
    def recover(self) -> None:
        """Settle trials a killed search left RUNNING: complete the ones already recorded in
        MLflow, re-enqueue the rest; mark the killed search's half-written MLflow runs KILLED."""
        recorded: dict[int, Any] = {}
        if self.cfg.tracking_uri and self.parent_run_id:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.cfg.tracking_uri)
            exp = client.get_experiment_by_name(self.cfg.experiment)
            if exp is not None:
                runs = client.search_runs(
                    [exp.experiment_id], f"tags.mlflow.parentRunId = '{self.parent_run_id}'", max_results=50000
                )
                for r in runs:
                    num = int(r.data.tags.get("optuna_trial_number", -1))
                    if r.info.status == "RUNNING":
                        client.set_terminated(r.info.run_id, "KILLED")
                        client.set_tag(r.info.run_id, "lll.state", "interrupted")
                    elif r.info.status == "FINISHED" and r.data.tags.get("lll.state") == "complete":
                        recorded[num] = r
        for t in stale_trials(self.study):
            rec = recorded.get(t.number)
            if rec is not None:
                m = rec.data.metrics
                attrs = {
                    "order": rec.data.params["order"].split(","),
                    "strategy": rec.data.params["strategy"],
                    "mlflow_run_id": rec.info.run_id,
                    **{k: m[k] for k in ("acc", "bwt", "fwt", "forgetting", "acc_std", "bwt_std") if k in m},
                }
                complete_from_record(self.study, t, objective_values(m, self.cfg.objective), attrs)
                self.summary.recovered += 1
            else:
                mark_interrupted(self.study, t)
                if t.params:
                    self.study.enqueue_trial(t.params, skip_if_exists=False)
                    self.summary.requeued += 1

    def _enqueue_exhaustive(self) -> None:
        done = {tuple(t.user_attrs.get("order", ())) for t in finished_trials(self.study)}
        waiting = set()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            c = self.cfg.space
            waiting.add(tuple(c.suggest(optuna.trial.FixedTrial(t.params)).order))
        strategy = self.cfg.space.strategies[0]
        for order in all_orderings(self.cfg.tasks):
            if tuple(order) not in done and tuple(order) not in waiting:
                self.study.enqueue_trial(self.cfg.space.trial_params(order, strategy, self.cfg.space.fixed_lambda))

    # ---- main loop ---------------------------------------------------------------------------
    def run(self) -> SearchSummary:
        import ray

        self.t0 = time.perf_counter()
        self.recover()
        if self.cfg.exhaustive:
            self._enqueue_exhaustive()
        self.done_before = len(finished_trials(self.study))
        self.to_run = max(0, self.cfg.trials - self.done_before)
        self._notify()
        if self.to_run == 0:
            return self.summary
        self.slots = [Slot(self._new_actor()) for _ in range(self.cfg.workers)]
        for i in range(len(self.slots)):
            self._boot(i)

        while self.inflight:
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=5.0)
            for fut in ready:
                idx, kind, run = self.inflight.pop(fut)
                if self.slots[idx].actor is None:
                    continue
                try:
                    res = ray.get(fut)
                except (
                    ray.exceptions.RayActorError,
                    ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError,
                    ray.exceptions.OwnerDiedError,
                ) as exc:
                    self._worker_lost(idx, run, exc)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    if run is not None:
                        self._fail(idx, run, f"{type(exc.cause).__name__}: {str(exc.cause)[:500]}")
                    continue
                self._handle(idx, kind, run, res)
            self._dispatch()
            if self._finished():
                break
        for run in list(self.queue):  # asked ahead but never started (time budget ran out)
            mark_interrupted(self.study, self.study.get_trials(deepcopy=False)[run.trial.number])
        self.summary.seconds = time.perf_counter() - self.t0
        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        return self.summary

    def _finished(self) -> bool:
        """Nothing running and nothing left to start (workers still booting do not count)."""
        if any(s.busy is not None for s in self.slots) or self.retry:
            return False
        return not self.queue and (self._budget_left() <= 0 or not self._time_left())

    def _dispatch(self) -> None:
        """Give every idle, booted worker its next candidate."""
        for idx, slot in enumerate(self.slots):
            if slot.info is None or slot.busy is not None:
                continue
            run = self._pick(slot)
            if run is None:
                break
            run.info = slot.info
            self._start(idx, run)

    def _handle(self, idx: int, kind: str, run: TrialRun | None, res: Any) -> None:
        if kind == "info":
            self.slots[idx].info = res
            return
        assert run is not None
        if isinstance(res, dict) and "error" in res:
            self._fail(idx, run, res["error"])
            return
        if kind == "start":
            run.rows = list(res["rows"])
            self._advance(idx, run, first=1)
        elif kind == "step":
            run.rows.append(res["row"])
            self._advance(idx, run, first=len(run.rows) - 1)
        elif kind == "finish":
            run.results.append(res)
            run.seed_idx += 1
            if run.seed_idx < len(run.seeds):
                self._start(idx, run)
            else:
                self._complete(idx, run)
