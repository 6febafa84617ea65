"""Resume after a killed search (SIGKILL, lost driver): settle the trials it left RUNNING.

Every finished trial is written to MLflow before Optuna is told, so a trial left RUNNING in Optuna
whose nested run is FINISHED with ``lll.state=complete`` was finished: its outcome is rebuilt from
that record (metrics, R from ``R.json``, the worker's node) and ended through the same
:func:`search.study.outcome.end_trial` as a live trial, exactly once. The public API cannot give a
RUNNING trial attributes after the fact, so the outcome becomes a new complete trial (same
parameters); the run's ``optuna_trial_number`` tag is moved to it (its param keeps the number the
trial was asked as). The other stale trials are told FAIL (interrupted) and re-enqueued with the
same parameters; runs the killed driver left RUNNING are ended as KILLED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from pipeline import tracking
from pipeline.config import StrategyConfig
from pipeline.rmatrix import RMatrix
from search.study.outcome import TrialOutcome, end_trial, objective_values
from search.study.racing import REEVALUATE
from search.study.recording import NODE_TAGS
from search.study.settings import StudySettings
from search.study.storage import stale_trials


@dataclass
class Recovery:
    recovered: int = 0  # stale trials found already recorded in MLflow
    requeued: int = 0  # stale trials to run again


def _recorded_runs(uri: str, experiment: str, parent_run_id: str) -> dict[int, Any]:
    """Finished trial runs under the parent, by trial number; half-written ones are ended KILLED."""
    mc = tracking.client(uri)
    exp = mc.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    recorded: dict[int, Any] = {}
    runs = mc.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50000)
    for r in runs:
        num = int(r.data.tags.get("optuna_trial_number", -1))
        if r.info.status == "RUNNING":
            mc.set_terminated(r.info.run_id, "KILLED")
            mc.set_tag(r.info.run_id, "lll.state", "interrupted")
        elif r.info.status == "FINISHED" and r.data.tags.get("lll.state") == "complete":
            recorded[num] = r
    return recorded


def outcome_from_run(uri: str, rec: Any, settings: StudySettings) -> TrialOutcome | None:
    """The outcome of a trial as its MLflow run recorded it; None when its R cannot be read."""
    m, p, tags = rec.data.metrics, rec.data.params, rec.data.tags
    try:
        from mlflow.artifacts import download_artifacts

        path = download_artifacts(run_id=rec.info.run_id, artifact_path="R.json", tracking_uri=uri)
        R = RMatrix.from_dict(json.loads(Path(path).read_text()))
    except Exception:
        return None
    name = p["strategy"]
    lam = None if p.get("lambda") in (None, "None") else float(p["lambda"])
    seeds = tuple(int(s) for s in p.get("seeds", p.get("seed", "0")).split(","))
    metrics = dict(m)
    return TrialOutcome(
        number=int(tags["optuna_trial_number"]),
        state="complete",
        order=tuple(p["order"].split(",")),
        strategy=StrategyConfig(name=name, lam=lam, options=settings.strategy_options(name)),
        lam=lam,
        seeds=seeds,
        R=R,
        metrics=metrics,
        values=tuple(objective_values(metrics, settings.objective)),
        node={k: tags.get(tag) for k, tag in NODE_TAGS.items()},
        mlflow_run_id=rec.info.run_id,
        value_key="bwt" if settings.objective == "bwt" else "acc",
    )


def recover(study: optuna.Study, settings: StudySettings, uri: str | None, parent_run_id: str | None) -> Recovery:
    """Complete the stale trials already recorded, re-enqueue the rest (see the module docstring)."""
    out = Recovery()
    stale = stale_trials(study)
    recorded = _recorded_runs(uri, study.study_name, parent_run_id) if uri and parent_run_id else {}
    for t in stale:
        rec = recorded.get(t.number)
        outcome = outcome_from_run(uri, rec, settings) if rec is not None else None
        if outcome is not None:
            number = end_trial(study, t, outcome)
            if number is not None and number != t.number:
                tracking.client(uri).set_tag(rec.info.run_id, "optuna_trial_number", str(number))
            out.recovered += 1
        else:
            _interrupted(study, t, uri, rec)
            out.requeued += int(bool(t.params))
    return out


def _interrupted(study: optuna.Study, t: FrozenTrial, uri: str | None, rec: Any) -> None:
    """End a stale trial as interrupted (FAIL, uncounted) and enqueue its parameters again."""
    if rec is not None:  # recorded, but its R is unreadable: it is trained again
        tracking.client(uri).set_tag(rec.info.run_id, "lll.state", "interrupted")
    end_trial(study, t, TrialOutcome.interrupted(t.number))
    if t.params:  # a re-evaluation keeps the seed it was to train (search/study/racing.py)
        keep = {k: v for k, v in t.user_attrs.items() if k == REEVALUATE}
        study.enqueue_trial(t.params, user_attrs=keep or None, skip_if_exists=False)
