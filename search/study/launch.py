"""`lll search` end to end: request → settings → study (new or resumed) → MLflow parent run → Ray
workers → driver → study artifacts. The CLI only parses flags and prints.

A :class:`SearchRequest` is what the user typed; :class:`StudySettings` is what the study stores
(validated once, here for a new study and on load for a resumed one); :class:`Resources` is how
this run uses the cluster. Nothing else carries the study's settings."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from pipeline import tracking
from pipeline.config import TrainConfig
from pipeline.strategies import strategy_class
from search.orders.space import SearchSpace
from search.study.cluster import check_address, check_gpus, connect
from search.study.driver import Progress, Resources, SearchDriver, worker_spec
from search.study.recommend import recommendation
from search.study.recording import close_parent_run, open_parent_run
from search.study.scheduler import start_early
from search.study.settings import StudySettings, build
from search.study.storage import (
    DEFAULT_STORAGE,
    check_pool_unchanged,
    check_sampler,
    create_study,
    default_sampler,
    finished_trials,
    load_study,
    open_storage,
    study_settings,
)
from tasks import pool_cache
from tasks.errors import LLLError
from tasks.registry import load_pool

_IMPORTED = time.perf_counter()


@dataclass
class SearchRequest:
    """What the user asked for (flags); None means "the default" or, on --resume, "as stored"."""

    pool: str | None = None
    strategies: list[str] | None = None
    lam: float | None = None
    options: dict[str, dict[str, Any]] | None = None
    objective: str | None = None
    trials: int | None = None
    time_budget: float | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    seeds: int | None = None
    max_seeds: int | None = None  # re-evaluation: the most seeds an ordering gets [default: default_max_seeds]
    seed: int | None = None
    study: str | None = None
    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = tracking.DEFAULT_TRACKING_URI
    ray_address: str | None = None
    resume: bool = False
    exhaustive: bool = False
    prune: bool | None = None
    prune_startup: int = 8  # trials finished before pruning starts
    cache_mb: int = 1024  # per-worker prefix cache; 0 disables it
    checkpoints: str | None = None
    train: dict[str, Any] | None = None
    data_dir: str | None = None
    download: bool = False
    train_per_task: int | None = None
    test_per_task: int | None = None
    order: list[str] | None = None
    seed_from_graph: bool = False  # enqueue the affinity graph's best orderings first (new study)
    population: int | str | None = None  # units a worker trains at once (lockstep K) [default: auto; resume: stored]
    sampler: str | None = None  # model | tpe | random (None: model, tpe for --objective both; --resume: stored)
    validate: int | None = None  # top orderings retrained on held-out seeds at the end (None: up to 3; 0: off)
    heldout_seeds: list[int] | None = None  # None: 3 seeds far from the search's


DEFAULT_STRATEGIES = ["ewc", "si", "agem"]
DEFAULT_TRIALS = 24
# Measured on the 3-seed mixed-mnist-7 truth (bench/out/fresh_seed.json, defaults_grid): a new ordering
# on 1 seed, re-evaluation up to 2 was best or tied at B = 60 and 150 evaluations (docs/results.md).
DEFAULT_SEEDS = 1
DEFAULT_MAX_SEEDS = 2


def default_max_seeds(req: SearchRequest) -> int | None:
    """--max-seeds unless given: DEFAULT_MAX_SEEDS for a one-objective search whose --seeds is below
    it; None (= --seeds, no re-evaluation) for --exhaustive, --objective both or more --seeds."""
    if req.max_seeds is not None:
        return req.max_seeds
    if req.exhaustive or (req.objective or "acc") == "both" or (req.seeds or DEFAULT_SEEDS) >= DEFAULT_MAX_SEEDS:
        return None
    return DEFAULT_MAX_SEEDS


def new_settings(req: SearchRequest, pool, n_trials: int) -> StudySettings:
    """The settings a new study stores, from the flags (None: the default) and the loaded pool."""
    strategies = req.strategies or DEFAULT_STRATEGIES
    if req.exhaustive:
        if len(pool.names) > 7:
            raise LLLError(exhaustive_too_large(pool.name, len(pool.names), req.seeds or DEFAULT_SEEDS))
        if len(strategies) != 1:
            raise LLLError("--exhaustive needs exactly one strategy, e.g. --strategies ewc (λ fixed by --lambda)")
    SearchSpace(pool.names, strategies, req.lam, req.order, req.options or {})  # one-line errors by flag
    check_max_seeds(req)
    objective = req.objective or "acc"
    masked = tracking.mask_url(req.tracking_uri) if req.tracking_uri else None
    return build(
        {
            "pool": req.pool,
            "pool_spec": pool.spec.model_dump_json(),
            "pool_fingerprint": pool.fingerprint(),
            "tasks": pool.names,
            "strategies": strategies,
            "lambda": req.lam,
            "options": req.options or {},
            "objective": objective,
            "sampler": check_sampler(req.sampler or default_sampler(objective), objective),
            "seeds": req.seeds or DEFAULT_SEEDS,
            "max_seeds": default_max_seeds(req),
            "seed": req.seed or 0,
            "train": TrainConfig(**(req.train or {})),
            "population": "auto" if req.population is None else req.population,
            "checkpoints": req.checkpoints or "final",
            "prune": False if req.prune is None else req.prune,
            "prune_startup": req.prune_startup,
            "exhaustive": req.exhaustive,
            "trials": n_trials,
            "data_dir": req.data_dir,
            "train_per_task": req.train_per_task,
            "test_per_task": req.test_per_task,
            "fixed_order": req.order,
            "tracking_uri": masked,
            "tracking_uri_masked": bool(req.tracking_uri and masked != req.tracking_uri),
        }
    )


def check_max_seeds(req: SearchRequest) -> None:
    """--max-seeds: at least --seeds; re-evaluation needs one objective and a search (not --exhaustive)."""
    seeds = req.seeds or DEFAULT_SEEDS
    if req.max_seeds is None:
        return
    if req.max_seeds < seeds:
        raise LLLError(
            f"--max-seeds {req.max_seeds} is below --seeds {seeds}: an ordering starts with --seeds seeds and "
            f"re-evaluation adds up to --max-seeds; use --max-seeds {seeds} or more"
        )
    if req.max_seeds > seeds and (req.exhaustive or (req.objective or "acc") == "both"):
        raise LLLError(
            "--max-seeds above --seeds re-evaluates promising orderings on one objective during a search; "
            "drop it with --exhaustive or --objective both"
        )


def exhaustive_too_large(pool: str, t: int, seeds: int) -> str:
    """The --exhaustive refusal, with what enumerating would cost (prefix tree: Σ_k T!/(T−k)!)."""
    orders = math.factorial(t)
    trainings = sum(math.factorial(t) // math.factorial(t - k) for k in range(1, t + 1))
    return (
        f"--exhaustive on pool {pool!r} ({t} tasks) would train {orders:,} orderings = {trainings:,} task-trainings "
        f"per seed through the prefix cache (× {seeds} seeds); enumeration stops at 7 tasks — search instead "
        "(drop --exhaustive; --sampler model)"
    )


def default_study_name(pool: str) -> str:
    return f"{Path(pool).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare(req: SearchRequest) -> tuple[optuna.Study, StudySettings, Any, str | None]:
    """Validate everything that can fail before any training; returns (study, settings, pool, uri)."""
    if req.seed_from_graph and (req.resume or req.order is not None):
        raise LLLError("--seed-from-graph seeds a new study's orderings; drop it with --resume or --order")
    from pipeline.lockstep import parse_population

    if req.population is not None:
        req.population = parse_population(req.population)
    if req.ray_address:
        check_address(req.ray_address)
    else:
        check_gpus(req.gpus_per_worker)  # the local machine, before Ray starts
    storage = open_storage(req.storage, req.study if req.resume else None)
    if req.resume:
        study, settings, pool, uri = _resume(req, storage)
    else:
        study, settings, pool, uri = _create(req, storage)
    return study, settings, pool, uri


def _check_validation(req: SearchRequest, settings: StudySettings) -> None:
    """--validate and --heldout-seeds, checked before any training (K against the trials, seeds
    against the search's); K against the *finished* distinct orderings is checked at the end."""
    from search.study.heldout import heldout_seeds
    from search.study.validation import DEFAULT_HELDOUT

    if req.validate is not None and req.validate < 0:
        raise LLLError(f"--validate {req.validate}: give the number of top orderings to retrain, or 0 for none")
    if req.validate and req.validate > settings.trials:
        raise LLLError(
            f"--validate {req.validate} but the study runs {settings.trials} trial(s); "
            f"use --validate {settings.trials} or less, or more --trials"
        )
    if req.validate != 0 or req.heldout_seeds:
        heldout_seeds(settings.seed, DEFAULT_HELDOUT, settings.all_seeds, req.heldout_seeds)


def _resume(req: SearchRequest, storage) -> tuple[optuna.Study, StudySettings, Any, str | None]:
    """The stored study, its settings (--trials and --population may change for this run) and pool."""
    if not req.study:
        raise LLLError("--resume needs --study NAME (the study to continue)")
    study = load_study(req.study, storage)
    settings = study_settings(study)
    stored_max = settings.max_seeds or settings.seeds
    if req.max_seeds is not None and req.max_seeds != stored_max:
        raise LLLError(
            f"study {req.study!r} re-evaluates up to --max-seeds {stored_max}; resume it without --max-seeds"
        )
    if req.sampler is not None and req.sampler != settings.sampler:
        raise LLLError(f"study {req.study!r} searches with --sampler {settings.sampler}; resume it without --sampler")
    changes: dict[str, Any] = {}
    if req.trials is not None:
        changes["trials"] = req.trials
    if req.population is not None:
        changes["population"] = req.population
    settings = settings.changed(**changes) if changes else settings
    _check_validation(req, settings)
    uri = req.tracking_uri
    if settings.tracking_uri_masked and uri == tracking.DEFAULT_TRACKING_URI:
        raise LLLError("this study logs to a password-protected tracking store; pass --tracking-uri again")
    if not settings.tracking_uri_masked and settings.tracking_uri is not None:
        uri = settings.tracking_uri if uri == tracking.DEFAULT_TRACKING_URI else uri
    pool = load_pool(settings.pool, settings.data_dir, req.download, settings.train_per_task, settings.test_per_task)
    from pipeline.models import check_model_name

    check_model_name(settings.train.model)  # a user model's module is shipped to the workers
    check_pool_unchanged(req.study, settings, "resume with the same pool file and data", pool)
    if uri:
        tracking.check_tracking_uri(uri)
    return study, settings, pool, uri


def _create(req: SearchRequest, storage) -> tuple[optuna.Study, StudySettings, Any, str | None]:
    """A new study with its settings stored; Ray is up (or joined) before it exists."""
    req.pool = req.pool or "mixed-mnist"
    pool = load_pool(req.pool, req.data_dir, req.download, req.train_per_task, req.test_per_task)
    if req.order is not None:
        req.order = pool.resolve_order(req.order)
    for s in req.strategies or DEFAULT_STRATEGIES:
        strategy_class(s)
    n_trials = req.trials
    if n_trials is None:
        n_orders = math.factorial(len(pool.names)) if req.order is None else 1
        n_trials = n_orders if req.exhaustive else (10**6 if req.time_budget else DEFAULT_TRIALS)
    settings = new_settings(req, pool, n_trials)
    _check_validation(req, settings)  # before Ray starts and the study exists
    uri = req.tracking_uri
    if uri:
        tracking.check_tracking_uri(uri)
        tracking.prewarm(uri)  # MLflow's store opens while Ray starts
    check_gpus(req.gpus_per_worker, connect(req.ray_address))  # Ray up (or joined) before the study exists
    name = req.study or default_study_name(req.pool)
    study = create_study(name, storage, settings)
    if req.seed_from_graph:
        from search.study.graph_seed import seed_study_from_graph

        try:
            seed_study_from_graph(
                study, settings, req.workers, req.ray_address, req.download, population=settings.population
            )
        except BaseException:  # the study was created for this search a moment ago: do not leave it empty
            optuna.delete_study(study_name=name, storage=storage)
            raise
    return study, settings, pool, uri


def run_search(req: SearchRequest, progress: Progress | None = None, prepared=None):
    """Run (or resume) a search. Returns (study, summary, recommendation or None).

    ``prepared`` is :func:`prepare`'s result when the caller validated the request already."""
    study, settings, _pool, uri = prepared or prepare(req)
    tracking.prewarm(uri)  # on --resume Ray starts here; a no-op when the client exists
    resources = connect(req.ray_address)
    cpus = resources.get("CPU", 1)
    workers = req.workers or max(1, int(cpus // req.cpus_per_worker))
    if req.gpus_per_worker and resources.get("GPU", 0) < req.gpus_per_worker:
        raise LLLError(f"--gpus-per-worker {req.gpus_per_worker} but the cluster has {resources.get('GPU', 0)} GPUs")
    run = Resources(
        workers=workers,
        cpus_per_worker=req.cpus_per_worker,
        gpus_per_worker=req.gpus_per_worker,
        cache_bytes=req.cache_mb * 1024 * 1024,
        download=req.download,
        time_budget=req.time_budget,
        tracking_uri=uri,
    )
    if len(finished_trials(study)) < settings.trials:
        # Workers boot (torch, the pool from its cache file) while the study and MLflow run are set up.
        pool_cache.save(_pool)
        start_early(worker_spec(settings, run), workers)
    parent = open_parent_run(study, settings, uri) if uri else None
    before = seconds_since_start()
    summary = SearchDriver(settings, run, study, parent, progress).run()
    t0 = time.perf_counter()
    summary.validation = _validate(req, study, settings, run, uri, _pool)
    summary.timing["validate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = close_parent_run(study, uri, parent, summary) if uri and parent else None
    if rec is None:
        try:
            rec = recommendation(study)
        except LLLError:
            rec = None
    summary.timing["startup"] = before + summary.timing.get("boot", 0.0)  # boot: waiting for workers to start
    summary.timing["close"] = time.perf_counter() - t0
    return study, summary, rec


def _validate(req: SearchRequest, study: optuna.Study, settings: StudySettings, run: Resources, uri: str | None, pool):
    """The end of a search: the top K orderings on held-out seeds (search/study/validation.py).
    An explicit --validate above the finished distinct orderings is an error; the default takes
    as many as there are, up to 3."""
    from search.study.validation import DEFAULT_VALIDATE, check_request, distinct_orderings, validate

    if req.validate == 0:
        return None
    asked = study.user_attrs.get("validation_request") if req.resume else None  # a killed validation's K, seeds
    k = req.validate or (asked or {}).get("k") or min(DEFAULT_VALIDATE, len(distinct_orderings(study)))
    if k == 0:
        return None
    seeds = check_request(study, settings, k, req.heldout_seeds or (asked or {}).get("seeds"))
    pool_cache.save(pool)
    return validate(study, settings, k, seeds, worker_spec(settings, run), run.workers, uri)


def seconds_since_start() -> float:
    """Seconds since this process started (Linux: /proc), else since this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return max(0.0, float(f.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED
