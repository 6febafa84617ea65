"""Measuring task affinity as Ray trials, and `lll affinity`'s run: measure, build, pick, write, record.

The measurements run on the search's own :class:`~pipeline.workers.TrialWorker` actors: one job
per (seed, first task a) trains the single-task ordering ``[a]`` and then every pair ``[a, b]`` on
the same actor, whose prefix cache already holds ``[a]`` — so each pair costs one task-training
and a pool of T tasks costs T² per seed (T singles + T(T−1) pairs). Every row a worker returns
is the accuracy on *every* pool task, so ``[a]`` alone gives the transfer from a to all others.
The driver (this process) is the only writer of Optuna and MLflow, as in the search.

What `lll affinity` records in MLflow is what it prints: the zero-shot pick of
``search/graph/zero_shot.py`` (the graph model fitted to the study's trials when there are enough),
its runners-up and the rules' orderings, plus every seed's raw rows. The request and its checks live
in ``search/study/affinity_settings.py``, the printed lines in ``search/study/affinity_lines.py``.
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
from search.graph.affinity import build_graph, graph_tasks, write_graphml
from search.graph.drawing import draw
from search.graph.evidence import Evidence, evidence_from_rows, harvest_trials, trial_outcomes
from search.graph.model import GraphModel
from search.graph.rules import RULES, dissimilarity_from_graph, rule_order
from search.graph.zero_shot import ZeroShot, zero_shot_pick
from search.study.affinity_settings import AffinityRequest, prepare_affinity
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
class AffinityResult:
    graph: nx.DiGraph
    graphml: Path
    png: Path
    pick: ZeroShot  # the one ranking: printed and recorded
    rules: dict[str, list[str]]  # each published rule's ordering
    measurement: AffinityMeasurement | None
    harvested_trials: int
    mlflow_run_id: str | None
    settings: dict[str, Any]


def stored_measurement(study: Any, strategy: str) -> Evidence | None:
    """Measured evidence a study kept (from `lll search --seed-from-graph`) for ``strategy``."""
    kept = study.user_attrs.get("affinity_evidence") if study is not None else None
    if not kept or kept.get("strategy", {}).get("name") != strategy:
        return None
    return Evidence.from_dict(kept["evidence"])


def rank_graph(
    g: nx.DiGraph, outcomes: list[tuple[list[str], float]], strategy: str | None, top: int = 3
) -> tuple[ZeroShot, dict[str, list[str]]]:
    """The one ranking of `lll affinity`: the zero-shot pick (the graph model fitted to ``outcomes``
    when there are enough of them) and each rule's ordering."""
    fitted = GraphModel.from_graph(g, strategy=strategy).fit(outcomes).params
    pick = zero_shot_pick(g, strategy, fitted if fitted.fitted_on else None, k=max(1, top))
    tasks, d = graph_tasks(g), dissimilarity_from_graph(g)
    return pick, {r: rule_order(r, tasks, d) for r in RULES}


def run_affinity(
    req: AffinityRequest, progress: Progress | None = None, prepared: tuple[dict[str, Any], Any] | None = None
) -> AffinityResult:
    """Measure (and/or harvest) the evidence, build the graph, write GraphML + PNG, pick the
    ordering, record in MLflow. ``prepared``: :func:`prepare_affinity`'s result when the caller
    validated the request already."""
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
    pick, rules = rank_graph(graph, outcomes, settings["strategy"], req.top)
    graphml = write_graphml(graph, Path(req.out).expanduser())
    png = draw(
        graph,
        graphml.with_suffix(".png"),
        f"task affinity of {Path(settings['pool']).stem} ({settings['strategy']}): edge width ∝ |transfer|, "
        "labels in pp",
    )
    res = AffinityResult(graph, graphml, png, pick, rules, measurement, len(outcomes), None, settings)
    if settings["tracking_uri"]:
        res.mlflow_run_id = record_affinity(res)
    return res


def record_affinity(res: AffinityResult) -> str:
    """One MLflow run (tag lll.kind=affinity) in the study's experiment: the graph's settings as
    params, the pick and its cost as metrics; GraphML, PNG, the ranking `lll affinity --recommend`
    prints (affinity_orderings.json) and every seed's raw rows (affinity_rows.json) as artifacts."""
    from search.study.recording import RunRecord, write

    settings, graph, pick, measurement = res.settings, res.graph, res.pick, res.measurement
    params = {
        "pool": settings["pool"],
        "strategy": settings["strategy"],
        "lambda": settings["lambda"],
        "seeds": ",".join(map(str, settings["seeds"])) if measurement else "",
        "tasks": ",".join(settings["tasks"]),
        "ranking": pick.how,
        "pick": ",".join(pick.order),
        **{f"train.{k}": v for k, v in settings["train"].items()},
    }
    metrics: dict[str, float] = {
        "edges_measured": sum(1 for *_, d in graph.edges(data=True) if d["n_measured"] > 0),
        "edges_harvested": sum(1 for *_, d in graph.edges(data=True) if d["n_harvested"] > 0),
        "harvested_trials": res.harvested_trials,
        "fitted_on": pick.params.fitted_on,
        "best_predicted_score": pick.predicted,  # the pick's predicted ACC
        "pick_predicted_acc_low": pick.interval[0],
        "pick_predicted_acc_high": pick.interval[1],
        "pick_stability": pick.stability,
        "pick_noise_ratio": pick.noise_ratio,
        "pair_noise": pick.noise,
    }
    if measurement is not None:
        metrics.update(trained=measurement.trained, reused=measurement.reused, seconds=measurement.seconds)
    ranking = {
        "how": pick.how,
        "params": pick.params.__dict__,
        "pick": {"order": pick.order, "predicted_acc": pick.predicted, "interval": list(pick.interval)},
        "stability": pick.stability,
        "noise_ratio": pick.noise_ratio,
        "agreement": pick.agreement,
        "trusted": pick.trusted,
        "noise": {"pair_sd": pick.noise, "measured": pick.noise_measured, "seeds": pick.seeds},
        "runners_up": [{"order": o, "predicted_acc": s} for o, s in pick.runners_up],
        "rules": res.rules,
    }
    files = [
        ("affinity", res.graphml.name, res.graphml.read_bytes()),
        ("affinity", res.png.name, res.png.read_bytes()),
        ("affinity", "affinity_orderings.json", json.dumps(ranking, indent=2).encode()),
    ]
    if measurement is not None:  # every seed's rows, so a seed can be dropped or re-averaged later
        files.append(("affinity", "affinity_rows.json", json.dumps(measurement.to_dict(), indent=2).encode()))
    tags = {"lll.kind": "affinity"}
    rec = RunRecord(settings["experiment"], "affinity graph", params, tags, None, metrics, {}, files)
    return write(settings["tracking_uri"], rec)
