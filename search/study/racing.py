"""Re-evaluation during a search (issue 19): the driver's book of per-seed results, and what it asks
the racing rules of :mod:`search.propose.intensify`.

An ordering (with its strategy and λ) starts on ``--seeds`` seeds. While re-evaluation stays within
its share of the evaluations, the driver asks :meth:`SeedBook.next` which ordering gets one more seed
(up to ``--max-seeds``): a challenger while it can still beat the incumbent on their shared seeds, else
the incumbent. The incumbent is the best posterior mean when the study uses the model sampler, else
the best seed mean. A re-evaluation is an Optuna trial enqueued with the ordering's own parameters and
the user attribute ``lll.reevaluate`` (its seed); it trains only that seed, and its value is the mean
over *all* the ordering's seeds so far (:func:`combine`). The latest record of an ordering — the trial
with the most seeds — is its value (:func:`search.study.records.latest_trials`).

Everything the book holds is rebuilt from the study's finished trials, so a search resumed after
SIGKILL takes up the race where it was and never trains a finished seed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.rmatrix import RMatrix
from pipeline.strategies import strategy_class
from search.orders.space import Candidate
from search.propose.intensify import Racing, may_reevaluate, next_reevaluation
from search.study.outcome import PER_SEED_KEYS, TrialOutcome
from search.study.records import REEVALUATE
from search.study.settings import StudySettings

Key = tuple[tuple[str, ...], str, float | None]  # (ordering, strategy, λ)
SHARE = 0.2  # the largest part of the evaluations re-evaluation may take (measured: defaults_grid)
Z = 1.0  # a challenger stays in the race while its paired gap + Z standard errors is above 0


@dataclass
class Record:
    """The latest record of one ordering: its per-seed metrics and mean R over all its seeds."""

    params: dict[str, Any]  # the Optuna params that ask for this candidate again
    per_seed: dict[int, dict[str, float]]  # seed → {acc, bwt, fwt, forgetting}
    R: np.ndarray | None  # mean over the seeds
    number: int  # the Optuna trial that holds it
    run_id: str | None = None  # its MLflow run

    @property
    def seeds(self) -> list[int]:
        return list(self.per_seed)


def key_of(attrs: dict[str, Any]) -> Key:
    return tuple(attrs["order"]), attrs["strategy"], attrs.get("lambda")


def candidate_key(c: Candidate) -> Key:
    """A candidate's key as its records hold it: λ None is the strategy's default, as trained."""
    lam = c.strategy.lam if c.strategy.lam is not None else strategy_class(c.strategy.name).default_lam
    return tuple(c.order), c.strategy.name, lam


def reevaluation_request(key: Key, seed: int) -> dict[str, Any]:
    """The user attribute ``lll.reevaluate`` of a re-evaluation: which ordering, which seed."""
    return {"seed": seed, "order": list(key[0]), "strategy": key[1], "lambda": key[2]}


def per_seed_keys(seeds: list[int], rmats: list[RMatrix]) -> dict[str, float]:
    """The metrics ``acc_seed<s>``, ``bwt_seed<s>``, ... of freshly trained seeds."""
    out = {}
    for s, r in zip(seeds, rmats, strict=True):
        out.update({f"{k}_seed{s}": float(getattr(r, k)()) for k in PER_SEED_KEYS})
    return out


def combine(prior: Record, seeds: list[int], rmats: list[RMatrix]) -> tuple[np.ndarray, dict[str, float]]:
    """(mean R, metrics) over the prior's seeds and the new ones: each metric the mean of its per-seed
    values in seed order (what `lll run --seeds` prints), the std of ACC and BWT, per-seed metrics."""
    per_seed = {**prior.per_seed}
    for s, r in zip(seeds, rmats, strict=True):
        per_seed[s] = {k: float(getattr(r, k)()) for k in PER_SEED_KEYS}
    order = sorted(per_seed)
    metrics = {k: float(np.mean([per_seed[s][k] for s in order])) for k in PER_SEED_KEYS}
    metrics.update({f"{k}_std": float(np.std([per_seed[s][k] for s in order])) for k in ("acc", "bwt")})
    metrics.update({f"{k}_seed{s}": per_seed[s][k] for s in order for k in PER_SEED_KEYS})
    n_prior = len(prior.per_seed)
    total = np.asarray(prior.R) * n_prior + sum(r.values for r in rmats)
    return total / (n_prior + len(rmats)), metrics


class SeedBook:
    """Per ordering, the latest record; which (ordering, seed) to train next."""

    def __init__(self, study: optuna.Study, settings: StudySettings) -> None:
        self.settings = settings
        self.on = settings.racing
        self.plan = Racing(settings.seeds, settings.max_seeds or settings.seeds, SHARE, Z)
        self.value_key = "bwt" if settings.objective == "bwt" else "acc"
        self.records: dict[Key, Record] = {}
        self.enqueued: set[tuple[Key, int]] = set()  # re-evaluations enqueued, not yet asked
        self.gave_up: set[Key] = set()  # a re-evaluation failed: no more seeds for it
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._load(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            req = t.user_attrs.get(REEVALUATE)
            if req:
                self.enqueued.add((key_of(req), int(req["seed"])))

    def _load(self, t: FrozenTrial) -> None:
        a = t.user_attrs
        if "seed_metrics" not in a or a.get("R") is None:
            return  # a study older than re-evaluation: its per-seed values are not stored
        per_seed = {int(s): dict(m) for s, m in a["seed_metrics"].items()}
        self._keep(key_of(a), Record(dict(t.params), per_seed, np.array(a["R"]), t.number, a.get("mlflow_run_id")))

    def _keep(self, key: Key, rec: Record) -> None:
        """The record with the most seeds is the ordering's value (ties: the later trial)."""
        old = self.records.get(key)
        if old is None or (len(rec.per_seed), rec.number) >= (len(old.per_seed), old.number):
            self.records[key] = rec

    def prior(self, key: Key) -> Record | None:
        return self.records.get(key)

    def note(self, o: TrialOutcome, params: dict[str, Any]) -> None:
        """A complete outcome (built, not yet written): the ordering's latest record from now on."""
        from search.study.outcome import per_seed_metrics

        if o.R is None:
            return
        rec = Record(dict(params), per_seed_metrics(o.metrics), o.R.values, o.number)
        self._keep((o.order, o.strategy.name, o.lam), rec)

    def written(self, o: TrialOutcome, run_id: str | None) -> None:
        rec = self.records.get((o.order, o.strategy.name, o.lam))
        if rec is not None and rec.number == o.number:
            rec.run_id = run_id

    # ---- the race ----------------------------------------------------------------------------
    def results(self) -> dict[Key, dict[int, float]]:
        v = self.value_key
        return {k: {s: m[v] for s, m in r.per_seed.items()} for k, r in self.records.items() if k not in self.gave_up}

    def next(self, study: optuna.Study, busy: set[tuple[Key, int]]) -> tuple[Key, int] | None:
        """The (ordering, seed) to re-evaluate now, or None (off, over its share, nothing worth it)."""
        if not self.on:
            return None
        results = self.results()
        busy = busy | self.enqueued
        if not results:
            return None
        start = set(self.settings.seed_list)
        evals = sum(len(v) for v in results.values()) + len(busy)
        reevals = sum(len(set(v) - start) for v in results.values()) + len(busy)
        if not may_reevaluate(evals, reevals, self.plan):
            return None
        score, noise_sd = scores(study, results)
        pick = next_reevaluation(results, score, self.plan, noise_sd, self.settings.all_seeds, busy)
        if pick is None:
            return None
        # Not yet while another of its seeds is training: a re-evaluation adds its seed to the
        # ordering's latest record, which that one is about to replace. (A record still on its way to
        # MLflow is fine: the recorder writes in order and names it when it writes the re-evaluation.)
        if any(k == pick[0] for k, _ in busy):
            return None
        return pick

    def seed_for_repeat(self, key: Key, busy: set[tuple[Key, int]]) -> int | None:
        """The sampler proposed an ordering already recorded (a small pool's orderings all tried,
        or a sampler that repeats): the next seed it was not trained on, so that the trial measures
        something new rather than retrain a seed bit for bit. None with racing off, with every seed
        ``--max-seeds`` allows already trained, or while one of its seeds is training."""
        if not self.on or key in self.gave_up or key not in self.records:
            return None
        if any(k == key for k, _ in busy | self.enqueued):
            return None
        left = [s for s in self.settings.all_seeds if s not in self.records[key].per_seed]
        return left[0] if left else None

    def enqueue(self, study: optuna.Study, key: Key, seed: int) -> None:
        """Enqueue the re-evaluation: the ordering's own params, and which seed it trains."""
        study.enqueue_trial(self.records[key].params, user_attrs={REEVALUATE: reevaluation_request(key, seed)})
        self.enqueued.add((key, seed))


def model_scores(study: optuna.Study, keys: list[Key]) -> tuple[dict[Key, float], float] | None:
    """The model sampler's posterior mean of each (ordering, strategy, λ) — the ordering's posterior
    plus its strategy's mean offset when several strategies are searched — and one seed's noise sd;
    None when the study does not use the model sampler or nothing has finished."""
    from search.propose.sampler import PermutationSampler

    sampler = study.sampler
    if not isinstance(sampler, PermutationSampler):
        return None
    got = sampler.observations(study)
    fitted = sampler.fit(study, None, got) if got[0] is not None else None
    if fitted is None:
        return None
    post = fitted.posterior(sorted({k[0] for k in keys}))
    by_strategy: dict[str, list[float]] = {}
    for block, c in got[0].offsets.items():
        if isinstance(block, tuple) and block and isinstance(block[0], str):
            by_strategy.setdefault(block[0], []).append(c)
    offset = {s: float(np.mean(v)) for s, v in by_strategy.items()}
    return {k: post[k[0]][0] + offset.get(k[1], 0.0) for k in keys}, float(fitted.noise_sd)


def posterior_of(study: optuna.Study):
    """What validation ranks its top K by (``validation.Posterior``): the model sampler's posterior
    mean of each (ordering, strategy, λ); None when the study does not use the model sampler."""
    from search.propose.sampler import PermutationSampler

    if not isinstance(study.sampler, PermutationSampler):
        return None

    def rank(keys: list[Key]) -> dict[Key, float] | None:
        got = model_scores(study, list(keys))
        return got[0] if got is not None else None

    return rank


def scores(study: optuna.Study, results: dict[Key, dict[int, float]]) -> tuple[dict[Key, float], float]:
    """(score of each ordering, one seed's noise sd): the model sampler's posterior when it has one,
    else the seed mean and the noise of the additive seed fit (0 before any ordering has two seeds)."""
    from search.propose.observations import fit_additive

    got = model_scores(study, list(results))
    if got is not None:
        return got
    score = {k: float(np.mean(list(v.values()))) for k, v in results.items()}
    noise = fit_additive({k: dict(v) for k, v in results.items()}).noise_sd
    return score, noise or 0.0
