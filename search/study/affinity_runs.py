"""Measuring task affinity as Ray trials, and everything `lll affinity` / `--seed-from-graph` do.

The measurements run on the search's own :class:`~pipeline.workers.TrialWorker` actors: one job
per (seed, first task a) trains the single-task ordering ``[a]`` and then every pair ``[a, b]`` on
the same actor, whose prefix cache already holds ``[a]`` — so each pair costs one task-training
and a pool of T tasks costs T² per seed (T singles + T(T−1) pairs). Every row a worker returns
is the accuracy on *every* pool task, so ``[a]`` alone gives the transfer from a to all others.
The driver (this process) is the only writer of Optuna and MLflow, as in the search.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.units import Unit
from search.graph.affinity import (
    Evidence,
    PathWeights,
    best_orderings,
    build_graph,
    draw,
    evidence_from_rows,
    fit_weights,
    harvest_trials,
    trial_outcomes,
    write_graphml,
)
from search.orders.space import SearchSpace
from tasks.errors import LLLError

Progress = Callable[[int, int, str], None]  # (task-trainings done, total, what)


@dataclass
class AffinityMeasurement:
    """Raw rows of the affinity runs, per seed: ``init`` (random initialisation), ``single[a]``
    (after a alone) and ``pair["a>b"]`` (after a then b); each row = accuracy on every pool task."""

    tasks: list[str]
    strategy: dict[str, Any]
    train: dict[str, Any]
    seeds: list[int]
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    trained: int = 0  # task-trainings run
    reused: int = 0  # task-trainings taken from a worker's prefix cache
    seconds: float = 0.0
    workers: list[dict[str, Any]] = field(default_factory=list)  # each worker's info (device, K)
    rebuilt: int = 0  # extra task-trainings: a prefix trained again on a worker that did not hold it

    def evidence(self) -> Evidence:
        ev = Evidence()
        for seed in self.seeds:
            r = self.rows[seed]
            pairs = {tuple(k.split(">", 1)): v for k, v in r["pair"].items()}
            ev.update(evidence_from_rows(r["init"], r["single"], pairs))
        return ev

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "strategy": self.strategy,
            "train": self.train,
            "seeds": self.seeds,
            "rows": {str(s): r for s, r in self.rows.items()},
            "trained": self.trained,
            "reused": self.reused,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AffinityMeasurement:
        rows = {int(s): r for s, r in d["rows"].items()}
        return cls(d["tasks"], d["strategy"], d["train"], d["seeds"], rows, d["trained"], d["reused"], d["seconds"])


def affinity_units(tasks: list[str], strategy_json: str, train_json: str, seed: int) -> list[Unit]:
    """Every single task [a] and pair [a, b] of one seed: the first two levels of the prefix tree."""
    units = [Unit((a,), strategy_json, train_json, seed) for a in tasks]
    return units + [Unit((a, b), strategy_json, train_json, seed) for a in tasks for b in tasks if b != a]


def measure_affinity(
    pool_spec_json: str,
    tasks: list[str],
    strategy: StrategyConfig,
    train: TrainConfig,
    seeds: list[int],
    workers: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
    ray_address: str | None = None,
    cache_bytes: int = 1 << 30,
    progress: Progress | None = None,
    population: int | str = "auto",
) -> AffinityMeasurement:
    """Run every single-task ordering [a] and pair [a, b] of ``tasks`` for each seed on Ray
    workers through the search's scheduler (started here, stopped before returning so a search
    that follows gets the CPUs). Each pair [a, b] waits for [a] and goes to the worker that holds
    it; a worker's batch holds up to K of them (lockstep)."""
    from search.study.cluster import connect
    from search.study.scheduler import Scheduler, WorkerSpec

    resources = connect(ray_address)
    t0 = time.perf_counter()
    cpus = max(1, int(resources.get("CPU", 1)))  # more actors than CPUs would wait forever for a slot
    n_workers = max(1, min(workers or cpus, cpus, len(seeds) * len(tasks)))
    meas = AffinityMeasurement(
        list(tasks), strategy.model_dump(mode="json"), train.model_dump(mode="json"), list(seeds)
    )
    sj, tj = strategy.model_dump_json(), train.model_dump_json()
    spec = WorkerSpec(pool_spec_json, data_dir, download, cache_bytes, population=population, device=train.device)
    sched = Scheduler(spec, n_workers)
    total = 0
    for seed in seeds:
        meas.rows[seed] = {"init": None, "single": {}, "pair": {}}
        for unit in affinity_units(list(tasks), sj, tj, seed):
            sched.submit(unit, seed)
            total += 1
    done = 0
    sched.start()
    try:
        while done < total:
            for ev in sched.poll(timeout=1.0):
                what = ">".join(ev.unit.order)
                if ev.failure is not None:
                    raise LLLError(f"affinity run {what} (seed {ev.unit.seed}) failed: {ev.failure}")
                res, slot = ev.result, meas.rows[ev.unit.seed]
                trained = int(res["trained"])
                meas.trained += min(trained, 1)  # this ordering's own task-training
                meas.reused += len(ev.unit.order) - min(trained, 1)
                meas.rebuilt += max(0, trained - 1)  # a prefix trained again on another worker
                slot["init"] = slot["init"] or res["rows"][0]
                if len(ev.unit.order) == 1:
                    slot["single"][ev.unit.order[0]] = res["rows"][1]
                else:
                    slot["pair"][what] = res["rows"][2]
                done += 1
                if progress is not None:
                    progress(done, total, what)
        meas.workers = sched.infos()
    finally:
        sched.close()
    meas.seconds = time.perf_counter() - t0
    return meas


# ---------------------------------------------------------------------------------------------
# `lll affinity`
# ---------------------------------------------------------------------------------------------
@dataclass
class AffinityRequest:
    """What `lll affinity` was asked; None means the default (or, with a study, the study's)."""

    pool: str | None = None
    study: str | None = None
    storage: str = "sqlite:///optuna.db"
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


@dataclass
class AffinityResult:
    graph: nx.DiGraph
    graphml: Path
    png: Path
    weights: PathWeights
    orderings: list[tuple[list[str], float]]
    method: str
    measurement: AffinityMeasurement | None
    harvested_trials: int
    mlflow_run_id: str | None
    settings: dict[str, Any]


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
        raise LLLError("--seeds must be at least 1")
    if req.epochs is not None and req.epochs < 1:
        raise LLLError("--epochs must be at least 1")
    study = None
    if req.study:
        from search.study.storage import load_study, open_storage, study_settings

        study = load_study(req.study, open_storage(req.storage))
        st = study_settings(study)
        if req.pool is not None and req.pool != st.pool:
            raise LLLError(f"study {req.study!r} searched pool {st.pool!r}, not {req.pool!r}; drop --pool")
        name = req.strategy or st.strategies[0]
        base_seed = st.seed if req.seed is None else req.seed
        n_seeds = req.seeds or st.seeds
        train = st.train.model_dump()
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
    else:
        if not req.measure:
            raise LLLError("--no-measure uses a study's evidence only; give --study NAME")
        from tasks.registry import load_pool

        pool = load_pool(req.pool or "mixed-mnist", req.data_dir)
        name, base_seed, n_seeds = req.strategy or "naive", req.seed or 0, req.seeds or 1
        train = dict(pool.spec.train)  # the pool's training defaults; --epochs overrides
        settings = {
            "pool": req.pool or "mixed-mnist",
            "pool_spec": pool.spec.model_dump_json(),
            "tasks": pool.names,
            "strategy": name,
            "lambda": None,
            "options": {},
            "data_dir": req.data_dir,
            "tracking_uri": req.tracking_uri,
            "experiment": "lll-affinity",
        }
    strategy_class(name)  # an unknown strategy fails here
    if req.epochs is not None:
        train["epochs"] = req.epochs
    settings["train"] = TrainConfig(**train).model_dump(mode="json")
    settings["seeds"] = [base_seed + k for k in range(n_seeds)]
    if settings["tracking_uri"]:
        from pipeline.tracking import check_tracking_uri

        check_tracking_uri(settings["tracking_uri"])
    return settings, study


def stored_measurement(study: Any, strategy: str) -> Evidence | None:
    """Measured evidence a study kept (from `lll search --seed-from-graph`) for ``strategy``."""
    kept = study.user_attrs.get("affinity_evidence") if study is not None else None
    if not kept or kept.get("strategy", {}).get("name") != strategy:
        return None
    return Evidence.from_dict(kept["evidence"])


def run_affinity(
    req: AffinityRequest, progress: Progress | None = None, prepared: tuple[dict[str, Any], Any] | None = None
) -> AffinityResult:
    """Measure (and/or harvest) the evidence, build the graph, write GraphML + PNG, fit the path
    score to the study's trials when there are enough, find the best orderings, record in MLflow.
    ``prepared``: :func:`prepare_affinity`'s result when the caller validated the request already."""
    settings, study = prepared or prepare_affinity(req)
    cfg = StrategyConfig(name=settings["strategy"], lam=settings["lambda"], options=settings["options"])
    measurement = None
    measured = None
    if req.measure:
        measurement = measure_affinity(
            settings["pool_spec"],
            settings["tasks"],
            cfg,
            TrainConfig(**settings["train"]),
            settings["seeds"],
            req.workers,
            settings["data_dir"],
            ray_address=req.ray_address,
            progress=progress,
            population=req.population,
        )
        measured = measurement.evidence()
    elif study is not None:
        measured = stored_measurement(study, settings["strategy"])
    trials = study.get_trials(deepcopy=False) if study is not None else []
    harvested = harvest_trials(trials, settings["strategy"]) if study is not None else None
    outcomes = trial_outcomes(trials, settings["strategy"])
    meta = {
        "pool": settings["pool"],
        "strategy": settings["strategy"],
        "lambda": -1.0 if settings["lambda"] is None else float(settings["lambda"]),
        "seeds": ",".join(map(str, settings["seeds"])) if req.measure else "",
        "epochs": int(settings["train"]["epochs"]),
        "study": req.study or "",
        "harvested_trials": len(outcomes),
    }
    graph = build_graph(settings["tasks"], measured, harvested, meta=meta)
    weights = fit_weights(graph, outcomes)
    orderings, method = best_orderings(graph, weights, k=max(1, req.top))
    graphml = write_graphml(graph, Path(req.out).expanduser())
    png = draw(
        graph,
        graphml.with_suffix(".png"),
        f"task affinity of {Path(settings['pool']).stem} ({settings['strategy']}): edge width ∝ |transfer|, "
        "labels in pp",
    )
    run_id = None
    if settings["tracking_uri"]:
        run_id = record_affinity(settings, graph, graphml, png, weights, orderings, measurement, len(outcomes))
    return AffinityResult(graph, graphml, png, weights, orderings, method, measurement, len(outcomes), run_id, settings)


def record_affinity(
    settings: dict[str, Any],
    graph: nx.DiGraph,
    graphml: Path,
    png: Path,
    weights: PathWeights,
    orderings: list[tuple[list[str], float]],
    measurement: AffinityMeasurement | None,
    harvested_trials: int,
) -> str:
    """One MLflow run (tag lll.kind=affinity) in the study's experiment: the graph's settings as
    params, its size and cost as metrics, GraphML, PNG and the scored orderings as artifacts."""
    from search.study.recording import RunRecord, write

    params = {
        "pool": settings["pool"],
        "strategy": settings["strategy"],
        "lambda": settings["lambda"],
        "seeds": ",".join(map(str, settings["seeds"])) if measurement else "",
        "tasks": ",".join(settings["tasks"]),
        "weights": weights.describe(),
        **{f"train.{k}": v for k, v in settings["train"].items()},
    }
    metrics: dict[str, float] = {
        "edges_measured": sum(1 for *_, d in graph.edges(data=True) if d["n_measured"] > 0),
        "edges_harvested": sum(1 for *_, d in graph.edges(data=True) if d["n_harvested"] > 0),
        "harvested_trials": harvested_trials,
        "fitted_on": weights.fitted_on,
    }
    if orderings:
        metrics["best_predicted_score"] = orderings[0][1]
    if measurement is not None:
        metrics.update(trained=measurement.trained, reused=measurement.reused, seconds=measurement.seconds)
    scored = json.dumps(
        {"weights": weights.__dict__, "orderings": [{"order": o, "score": s} for o, s in orderings]}, indent=2
    )
    files = [
        ("affinity", graphml.name, graphml.read_bytes()),
        ("affinity", png.name, png.read_bytes()),
        ("affinity", "affinity_orderings.json", scored.encode()),
    ]
    tags = {"lll.kind": "affinity"}
    rec = RunRecord(settings["experiment"], "affinity graph", params, tags, None, metrics, {}, files)
    return write(settings["tracking_uri"], rec)


# ---------------------------------------------------------------------------------------------
# `lll search --seed-from-graph`
# ---------------------------------------------------------------------------------------------
def enqueue_orderings(study: Any, space: SearchSpace, orders: list[list[str]]) -> None:
    """Make ``orders`` the study's next trials, with the space's first strategy and its fixed λ
    (or the strategy's default)."""
    for order in orders:
        study.enqueue_trial(space.trial_params(order, space.strategies[0], space.fixed_lambda))


def summary_lines(res: AffinityResult, recommend: bool) -> list[str]:
    """What `lll affinity` prints: cost, evidence, the transfer matrix, clusters, files, and with
    ``recommend`` the best-scoring orderings and which weights scored them."""
    from search.graph.affinity import clusters, graph_tasks, transfer_matrix

    g, st = res.graph, res.settings
    lines = []
    m = res.measurement
    if m is not None:
        t = len(m.tasks)
        lines.append(
            f"measured {t} single-task and {t * (t - 1)} pair orderings × {len(m.seeds)} seed(s) with "
            f"{st['strategy']}: {m.trained} task-trainings run, {m.reused} prefixes reused from the cache, "
            + (f"{m.rebuilt} prefixes rebuilt on another worker, " if m.rebuilt else "")
            + f"{m.seconds:.0f} s"
        )
    if st.get("experiment") and st["experiment"] != "lll-affinity":
        lines.append(f"harvested {res.harvested_trials} complete {st['strategy']} trial(s) of study {st['experiment']}")
    names = graph_tasks(g)
    tm = transfer_matrix(g)
    width = max(8, *(len(n) for n in names)) + 1
    lines.append("transfer a→b in pp (row a = trained first, column b = measured on; solo = accuracy on itself):")
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names) + f"{'solo':>{width}}")
    for i, a in enumerate(names):
        cells = "".join(f"{'·':>{width}}" if i == j else f"{tm[i, j] * 100:>+{width}.1f}" for j in range(len(names)))
        solo = g.nodes[a].get("solo", float("nan"))
        lines.append(f"{a:<{width}}{cells}{solo * 100:>{width}.1f}")
    lines.append("clusters of related tasks: " + "; ".join("{" + ", ".join(c) + "}" for c in clusters(g)))
    lines.append(f"wrote {res.graphml} and {res.png}")
    if res.mlflow_run_id:
        lines.append(f"recorded in MLflow run {res.mlflow_run_id} (experiment {st['experiment']})")
    if recommend and res.orderings:
        fitted = res.weights.fitted_on > 0
        kind = "predicted ACC" if fitted else "path score"

        def fmt(score: float) -> str:
            return f"{score * 100:.2f}%" if fitted else f"{score:+.4f}"

        best, score = res.orderings[0]
        lines.append(f"recommended order: {' → '.join(best)}  ({kind} {fmt(score)})")
        lines.append(f"  scored with {res.weights.describe()}")
        if not fitted:
            lines.append("  (fitting needs ≥ 9 complete trials of this strategy in --study; a path score is unitless)")
        for o, s in res.orderings[1:]:
            lines.append(f"  runner-up: {' → '.join(o)}  ({kind} {fmt(s)})")
        lines.append(f"  solver: {res.method}")
    return lines
