"""`--sampler tpe` (and the model sampler's TPE for strategy and λ) with one observation per ordering.

Optuna's TPE learns from every COMPLETE trial. With re-evaluation (``--max-seeds``) an ordering has
one COMPLETE trial per re-evaluation, so TPE would count it two or three times, with its stale
fewer-seed values. :class:`LatestRecordTPESampler` hands TPE a view of the study that holds each
ordering's latest record only (:func:`search.study.records.model_view`) and otherwise *is* the
study: the same storage, study id and trial cache, so the constant liar still writes its relative
parameters to the real trial, and anything TPE reads goes through the view. It reads its trials
through ``Study._get_trials`` (Optuna 4 and 5; ``get_trials`` and ``trials`` call it too), the one
method the view overrides; tests/test_latest_record.py fails if a future Optuna reads around it.

Without re-evaluation the view holds every trial in the same order, so TPE's suggestions are
bit-identical to a plain :class:`optuna.samplers.TPESampler` with the same arguments (tested).
The search space is inferred from the whole study: a re-evaluation has its ordering's parameters.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from search.study.records import model_view


class LatestRecordView(optuna.Study):
    """The study as a sampler should see it: each ordering's latest record, no running
    re-evaluation. Shares the study's state (no ``Study.__init__``: nothing is opened again)."""

    def __init__(self, study: optuna.Study) -> None:
        self.__dict__.update(vars(study))

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        return model_view(super()._get_trials(deepcopy, states, use_cache))


class LatestRecordTPESampler(optuna.samplers.TPESampler):
    """TPESampler whose model sees one observation per (ordering, strategy, λ): its latest record."""

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(LatestRecordView(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return super().sample_independent(LatestRecordView(study), trial, param_name, param_distribution)
