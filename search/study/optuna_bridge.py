"""The Optuna side of a search driver: candidates in (ask), units out, pruning, results back (tell).

A trial is a root-to-leaf path over the prefix tree. Its seeds advance together, one task at a
time: step i is one unit per seed (``order[:i]``), sent as one batch, so the seeds of one trial
can train as lockstep members. After each step the running objective (mean over the seeds) is
reported to Optuna at step i−1, which may prune the trial before its next task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from pipeline.rmatrix import RMatrix
from pipeline.units import Unit
from search.orders.lehmer import all_orderings
from search.orders.space import Candidate
from search.study.journal import batched
from search.study.outcome import State, TrialOutcome, end_trial, objective_values, trial_attrs
from search.study.racing import REEVALUATE, Record, candidate_key, combine, per_seed_keys, reevaluation_request
from search.study.recording import seed_metrics
from search.study.records import latest_trials
from search.study.settings import StudySettings
from search.study.storage import finished_trials

BEST_LABEL = {"acc": "best ACC trial", "bwt": "best BWT trial", "both": "best-ACC Pareto trial"}


@dataclass(eq=False)
class TrialRun:
    """A trial in flight: its candidate, and per seed the rows and results measured so far."""

    trial: optuna.Trial
    candidate: Candidate
    seeds: list[int]
    step: int = 0  # tasks every seed has finished
    rows: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    last: dict[int, dict[str, Any]] = field(default_factory=dict)  # per seed, the latest unit result
    early: dict[int, dict[int, tuple]] = field(default_factory=dict)  # per seed, step → a result not taken yet
    checkpoints: dict[int, list[bytes]] = field(default_factory=dict)
    trained: int = 0
    reused: int = 0
    rebuilt: int = 0
    seconds: float = 0.0
    node: dict[str, Any] = field(default_factory=dict)
    state: str = "running"  # running → recording → done
    submitted: int = 0  # tasks of the ordering whose units were handed out
    reevaluate: dict[str, Any] | None = None  # a re-evaluation: {seed, order, strategy, lambda} (racing.py)
    prior: Record | None = None  # a re-evaluation: the ordering's record it adds its seed to
    identity: tuple = ()  # (ordering, strategy JSON, seeds): identical candidates share every unit

    def __post_init__(self) -> None:
        self.identity = (tuple(self.candidate.order), self.candidate.strategy.model_dump_json(), tuple(self.seeds))

    def rmatrices(self) -> list[RMatrix]:
        return [RMatrix.from_rows(self.candidate.order, self.rows[s]) for s in self.seeds if s in self.rows]


class OptunaBridge:
    """Ask, turn candidates into units, report for pruning, build the outcome, tell. Knows Optuna,
    not Ray or MLflow."""

    def __init__(self, study: optuna.Study, settings: StudySettings) -> None:
        self.study, self.settings = study, settings
        self.space = settings.space()
        self.objective, self.prune = settings.objective, settings.prune
        self.seeds, self.checkpoints = settings.seed_list, settings.checkpoints
        self.train_json = settings.train.model_dump_json()
        self.T = len(self.space.tasks) if self.space.fixed_order is None else len(self.space.fixed_order)
        self.best: dict[str, Any] | None = None  # the best latest record's attrs (progress line)
        # Nothing can stop a trial between tasks (no pruning): hand out its whole ordering at once.
        self.whole = False

    def ask(self) -> TrialRun:
        trial = self.study.ask()
        req = trial.user_attrs.get(REEVALUATE)
        if req:  # an enqueued re-evaluation: the ordering's own params, one more seed
            return TrialRun(trial, self.space.suggest(trial), [int(req["seed"])], reevaluate=dict(req))
        return TrialRun(trial, self.space.suggest(trial), list(self.seeds))

    def as_reevaluation(self, run: TrialRun, seed: int) -> TrialRun:
        """The asked trial, turned into a re-evaluation on ``seed`` (what an enqueued one is: the
        user attribute names the seed, so a resumed search knows it)."""
        req = reevaluation_request(candidate_key(run.candidate), seed)
        run.trial.set_user_attr(REEVALUATE, req)
        return TrialRun(run.trial, run.candidate, [seed], reevaluate=req)

    def units(self, run: TrialRun) -> list[Unit]:
        """The next step's units, one per seed; with ``whole``, every remaining step's (each prefix
        its own unit, so the prefix tree is still shared and each returns its own row/checkpoint)."""
        T = len(run.candidate.order)
        end = T if self.whole else run.step + 1
        sj = run.identity[1]
        out = []
        for n in range(max(run.step, run.submitted) + 1, end + 1):
            keep = self.checkpoints == "all" or (self.checkpoints == "final" and n == T)
            out += [Unit(tuple(run.candidate.order[:n]), sj, self.train_json, s, keep) for s in run.seeds]
        run.submitted = max(run.submitted, end)
        return out

    def take(self, run: TrialRun, seed: int, res: dict[str, Any], node: dict[str, Any]) -> bool:
        """Keep one seed's unit result; True once every seed has finished the next step.

        Results are taken in step order whatever order they arrive in: a trial that submitted its
        whole ordering can get a later prefix first (it joined units an identical trial had in
        flight, while its first prefix, finished before without the checkpoint it wants, trains
        again). A result is known by its row count: the unit of step n returns rows 0..n."""
        run.early.setdefault(seed, {})[len(res["rows"]) - 1] = (res, node)
        advanced = False
        while all(run.step + 1 in run.early.get(s, {}) for s in run.seeds):
            for s in run.seeds:
                self._apply(run, s, *run.early[s].pop(run.step + 1))
            run.step += 1
            advanced = True
        return advanced

    @staticmethod
    def _apply(run: TrialRun, seed: int, res: dict[str, Any], node: dict[str, Any]) -> None:
        run.rows[seed] = list(res["rows"])
        run.last[seed] = res
        if res.get("checkpoint") is not None:
            run.checkpoints.setdefault(seed, []).append(res["checkpoint"])
        trained = int(res.get("trained", 0))
        run.trained += min(trained, 1)  # this task of the trial: trained, or reused (answered from a cache)
        run.reused += int(trained == 0)
        run.rebuilt += max(0, trained - 1)  # its prefix, trained again on a worker that did not hold it
        run.seconds += float(res.get("seconds", 0.0))
        run.node = node or run.node

    def remaining(self, run: TrialRun) -> int:
        """Task-trainings this trial still has to run (what pruning it now saves)."""
        return (len(run.candidate.order) - run.step) * len(run.seeds)

    def should_prune(self, run: TrialRun) -> bool:
        """Report the running objective after this step; True when Optuna says stop."""
        if self.objective == "both" or not self.prune or self.settings.exhaustive or run.reevaluate:
            return False  # a re-evaluation adds a seed to a finished ordering: it is never pruned
        i = run.step
        values = []
        for r in run.rmatrices():
            values.append(r.bwt() if self.objective == "bwt" else float(r.values[i].mean()))
        run.trial.report(float(np.mean(values)), i - 1)
        return i >= 1 and self.remaining(run) > 0 and run.trial.should_prune()

    # ---- the end of a trial ------------------------------------------------------------------
    def outcome(self, run: TrialRun, state: State, reason: str = "") -> TrialOutcome:
        """How ``run`` ended, with everything Optuna and its MLflow record keep."""
        c = run.candidate
        first = run.last.get(run.seeds[0])
        common: dict[str, Any] = dict(
            number=run.trial.number,
            state=state,
            order=tuple(c.order),
            strategy=c.strategy,
            lam=first["lam"] if first else c.strategy.lam,
            seeds=tuple(run.seeds),
            reason=reason,
            node=dict(run.node),
        )
        common.update(value_key="bwt" if self.objective == "bwt" else "acc", trained_seeds=tuple(run.seeds))
        if state == "complete":
            rmats = run.rmatrices()
            if run.prior is not None:  # a re-evaluation: the mean over the ordering's seeds so far
                mean, metrics = combine(run.prior, run.seeds, rmats)
                R = RMatrix(list(c.order), mean)
                common.update(seeds=tuple(sorted({*run.prior.seeds, *run.seeds})))
                common.update(reevaluation_of=run.prior.run_id, reevaluation_of_trial=run.prior.number)
            else:
                R, metrics = RMatrix.mean(rmats), seed_metrics(rmats)
                metrics.update(per_seed_keys(run.seeds, rmats))
            metrics.update(trained=run.trained, reused=run.reused, seconds=run.seconds)
            values = tuple(objective_values(metrics, self.objective))
            return TrialOutcome(
                **common, R=R, metrics=metrics, values=values, per_seed=tuple(rmats),
                sizes=first.get("sizes"), checkpoints=dict(run.checkpoints),
            )  # fmt: skip
        if state == "pruned":
            partial = RMatrix.mean(run.rmatrices())
            metrics = {"running_acc_at_prune": float(partial.values[run.step].mean()), "tasks_done": run.step}
            return TrialOutcome(**common, R=partial, metrics=metrics)
        return TrialOutcome(**common)

    def end(self, run: TrialRun, outcome: TrialOutcome) -> None:
        """Tell Optuna (the one tell path, :func:`end_trial`) and keep the best for the progress line."""
        end_trial(self.study, run.trial, outcome)
        if outcome.state != "complete":
            return
        if self.settings.racing:  # this record may supersede the best one: read again when shown
            self.best = None
        else:
            self.note_best({**trial_attrs(outcome), "number": run.trial.number})

    # ---- best so far (progress) --------------------------------------------------------------
    def note_best(self, attrs: dict[str, Any]) -> None:
        """Keep the best trial by the objective (for ``both``: the best-ACC trial, which is on the
        Pareto front), with its OWN ACC and BWT."""
        key = "bwt" if self.objective == "bwt" else "acc"
        if attrs.get(key) is None:
            return
        if self.best is None or attrs[key] > self.best[key]:
            self.best = {"acc": attrs.get("acc"), "bwt": attrs.get("bwt"), "number": attrs.get("number")}

    def load_best(self) -> None:
        """The best among the study's latest records (search/study/records.py): an ordering
        re-evaluated lower no longer counts at its stale fewer-seed value."""
        self.best = None
        for t in latest_trials(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
            self.note_best({**t.user_attrs, "number": t.number})

    def progress_best(self) -> dict[str, Any] | None:
        """The best for the progress line. Without re-evaluation it is kept as trials end (read
        from the study once); with it, read again from the latest records after a trial ends,
        since a re-evaluation can lower the best ordering's value."""
        if self.best is None:
            self.load_best()
        return self.best

    def enqueue_exhaustive(self, tasks: list[str]) -> None:
        """Enqueue every ordering not yet finished or waiting (one strategy, λ fixed)."""
        done = {tuple(t.user_attrs.get("order", ())) for t in finished_trials(self.study)}
        waiting = set()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            params = t.system_attrs.get("fixed_params") or t.params  # an enqueued trial keeps them here
            waiting.add(tuple(self.space.suggest(optuna.trial.FixedTrial(params)).order))
        strategy = self.space.strategies[0]
        with batched(self.study):  # up to 5,040 trials (7 tasks): one lock, one append
            for order in all_orderings(tasks):
                if tuple(order) not in done and tuple(order) not in waiting:
                    self.study.enqueue_trial(self.space.trial_params(order, strategy, self.space.fixed_lambda))
