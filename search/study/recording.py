"""THE MLflow recording path: one run per trained ordering, for `lll run`, `lll search` and `lll affinity`.

A :class:`RunRecord` holds everything one MLflow run gets — name, tags, params, R, metrics,
per-task series, artifact files (as bytes) and the final status — and :func:`write` writes it.
The layout (docs/architecture.md, "Tracking and the stores"): params ``order, strategy, lambda, seed(s), pool,
pool_fingerprint, opt.*, train.*``; metrics ACC/BWT/FWT/forgetting (+ std over seeds) and the
series ``running_acc, params, stored_bytes`` (step = tasks trained); artifacts ``R.json``,
``R.png``, ``per_seed/R_seed<s>.json`` and ``checkpoints/...``; tags with the worker's node.

A search trial's run holds ``R.json`` (the MLflow UI shows it); its ``R.png`` is drawn when the
search ends, for the orderings a user looks at (:func:`log_heatmaps`: the recommendation and the
top :data:`HEATMAP_TOP`), not per trial: drawing and uploading it was a third of the driver's CPU
per record (bench/out/driver_ceiling.json, ``record_cpu``). `lll run` and held-out validation runs
keep theirs.

A search records off its critical path: :class:`search.study.recorder.Recorder` writes on
background threads (one for SQLite, several for a server) and hands each finished record back to
the driver, which only then tells Optuna — so every trial Optuna calls finished is already in
MLflow (resume relies on it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.rmatrix import RMatrix
from search.study.outcome import TrialOutcome
from search.study.settings import StudySettings


def ordering_params(
    pool_name: str,
    pool_fingerprint: str,
    order: list[str] | tuple[str, ...],
    strategy: StrategyConfig,
    lam: float | None,
    train: TrainConfig,
    seed: int,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """The MLflow params of a trained ordering: enough to re-run it exactly (``seeds``: a search's
    seeds, whose mean R the run holds)."""
    params: dict[str, Any] = {
        "pool": pool_name,
        "pool_fingerprint": pool_fingerprint,
        "order": ",".join(order),
        "strategy": strategy.name,
        "lambda": lam,
        "seed": seed,
    }
    if seeds is not None:
        params["seeds"] = ",".join(map(str, seeds))
    params.update({f"opt.{k}": v for k, v in strategy.options.items()})
    params.update({f"train.{k}": v for k, v in train.model_dump(mode="json").items()})
    return params


def running_accuracy(r: RMatrix) -> list[float]:
    """Mean accuracy over the tasks trained so far, after each task (what pruning watches)."""
    return [float(r.values[i, :i].mean()) for i in range(1, r.T + 1)]


def size_series(sizes: list[dict[str, float]]) -> dict[str, list[float]]:
    """One per-task series per size field: ``params``, ``stored_bytes`` and whatever the strategy's
    ``size_report`` adds (a field missing after some task is NaN there, so steps stay aligned)."""
    keys = dict.fromkeys(k for s in sizes for k in s)
    return {k: [float(s.get(k, float("nan"))) for s in sizes] for k in keys}


@dataclass
class RunRecord:
    """One MLflow run, ready to write. ``files``: (artifact folder, file name, bytes)."""

    experiment: str
    name: str
    params: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    rmatrix: RMatrix | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)
    status: str = "FINISHED"
    parent_run_id: str | None = None
    heatmap: bool = True
    ref: Hashable | None = None  # how a later record of the same Recorder may name this run
    tag_refs: dict[str, Hashable] = field(default_factory=dict)  # tag → ref of an earlier record: its run id


def write(uri: str, rec: RunRecord, experiments: dict[str, str] | None = None) -> str:
    """Write ``rec`` as one MLflow run and end it with its status; returns the run id. Four store
    calls: create the run with its tags, one batch of params and metrics, one folder of
    artifacts, the end (``experiments``: experiment ids already looked up, reused)."""
    run_id = tracking.start_run(
        uri, rec.experiment, rec.name, tags=rec.tags, parent_run_id=rec.parent_run_id, experiments=experiments
    )
    tracking.log_ordering_run(
        uri,
        run_id,
        rec.rmatrix,
        rec.params,
        extra_metrics=rec.metrics,
        step_metrics=rec.series,
        heatmap=rec.heatmap,
        blobs=rec.files,
    )
    tracking.end_run(uri, run_id, rec.status)
    return run_id


@dataclass
class StudyContext:
    """What every trial record of one search shares: the study, its parent run, its settings."""

    study: str
    parent_run_id: str | None
    settings: StudySettings

    @property
    def experiment(self) -> str:
        return self.study  # one MLflow experiment per study


# a worker's node info (pipeline/workers.py: info) → the MLflow tag that records it (resume reads it back)
NODE_TAGS = {"node_id": "ray_node_id", "node_ip": "ray_node_ip", "host": "host", "device": "device",
             "cpu_kernels": "cpu_kernels"}  # fmt: skip


def node_tags(node: dict[str, Any]) -> dict[str, str]:
    tags = {tag: str(node.get(key, "")) for key, tag in NODE_TAGS.items()}
    tags["gpus"] = f"{float(node.get('gpus', 0.0)):g}"  # the worker's GPU share (--gpus-per-worker)
    return tags


RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED", "interrupted": "KILLED"}


def trial_record(ctx: StudyContext, o: TrialOutcome) -> RunRecord:
    """THE MLflow run of a search trial, whichever way it ended: R = the mean over seeds (a pruned
    trial's: of the tasks done), per-seed R when several, checkpoints under ``checkpoints/seed<s>/``
    (``final.pt``, or ``after_task_<j>.pt`` for all), the reason of a failure as a tag."""
    st = ctx.settings
    tags = {"optuna_study": ctx.study, "optuna_trial_number": str(o.number), "lll.state": o.state}
    tags.update(node_tags(o.node))
    if o.state == "failed":
        tags["fail_reason"] = o.reason[:5000]
    trained = list(o.trained_seeds or o.seeds)
    refs: dict[str, Hashable] = {}
    if o.reevaluation_of_trial is not None or trained != list(o.seeds):  # a re-evaluation (search/study/racing.py)
        tags["lll.reevaluation"] = "1"
        tags["lll.seeds_trained"] = ",".join(map(str, trained))
        if o.reevaluation_of:
            tags["lll.reevaluation_of"] = o.reevaluation_of  # the ordering's previous record
        elif o.reevaluation_of_trial is not None:  # still on its way: the recorder names it (written first)
            refs["lll.reevaluation_of"] = ("trial", o.reevaluation_of_trial)
    seeds = list(o.seeds)
    params = ordering_params(st.pool, st.pool_fingerprint, o.order, o.strategy, o.lam, st.train, seeds[0], seeds)
    params["optuna_trial_number"] = o.number
    series = size_series(o.sizes) if o.sizes else {}
    if o.R is not None:
        series["running_acc"] = running_accuracy(o.R)
    files: list[tuple[str, str, bytes]] = []
    if len(o.per_seed) > 1 or st.racing:  # every trained seed's own R
        files += [
            ("per_seed", f"R_seed{s}.json", r.to_json().encode()) for s, r in zip(trained, o.per_seed, strict=False)
        ]
    for s, blobs in (o.checkpoints or {}).items():
        for j, blob in enumerate(blobs):
            name = "final.pt" if st.checkpoints == "final" else f"after_task_{j + 1}.pt"
            files.append((f"checkpoints/seed{s}", name, blob))
    name = f"trial {o.number}: {','.join(o.order)}"
    if trained != seeds:
        name += f" (re-evaluation: seed {','.join(map(str, trained))})"
    return RunRecord(
        ctx.experiment,
        name,
        params,
        tags,
        o.R,
        dict(o.metrics),
        series,
        files,
        RUN_STATUS[o.state],
        ctx.parent_run_id,
        heatmap=False,  # drawn at the end of the search for the top orderings: log_heatmaps
        ref=("trial", o.number),
        tag_refs=refs,
    )


def step_series(result: Any) -> dict[str, list[float]]:
    """The per-task series of a RunResult: running accuracy and every size field."""
    return {"running_acc": running_accuracy(result.rmatrix), **size_series(result.sizes)}


def seed_metrics(rmats: list[RMatrix]) -> dict[str, float]:
    """ACC/BWT/FWT/forgetting as the mean over seeds of each seed's value, and the std of ACC and
    BWT: what a search trial records and `lll run --seeds` prints, so both give the same number."""
    import numpy as np

    per = {k: [getattr(r, k)() for r in rmats] for k in ("acc", "bwt", "fwt", "forgetting")}
    metrics = {k: float(np.mean(v)) for k, v in per.items()}
    metrics.update({f"{k}_std": float(np.std(v)) for k, v in per.items() if k in ("acc", "bwt")})
    return metrics


def run_result_record(
    experiment: str,
    name: str,
    pool: Any,
    order: list[str],
    strategy: StrategyConfig,
    train: TrainConfig,
    seeds: list[int],
    results: list[Any],
    checkpoint: bool = True,
) -> RunRecord:
    """`lll run`'s run (``results``: one pipeline RunResult per seed). One seed: its R and
    ``checkpoints/final.pt``. Several: the mean R, the seed-mean metrics (and ``acc_seed<s>``,
    ``bwt_seed<s>``), ``per_seed/R_seed<s>.json`` and ``checkpoints/seed<s>/final.pt``."""
    from pipeline.checkpoint import checkpoint_bytes

    lam = results[0].strategy.lam
    several = len(results) > 1
    params = ordering_params(
        pool.name, pool.fingerprint(), order, strategy, lam, train, seeds[0], seeds if several else None
    )
    rmats = [r.rmatrix for r in results]
    series = step_series(results[0])
    metrics: dict[str, float] = {
        "seconds": sum(r.seconds for r in results),
        "tasks_trained": sum(r.trained for r in results),
    }
    files: list[tuple[str, str, bytes]] = []
    if several:
        metrics.update(seed_metrics(rmats))
        for s, r in zip(seeds, rmats, strict=True):
            metrics.update({f"acc_seed{s}": r.acc(), f"bwt_seed{s}": r.bwt()})
            files.append(("per_seed", f"R_seed{s}.json", r.to_json().encode()))
        series["running_acc"] = running_accuracy(RMatrix.mean(rmats))
    if checkpoint:
        for s, res in zip(seeds, results, strict=True):
            blob = checkpoint_bytes(res.model, res.strategy, {"order": list(res.rmatrix.tasks), "seed": s})
            files.append((f"checkpoints/seed{s}" if several else "checkpoints", "final.pt", blob))
    return RunRecord(experiment, name, params, {}, RMatrix.mean(rmats), metrics, series, files)


# ---- the search's parent run ------------------------------------------------------------------
def open_parent_run(study: Any, settings: StudySettings, uri: str) -> str:
    """The search's parent run (tag lll.kind=search, the study's settings as params), created once
    and continued (status RUNNING again) on --resume."""
    import json

    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent:
        tracking.client(uri).update_run(parent, status="RUNNING")
        return parent
    parent = tracking.start_run(uri, study.study_name, f"search {study.study_name}", tags={"lll.kind": "search"})
    stored = settings.to_user_attrs()
    params = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in stored.items() if k != "pool_spec"}
    tracking.log_ordering_run(uri, parent, None, params)
    study.set_user_attr("mlflow_parent_run_id", parent)
    return parent


def close_parent_run(study: Any, uri: str, parent: str, summary: Any) -> dict[str, Any] | None:
    """Study-level artifacts (Pareto front, ACC distribution, recommended order) and metrics,
    then FINISHED. Returns the recommendation (None when no trial completed)."""
    import contextlib
    import json

    from search.study.recommend import recommendation
    from search.study.report import acc_distribution_plot, pareto_plot
    from tasks.errors import LLLError

    mc = tracking.client(uri)
    rec = None
    with contextlib.suppress(LLLError):
        rec = recommendation(study)
    with tempfile.TemporaryDirectory() as tmp:
        if rec is not None:
            p = Path(tmp) / "recommended_order.json"
            p.write_text(json.dumps(rec, indent=2))
            mc.log_artifact(parent, str(p))
            mc.log_artifact(parent, str(pareto_plot(study, Path(tmp) / "pareto.png")))
            mc.log_artifact(parent, str(acc_distribution_plot(study, Path(tmp) / "acc_distribution.png")))
            mc.log_metric(parent, "best_acc", rec["acc"])
            mc.log_metric(parent, "best_bwt", rec["bwt"])
    for k in ("complete", "pruned", "failed", "trained", "reused", "saved_by_pruning"):
        mc.log_metric(parent, f"search_{k}", getattr(summary, k))
    log_heatmaps(study, uri, rec)
    mc.set_terminated(parent, "FINISHED")
    return rec


HEATMAP_TOP = 10  # orderings whose trial runs get an R.png when a search ends


def heatmap_trials(study: Any, rec: dict[str, Any] | None, top: int = HEATMAP_TOP) -> list[Any]:
    """The complete trials a user looks at: each ordering's latest record, best ``top`` by the
    objective (ACC for ``both``, plus its ACC/BWT Pareto front), and the recommendation's run."""
    from search.study.recommend import complete_trials, pareto_front
    from search.study.records import latest_trials
    from search.study.storage import study_settings

    objective = study_settings(study).objective
    shown = latest_trials(complete_trials(study))
    trials = [t for t in shown if t.user_attrs.get("R") and t.user_attrs.get("mlflow_run_id")]
    key = "bwt" if objective == "bwt" else "acc"
    chosen = sorted(trials, key=lambda t: (-t.user_attrs[key], t.number))[:top]
    if objective == "both":
        chosen += pareto_front(trials)
    if rec is not None:
        chosen += [t for t in trials if t.user_attrs["mlflow_run_id"] == rec.get("mlflow_run_id")]
    return list({t.number: t for t in chosen}.values())


def log_heatmaps(study: Any, uri: str, rec: dict[str, Any] | None = None, top: int = HEATMAP_TOP) -> int:
    """R.png (the trial's R as recorded, drawn with Pillow) into the runs of :func:`heatmap_trials`
    that lack one; returns how many were added (a resumed search draws only the new ones)."""
    import numpy as np

    mc = tracking.client(uri)
    added = 0
    for t in heatmap_trials(study, rec, top):
        run_id = t.user_attrs["mlflow_run_id"]
        if any(a.path == "R.png" for a in mc.list_artifacts(run_id)):
            continue
        r = RMatrix(tuple(t.user_attrs["order"]), np.array(t.user_attrs["R"], dtype=np.float64))
        tracking.log_blobs(uri, run_id, [("", "R.png", r.heatmap_bytes())])
        added += 1
    return added
