"""What `lll affinity` was asked, validated once before Ray starts: the graph's settings.

Every check that can fail runs in :func:`prepare_affinity`, so bad input is one line and exit 2 and
nothing is measured or recorded: ``--seeds 0``, a pool of fewer than 3 tasks (two tasks have two
orderings: train both), and an affinity study whose pool changed since the study started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import TrainConfig
from tasks.errors import LLLError

MIN_TASKS = 3


@dataclass
class AffinityRequest:
    """What `lll affinity` was asked; None means the default (or, with a study, the study's)."""

    pool: str | None = None
    study: str | None = None
    storage: str = "journal:///optuna.journal"  # search.study.storage.DEFAULT_STORAGE
    out: str = "affinity.graphml"
    strategy: str | None = None
    seeds: int | None = None
    seed: int | None = None
    workers: int | None = None
    epochs: int | None = None
    tracking_uri: str | None = None
    measure: bool = True
    ray_address: str | None = None
    data_dir: str | None = None
    top: int = 3
    population: int | str = "auto"  # units a worker trains at once (lockstep K)


def _study_settings(req: AffinityRequest) -> tuple[dict[str, Any], Any, str, int, int, dict]:
    from search.study.storage import check_pool_unchanged, load_study, open_storage, study_settings

    study = load_study(req.study, open_storage(req.storage, req.study))
    st = study_settings(study)
    if req.pool is not None and req.pool != st.pool:
        raise LLLError(f"study {req.study!r} searched pool {st.pool!r}, not {req.pool!r}; drop --pool")
    check_pool_unchanged(
        req.study, st, "measure its graph with the same pool file and data, or give --pool without --study"
    )
    name = req.strategy or st.strategies[0]
    base_seed = st.seed if req.seed is None else req.seed
    n_seeds = req.seeds or st.seeds
    uri = req.tracking_uri
    if uri is None and st.tracking_uri_masked:
        raise LLLError("this study logs to a password-protected tracking store; pass --tracking-uri")
    settings = {
        "pool": st.pool,
        "pool_spec": st.pool_spec,
        "tasks": list(st.tasks),
        "strategy": name,
        "lambda": st.lam,
        "options": st.strategy_options(name),
        "data_dir": st.data_dir,
        "tracking_uri": uri or st.tracking_uri or "sqlite:///mlflow.db",
        "experiment": study.study_name,
    }
    return settings, study, name, base_seed, n_seeds, st.train.model_dump()


def _pool_settings(req: AffinityRequest) -> tuple[dict[str, Any], None, str, int, int, dict]:
    from tasks.registry import load_pool

    if not req.measure:
        raise LLLError("--no-measure uses a study's evidence only; give --study NAME")
    pool = load_pool(req.pool or "mixed-mnist", req.data_dir)
    settings = {
        "pool": req.pool or "mixed-mnist",
        "pool_spec": pool.spec.model_dump_json(),
        "tasks": pool.names,
        "strategy": req.strategy or "naive",
        "lambda": None,
        "options": {},
        "data_dir": req.data_dir,
        "tracking_uri": req.tracking_uri,
        "experiment": "lll-affinity",
    }
    # the pool's training defaults; --epochs overrides
    return settings, None, settings["strategy"], req.seed or 0, req.seeds or 1, dict(pool.spec.train)


def prepare_affinity(req: AffinityRequest) -> tuple[dict[str, Any], Any]:
    """Settings of the graph (pool spec, tasks, strategy, training, seeds, where to record) and
    the study (or None). Every check that can fail runs here, before Ray starts."""
    from pipeline.lockstep import parse_population
    from pipeline.strategies import strategy_class

    req.population = parse_population(req.population)
    out = Path(req.out).expanduser()
    if not out.resolve().parent.is_dir():
        raise LLLError(f"--out {req.out}: folder {out.parent} does not exist; create it or choose another path")
    if req.seeds is not None and req.seeds < 1:
        raise LLLError(f"--seeds {req.seeds}: the graph needs at least 1 seed of pair trainings; use --seeds 1 or more")
    if req.epochs is not None and req.epochs < 1:
        raise LLLError("--epochs must be at least 1")
    settings, study, name, base_seed, n_seeds, train = _study_settings(req) if req.study else _pool_settings(req)
    if len(settings["tasks"]) < MIN_TASKS:
        raise LLLError(
            f"pool {settings['pool']!r} has {len(settings['tasks'])} task(s); an affinity graph needs at least "
            f"{MIN_TASKS} (with fewer, train every ordering: `lll search --exhaustive`)"
        )
    strategy_class(name)  # an unknown strategy fails here
    if req.epochs is not None:
        train["epochs"] = req.epochs
    settings["train"] = TrainConfig(**train).model_dump(mode="json")
    settings["seeds"] = [base_seed + k for k in range(n_seeds)]
    if settings["tracking_uri"]:
        from pipeline.tracking import check_tracking_uri

        check_tracking_uri(settings["tracking_uri"])
    return settings, study
