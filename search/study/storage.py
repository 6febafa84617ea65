"""The Optuna side of a search: storage, study creation/resume, and what a study remembers.

A study stores its own settings (pool spec, strategies, objective, seeds, training config, where
its MLflow runs live) as user attributes, so ``lll search --study NAME --resume``, ``lll export``
and ``lll report`` need nothing but the study name and storage.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.tracking import mask_url, sqlite_fast_commits
from tasks.errors import LLLError

DEFAULT_STORAGE = "sqlite:///optuna.db"
INTERRUPTED = "interrupted"  # fail reason of trials a killed search left running

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage, checked now so that a bad URL fails before any training."""
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
            "check --storage (e.g. sqlite:///optuna.db or postgresql://user:pass@host/db)"
        ) from None


OBJECTIVES = ("acc", "bwt", "both")  # both: the Pareto front of ACC and BWT
CHECKPOINTS = ("all", "final", "none")  # which task's checkpoints a trial keeps (--checkpoints)


def directions(objective: str) -> list[str]:
    if objective not in OBJECTIVES:
        raise LLLError(f"unknown --objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return ["maximize", "maximize"] if objective == "both" else ["maximize"]


SAMPLERS = ("model", "tpe", "random")
DEFAULT_SAMPLER = "model"  # bench/search_at_scale.py: fewest trials to a top-1% ordering (README)


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
    for strategy and λ), which needs the study's ``tasks``. ``random``: a baseline."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "model" and tasks and not fixed_order:
        from search.propose.sampler import PermutationSampler

        return PermutationSampler(tasks, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, n_startup_trials=5)


def _sampler_for(settings: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    # studies made before --sampler existed ran TPE
    kind, fixed = settings.get("sampler", "tpe"), settings.get("fixed_order") is not None
    return make_sampler(settings.get("seed", seed), kind, settings.get("tasks"), fixed)


def make_pruner(objective: str, enabled: bool, startup: int = 8) -> optuna.pruners.BasePruner:
    """Stop clearly worse orderings: in the bottom quarter of all trials at the same step, once
    ``startup`` trials have finished (and never after the first task alone)."""
    if objective == "both" or not enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(25.0, n_startup_trials=startup, n_warmup_steps=1)


def load_study(name: str, storage: optuna.storages.RDBStorage, seed: int = 0) -> optuna.Study:
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
        sampler=_sampler_for(settings, seed),
        pruner=make_pruner(
            settings.get("objective", "acc"), settings.get("prune", True), settings.get("prune_startup", 8)
        ),
    )


def create_study(name: str, storage: optuna.storages.RDBStorage, settings: dict[str, Any]) -> optuna.Study:
    try:
        optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    else:
        raise LLLError(f"study {name!r} already exists; continue it with --resume or choose another --study")
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=directions(settings["objective"]),
        sampler=_sampler_for(settings, settings["seed"]),
        pruner=make_pruner(settings["objective"], settings["prune"], settings.get("prune_startup", 8)),
    )
    for k, v in settings.items():
        study.set_user_attr(k, v)
    return study


def study_settings(study: optuna.Study) -> dict[str, Any]:
    return dict(study.user_attrs)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against the budget: complete, pruned, or failed for a real reason."""

    def counts(t: FrozenTrial) -> bool:
        if t.state == TrialState.FAIL:
            return t.user_attrs.get("fail_reason") != INTERRUPTED
        return t.state in (TrialState.COMPLETE, TrialState.PRUNED)

    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def stale_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING or WAITING by a search that was killed."""
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


def mark_interrupted(study: optuna.Study, trial: FrozenTrial) -> None:
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def complete_from_record(study: optuna.Study, trial: FrozenTrial, values: list[float], attrs: dict) -> None:
    """Finish a stale trial whose result was already recorded (in MLflow) before the kill."""
    storage = study._storage
    for k, v in attrs.items():
        storage.set_trial_user_attr(trial._trial_id, k, v)
    storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, values)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
