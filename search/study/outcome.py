"""How a trial ended (:class:`TrialOutcome`) and THE function that tells Optuna (:func:`end_trial`).

Every trial ends here — complete, pruned, failed, or interrupted, live or recovered from MLflow
when a killed search resumes — through Optuna's public API only (``Trial.set_user_attr``,
``Study.tell``, ``Study.add_trial``), and every ended trial carries the attributes
:func:`trial_attrs` builds from its outcome, whichever way it ended. The MLflow record of an outcome
is built by :func:`search.study.recording.trial_record`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.config import StrategyConfig
from pipeline.rmatrix import RMatrix
from search.study.records import REEVALUATE
from search.study.storage import INTERRUPTED

METRIC_KEYS = ("acc", "bwt", "fwt", "forgetting", "acc_std", "bwt_std")
PER_SEED_KEYS = ("acc", "bwt", "fwt", "forgetting")  # recorded per seed as metrics ``<key>_seed<s>``
State = Literal["complete", "pruned", "failed", "interrupted"]
OPTUNA_STATE = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "interrupted": TrialState.FAIL,
}


def per_seed_metrics(metrics: dict[str, float]) -> dict[int, dict[str, float]]:
    """{seed: {acc, bwt, fwt, forgetting}} from the metrics ``acc_seed0``, ``bwt_seed0``, ..."""
    out: dict[int, dict[str, float]] = {}
    for name, v in metrics.items():
        key, sep, seed = name.rpartition("_seed")
        if sep and key in PER_SEED_KEYS and seed.isdigit():
            out.setdefault(int(seed), {})[key] = float(v)
    return {s: out[s] for s in sorted(out)}


def objective_values(metrics: dict[str, float], objective: str) -> list[float]:
    if objective == "both":
        return [metrics["acc"], metrics["bwt"]]
    return [metrics[objective]]


@dataclass(frozen=True, eq=False)
class TrialOutcome:
    """One ended trial: what Optuna keeps (state, values, attributes) and what its MLflow run holds.

    ``strategy`` is the candidate as asked (λ None: the strategy's default); ``lam`` is the λ it
    trained with. ``R`` is the mean over seeds (a pruned trial's: of the tasks done). ``per_seed``,
    ``sizes`` and ``checkpoints`` only feed the MLflow record of a live trial."""

    number: int
    state: State
    order: tuple[str, ...]
    strategy: StrategyConfig
    lam: float | None
    seeds: tuple[int, ...]
    R: RMatrix | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    values: tuple[float, ...] | None = None  # the objective values of a complete trial
    reason: str = ""  # why a trial failed
    node: dict[str, Any] = field(default_factory=dict)  # the worker that ran it (Ray node id, IP, host, device)
    mlflow_run_id: str | None = None
    per_seed: tuple[RMatrix, ...] = ()
    sizes: list[dict[str, float]] | None = None
    checkpoints: dict[int, list[bytes]] | None = None
    value_key: str = "acc"  # the per-seed metric the objective means (``seed_values``): acc or bwt
    trained_seeds: tuple[int, ...] = ()  # the seeds this trial trained (a re-evaluation: only the new ones)
    reevaluation_of: str | None = None  # a re-evaluation: the MLflow run of the ordering's previous record
    reevaluation_of_trial: int | None = None  # ... and its trial (names the run while its record is on its way)

    @classmethod
    def interrupted(cls, number: int) -> TrialOutcome:
        """A trial a killed search left running, with nothing recorded: only its number is known."""
        return cls(number, "interrupted", (), StrategyConfig(), None, ())


def trial_attrs(o: TrialOutcome) -> dict[str, Any]:
    """The user attributes of an ended trial: the same keys whichever way it ended and however it
    reached Optuna (live or recovered on resume)."""
    attrs: dict[str, Any] = {
        "order": list(o.order),
        "strategy": o.strategy.name,
        "lambda": o.lam,
        "options": dict(o.strategy.options),
        "node_ip": o.node.get("node_ip") or None,
        "cpu_kernels": o.node.get("cpu_kernels") or None,  # pipeline/cpu_kernels.py: what a rerun needs
        "mlflow_run_id": o.mlflow_run_id,
    }
    if o.state == "complete":
        attrs["R"] = o.R.values.tolist() if o.R is not None else None
        attrs.update({k: o.metrics.get(k) for k in METRIC_KEYS})
        attrs["seeds"] = list(o.seeds)
        attrs["n_seeds"] = len(o.seeds)
        per_seed = per_seed_metrics(o.metrics)
        if per_seed:  # what re-evaluation and the model sampler's noise read (issue 19)
            attrs["seed_metrics"] = {str(s): m for s, m in per_seed.items()}
            attrs["seed_values"] = {str(s): m[o.value_key] for s, m in per_seed.items() if o.value_key in m}
    elif o.state in ("failed", "interrupted"):
        attrs["fail_reason"] = o.reason if o.state == "failed" else INTERRUPTED
    return attrs


def end_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial, outcome: TrialOutcome) -> int | None:
    """Tell Optuna how ``trial`` ended; returns the number of the trial that holds the outcome.

    A live trial (:class:`optuna.Trial`) gets its attributes, then its state. A trial a killed
    search left RUNNING (a :class:`FrozenTrial`, on resume) can no longer take attributes through
    the public API: it is told FAIL by number (an interrupted trial, which does not count against
    the budget), and a recorded outcome becomes a new finished trial with the same parameters,
    intermediate values and re-evaluation tag. Safe to repeat after a second kill: an outcome already added is found
    by its MLflow run id and not added twice."""
    state = OPTUNA_STATE[outcome.state]
    values = list(outcome.values) if state == TrialState.COMPLETE and outcome.values is not None else None
    if isinstance(trial, optuna.Trial):
        for k, v in trial_attrs(outcome).items():
            trial.set_user_attr(k, v)
        study.tell(trial, values, state=state)
        return trial.number
    number = None
    if outcome.state != "interrupted":
        number = holding(study, outcome.mlflow_run_id)
        if number is None:
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    values=values,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs={**_reevaluation_tag(trial), **trial_attrs(outcome)},
                    intermediate_values=dict(trial.intermediate_values),
                )
            )
            number = holding(study, outcome.mlflow_run_id)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    return number


def _reevaluation_tag(trial: FrozenTrial) -> dict[str, Any]:
    """A re-evaluation's tag (set when it was enqueued), which the live trial keeps: the recovered
    record keeps it too, so the pruner tells it from a fresh record (search/study/records.py)."""
    return {k: v for k, v in trial.user_attrs.items() if k == REEVALUATE}


def holding(study: optuna.Study, mlflow_run_id: str | None) -> int | None:
    """The finished trial whose attributes point at this MLflow run, if any."""
    if mlflow_run_id is None:
        return None
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in study.get_trials(deepcopy=False, states=done):
        if t.user_attrs.get("mlflow_run_id") == mlflow_run_id:
            return t.number
    return None
