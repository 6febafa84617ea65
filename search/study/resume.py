"""Resume after a killed search (SIGKILL, lost driver): settle the trials it left RUNNING.

Every finished trial is written to MLflow before Optuna is told, so a trial left RUNNING in Optuna
whose nested run is FINISHED with ``lll.state=complete`` was finished: it is completed from that
record (metrics, R from ``R.json``), exactly once. The others are marked interrupted and
re-enqueued with the same parameters; runs the killed driver left RUNNING are ended as KILLED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from pipeline import tracking
from search.study.optuna_bridge import METRIC_KEYS, objective_values
from search.study.storage import complete_from_record, mark_interrupted, stale_trials


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


def _attrs_from_run(uri: str, rec: Any) -> dict[str, Any]:
    m, p = rec.data.metrics, rec.data.params
    attrs: dict[str, Any] = {
        "order": p["order"].split(","),
        "strategy": p["strategy"],
        "mlflow_run_id": rec.info.run_id,
        **{k: m[k] for k in METRIC_KEYS if k in m},
    }
    if p.get("lambda") not in (None, "None"):
        attrs["lambda"] = float(p["lambda"])
    try:  # R as the trial would have had it (the mean over seeds)
        from mlflow.artifacts import download_artifacts

        path = download_artifacts(run_id=rec.info.run_id, artifact_path="R.json", tracking_uri=uri)
        attrs["R"] = json.loads(Path(path).read_text())["R"]
    except Exception:
        pass
    return attrs


def recover(
    study: optuna.Study, uri: str | None, experiment: str, parent_run_id: str | None, objective: str
) -> Recovery:
    """Complete the stale trials already recorded, re-enqueue the rest (see the module docstring)."""
    out = Recovery()
    stale = stale_trials(study)
    recorded = _recorded_runs(uri, experiment, parent_run_id) if uri and parent_run_id else {}
    for t in stale:
        rec = recorded.get(t.number)
        if rec is not None:
            attrs = _attrs_from_run(uri, rec)
            complete_from_record(study, t, objective_values(rec.data.metrics, objective), attrs)
            out.recovered += 1
        else:
            mark_interrupted(study, t)
            if t.params:
                study.enqueue_trial(t.params, skip_if_exists=False)
                out.requeued += 1
    return out
