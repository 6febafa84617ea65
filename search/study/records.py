"""Which trial holds an ordering's value, now that one ordering can have several records.

With re-evaluation (``--max-seeds``, search/study/racing.py) an ordering (with its strategy and λ)
gets one more seed as a new trial whose value is the mean over all its seeds so far, so it has
one COMPLETE trial per re-evaluation. Its latest record — the one with the most seeds — is its
value; the records with fewer seeds are stale. Export, validation, the report, TPE
(search/study/tpe.py), the progress line's best (search/study/optuna_bridge.py) and the harvested
affinity evidence (search/graph/evidence.py) all read the latest records through this module. The
pruner (search/study/storage.py) instead compares a running trial with the fresh records
(:func:`fresh_records`): the records on the starting seeds, which hold the per-step values. Without re-evaluation every
trial has the study's seeds, and nothing is dropped (two records of an ordering with as many seeds
each, e.g. TPE suggesting it twice, are both kept, as before).
"""

from __future__ import annotations

from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

REEVALUATE = "lll.reevaluate"  # user attribute of an enqueued re-evaluation: {seed, order, strategy, lambda}

Key = tuple[tuple[str, ...], str, float | None]  # (ordering, strategy, λ)


def record_key(t: FrozenTrial) -> Key | None:
    """(ordering, strategy, λ) of a recorded trial; None for a trial lll has not recorded."""
    a = t.user_attrs
    if a.get("order") is None:
        return None
    return tuple(a["order"]), a.get("strategy"), a.get("lambda")


def n_seeds(t: FrozenTrial) -> int:
    return len(t.user_attrs.get("seeds") or []) or 1


def is_reevaluation(t: FrozenTrial) -> bool:
    """A trial enqueued to add one seed to an ordering already recorded (search/study/racing.py);
    it keeps the tag when it is recovered on resume (search/study/outcome.py ``end_trial``)."""
    return REEVALUATE in t.user_attrs


def fresh_records(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that evaluated their ordering afresh, on the study's starting seeds, in the given
    order: every trial but the re-evaluations. Only these report a running value after each task
    (a re-evaluation is never pruned, so it reports none), and a new trial runs on those same seeds:
    they are what the pruner compares it with. Without re-evaluation: every trial."""
    return [t for t in trials if not is_reevaluation(t)]


def latest_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Each ordering's latest record, in the given order: the trials with the most seeds of their
    (ordering, strategy, λ); the records with fewer seeds are dropped, trials lll has not recorded
    are kept."""
    trials = list(trials)
    most: dict[Key, int] = {}
    for t in trials:
        k = record_key(t)
        if k is not None:
            most[k] = max(most.get(k, 0), n_seeds(t))
    return [t for t in trials if (k := record_key(t)) is None or n_seeds(t) == most[k]]


def model_view(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials a sampler should learn from, in the given order: one observation per ordering.
    COMPLETE trials are reduced to each ordering's latest record; a re-evaluation still running is
    left out (its ordering is already observed: as a constant-liar point it would count the
    incumbent once more, as a bad value); everything else is kept as it is."""
    trials = list(trials)
    keep = {id(t) for t in latest_trials(t for t in trials if t.state == TrialState.COMPLETE)}
    return [
        t
        for t in trials
        if (t.state != TrialState.COMPLETE or id(t) in keep)
        and not (t.state == TrialState.RUNNING and is_reevaluation(t))
    ]


def reevaluated(latest: Iterable[FrozenTrial], start_seeds: int) -> int:
    """How many of these latest records were re-evaluated: more seeds than a search starts with."""
    return sum(n_seeds(t) > start_seeds for t in latest)
