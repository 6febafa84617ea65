"""The Optuna side of a search: storage, study creation/resume, and what a study remembers.

A study stores its own settings (:class:`search.study.settings.StudySettings`: pool spec,
strategies, objective, seeds, training config, where its MLflow runs live) as user attributes, so
``lll search --study NAME --resume``, ``lll export`` and ``lll report`` need nothing but the study
name and storage. Everything here uses Optuna's public API only.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.study import get_all_study_names
from optuna.trial import FrozenTrial, TrialState

from pipeline.tracking import mask_url, sqlite_fast_commits
from search.study.journal import SCHEME as JOURNAL_SCHEME
from search.study.journal import open_journal
from search.study.records import fresh_records, is_reevaluation
from search.study.settings import StudySettings
from tasks.errors import LLLError

DEFAULT_STORAGE = "journal:///optuna.journal"  # search/study/journal.py: the fast embedded storage
LEGACY_STORAGE = "sqlite:///optuna.db"  # the default before the journal: its studies still load
INTERRUPTED = "interrupted"  # fail reason of trials a killed search left running

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str, study: str | None = None) -> optuna.storages.BaseStorage:
    """The storage of ``url``, checked now so that a bad URL fails before any training:
    ``journal:///FILE`` (search/study/journal.py), else an RDB storage (SQLite, PostgreSQL).

    With the default URL and the name of a ``study`` to load that only the old default
    ``optuna.db`` holds (a study from before the journal), that file's storage."""
    if not url.startswith(JOURNAL_SCHEME):
        return _open_rdb(url)
    try:
        storage = open_journal(url)
    except (OSError, ValueError) as exc:
        raise LLLError(f"Optuna storage {url} cannot be opened ({exc}); check --storage") from None
    legacy = Path(LEGACY_STORAGE[len("sqlite:///") :])
    if study and url == DEFAULT_STORAGE and legacy.is_file() and study not in get_all_study_names(storage):
        old = _open_rdb(LEGACY_STORAGE)
        if study in get_all_study_names(old):
            return old
    return storage


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
        sqlite_fast_commits()
    else:
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}} if "postgres" in url else {}
    try:
        # Commands creating the same fresh SQLite file at once race for the schema: the losers see
        # a locked database or the winner's rows (IntegrityError); by the retry the schema exists.
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as exc:
                racing = type(exc).__name__ in ("OperationalError", "IntegrityError")
                if not url.startswith("sqlite") or not racing or attempt == 4:
                    raise
                time.sleep(0.3 * (attempt + 1))
        raise AssertionError("unreachable")
    except ImportError as exc:
        raise LLLError(
            f"the database driver for {mask_url(url)} is not installed ({exc.name}); pip install it"
        ) from None
    except Exception as exc:
        raise LLLError(
            f"Optuna storage {mask_url(url)} is unreachable or invalid ({type(exc).__name__}); "
            "check --storage (e.g. journal:///optuna.journal, sqlite:///optuna.db or postgresql://user:pass@host/db)"
        ) from None


OBJECTIVES = ("acc", "bwt", "both")  # both: the Pareto front of ACC and BWT
CHECKPOINTS = ("all", "final", "none")  # which task's checkpoints a trial keeps (--checkpoints)


def directions(objective: str) -> list[str]:
    if objective not in OBJECTIVES:
        raise LLLError(f"unknown --objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return ["maximize", "maximize"] if objective == "both" else ["maximize"]


SAMPLERS = ("model", "tpe", "random")
DEFAULT_SAMPLER = "model"  # bench/search_at_scale.py: fewest trials to a top-1% ordering (docs/results.md)


def default_sampler(objective: str) -> str:
    """``model`` for one objective; the Pareto front of ``both`` needs multi-objective TPE."""
    return "tpe" if objective == "both" else DEFAULT_SAMPLER


def check_sampler(name: str, objective: str = "acc") -> str:
    """A known sampler that supports the objective (``--sampler``), else a one-line error."""
    if name not in SAMPLERS:
        raise LLLError(f"unknown --sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if name == "model" and objective == "both":
        raise LLLError("--sampler model optimises one objective; use --objective acc or bwt, or --sampler tpe for both")
    return name


def make_sampler(
    seed: int, kind: str = "tpe", tasks: list[str] | None = None, fixed_order: bool = False
) -> optuna.samplers.BaseSampler:
    """``tpe``: multivariate TPE with the constant liar, so parallel trials are not all suggested the
    same point; five random start-up trials (orderings are few and cheap to look up through the
    prefix cache, and TPE reached near-best orderings sooner with 5 than with 10,
    bench/search_efficiency.py). ``model``: search/propose/sampler.py (a GP over orderings; TPE
    for strategy and λ), which needs the study's ``tasks``. ``random``: a baseline. Both TPEs see
    one observation per ordering, its latest record (search/study/tpe.py: re-evaluation)."""
    from search.study.tpe import LatestRecordTPESampler

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "model" and tasks and not fixed_order:
        from search.propose.sampler import PermutationSampler

        return PermutationSampler(tasks, seed=seed, independent=LatestRecordTPESampler(seed=seed, constant_liar=True))
    return LatestRecordTPESampler(seed=seed, constant_liar=True, multivariate=True, n_startup_trials=5)


def _sampler_for(settings: StudySettings) -> optuna.samplers.BaseSampler:
    return make_sampler(settings.seed, settings.sampler, list(settings.tasks), settings.fixed_order is not None)


PRUNE_QUANTILE = 0.25  # the bottom quarter


class BottomQuarterPruner(optuna.pruners.BasePruner):
    """Stop a trial whose value at its latest step is in the bottom quarter of the complete
    trials' values at that same step: below their 25th percentile (maximising; above the 75th
    when minimising). Never before ``startup`` trials are complete, never at a step below
    ``warmup`` (step 0 is the first task alone).

    Optuna's ``PercentilePruner(25)`` is not this: it *keeps* the top quarter (prunes below the
    75th percentile) and judges a trial by its best value over all steps so far, while a running
    accuracy falls as tasks are added, so its best is nearly always its first step.

    With re-evaluation (search/study/racing.py) the complete trials it counts and compares with are
    the fresh records (:func:`search.study.records.fresh_records`): a re-evaluation reports no
    per-step values, so counted towards ``startup`` it would start pruning with fewer values to
    compare with; and a re-evaluation is never pruned (it adds a seed to a finished ordering)."""

    def __init__(self, startup: int = 8, warmup: int = 1, quantile: float = PRUNE_QUANTILE) -> None:
        self.startup, self.warmup, self.quantile = startup, warmup, quantile

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup or is_reevaluation(trial):
            return False
        complete = fresh_records(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if len(complete) < max(1, self.startup):
            return False
        others = [t.intermediate_values[step] for t in complete if step in t.intermediate_values]
        others = [v for v in others if not math.isnan(v)]
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        if not others:
            return False
        if study.direction == optuna.study.StudyDirection.MINIMIZE:
            return value > float(np.percentile(others, 100 * (1 - self.quantile)))
        return value < float(np.percentile(others, 100 * self.quantile))


def make_pruner(objective: str, enabled: bool, startup: int = 8) -> optuna.pruners.BasePruner:
    """Stop clearly worse orderings: in the bottom quarter of the complete trials at the same step,
    once ``startup`` trials are complete (and never after the first task alone)."""
    if objective == "both" or not enabled:
        return optuna.pruners.NopPruner()
    return BottomQuarterPruner(startup=startup, warmup=1)


def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """A study of this storage with its own sampler and pruner; its settings are validated now."""
    try:
        frozen = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        hint = f"known studies: {', '.join(names)}" if names else "this storage holds no study yet"
        raise LLLError(f"no study named {name!r} to resume ({hint}); check --study and --storage") from None
    settings = study_settings(frozen)
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=_sampler_for(settings),
        pruner=make_pruner(settings.objective, settings.prune, settings.prune_startup),
    )


def create_study(name: str, storage: optuna.storages.BaseStorage, settings: StudySettings) -> optuna.Study:
    try:
        optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    else:
        raise LLLError(f"study {name!r} already exists; continue it with --resume or choose another --study")
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=directions(settings.objective),
        sampler=_sampler_for(settings),
        pruner=make_pruner(settings.objective, settings.prune, settings.prune_startup),
    )
    for k, v in settings.to_user_attrs().items():
        study.set_user_attr(k, v)
    return study


def study_settings(study: optuna.Study) -> StudySettings:
    """The study's settings, typed and validated (one ``error:`` line when they cannot be read)."""
    return StudySettings.from_user_attrs(study.user_attrs, study.study_name)


def is_interrupted(t: FrozenTrial) -> bool:
    """A failed trial that no driver finished: a killed search left it running and the resume told
    it FAIL by number (no attributes), or the driver's time ran out before it started."""
    return t.state == TrialState.FAIL and t.user_attrs.get("fail_reason", INTERRUPTED) == INTERRUPTED


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against the budget: complete, pruned, or failed for a real reason."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=done) if not is_interrupted(t)]


def stale_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING by a search that was killed."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def check_pool_unchanged(study_name: str, settings: StudySettings, fix: str, pool: Any = None) -> None:
    """Whatever trains a study's pool again (resume, held-out validation, the affinity graph) must
    train the pool the study recorded: same fingerprint, same tasks. ``fix`` ends the error line;
    ``pool`` is the pool already loaded, else it is loaded here."""
    if pool is None:
        from tasks.registry import load_pool

        pool = load_pool(settings.pool, settings.data_dir, False, settings.train_per_task, settings.test_per_task)
    if pool.fingerprint() != settings.pool_fingerprint or tuple(pool.names) != tuple(settings.tasks):
        raise LLLError(
            f"pool {settings.pool!r} has changed since study {study_name!r} started (different fingerprint); {fix}"
        )
