"""The latest-record rule (search/study/records.py) where a re-evaluated ordering used to count
several times: the driver's progress best, the harvested affinity evidence, and the pruner.

Real Optuna studies (journal files) built as a re-evaluating search records them, a real
OptunaBridge fed worker-shaped results; no Ray, no training.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import tiny_pool_yaml
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from pipeline.config import StrategyConfig
from pipeline.rmatrix import RMatrix
from search.graph.evidence import evidence_from_r, harvest_trials, trial_outcomes
from search.orders.space import SearchSpace
from search.study.launch import SearchRequest, new_settings
from search.study.optuna_bridge import OptunaBridge
from search.study.outcome import TrialOutcome, end_trial
from search.study.racing import SeedBook, key_of
from search.study.records import REEVALUATE
from search.study.storage import BottomQuarterPruner, create_study, open_storage
from tasks.registry import load_pool


def r_matrix(final: float, shift: float = 0.0) -> list[list[float]]:
    """A 3-task R (init row, then after each task) whose ACC (mean of the last row) is ``final``."""
    return [[0.1 + shift] * 3, [0.9, 0.1 + shift, 0.1], [0.8, 0.9, 0.1 + shift], [final] * 3]


def add_record(study: optuna.Study, space: SearchSpace, order, seeds: list[int], acc: float, shift: float = 0.0):
    """A COMPLETE trial with the attributes a search records (R, per-seed metrics, seeds)."""
    params = space.trial_params(list(order), "naive", None)
    dists = {k: IntDistribution(0, len(order) - 1 - j) for j, k in enumerate(params)}
    per_seed = {str(s): {"acc": acc, "bwt": -0.1, "fwt": 0.0, "forgetting": 0.1} for s in seeds}
    attrs = {"order": list(order), "strategy": "naive", "lambda": None, "seeds": seeds, "n_seeds": len(seeds)}
    attrs.update({"acc": acc, "bwt": -0.1, "fwt": 0.0, "R": r_matrix(acc, shift), "seed_metrics": per_seed})
    study.add_trial(create_trial(value=acc, params=params, distributions=dists, user_attrs=attrs))
    return study.trials[-1]


@pytest.fixture
def pool(tmp_path: Path):
    (tmp_path / "pool.yaml").write_text(tiny_pool_yaml("tiny-latest", 60, 40))
    return load_pool(str(tmp_path / "pool.yaml"))


def new_study(tmp_path: Path, pool, name: str, **req):
    settings = new_settings(SearchRequest(pool="pool.yaml", strategies=["naive"], tracking_uri=None, **req), pool, 8)
    study = create_study(name, open_storage(f"journal:///{tmp_path}/optuna.journal"), settings)
    return study, settings, SearchSpace(list(pool.names), ["naive"])


# ---- 1. the progress line's best -----------------------------------------------------------------
def test_progress_best_drops_an_ordering_reevaluated_below_the_next(tmp_path: Path, pool) -> None:
    """A's lucky first seed (0.9) is the best; its live re-evaluation on a second seed (0.2) makes
    A's value 0.55, below B's 0.6: the progress best is B, live and after a resume, and not the
    stale 1-seed record every complete trial's maximum still is."""
    study, settings, space = new_study(tmp_path, pool, "best", seeds=1, max_seeds=3)
    u, r, p = pool.names
    first, second = settings.all_seeds[:2]
    a = add_record(study, space, (u, r, p), [first], 0.9)
    b = add_record(study, space, (r, u, p), [first], 0.6)
    bridge = OptunaBridge(study, settings)
    assert bridge.progress_best() == {"acc": 0.9, "bwt": -0.1, "number": a.number}

    req = {"seed": second, "order": [u, r, p], "strategy": "naive", "lambda": None}
    study.enqueue_trial(a.params, user_attrs={REEVALUATE: req})
    run = bridge.ask()
    assert run.reevaluate == req and run.seeds == [second]
    run.prior = SeedBook(study, settings).prior(key_of(req))
    init = {t: 0.1 for t in pool.names}
    rows = [init] + [{t: 0.2 for t in pool.names}] * 3  # the second seed: ACC 0.2
    for step in (1, 2, 3):
        bridge.take(run, second, {"rows": rows[: step + 1], "lam": None, "trained": 1, "seconds": 0.0}, {})
    assert not bridge.should_prune(run)
    outcome = bridge.outcome(run, "complete")
    assert outcome.metrics["acc"] == pytest.approx(0.55)
    bridge.end(run, outcome)

    assert bridge.progress_best() == {"acc": 0.6, "bwt": -0.1, "number": b.number}
    assert OptunaBridge(study, settings).progress_best() == bridge.best  # a resumed driver's first line
    every = study.get_trials(states=(TrialState.COMPLETE,))
    assert max(every, key=lambda t: t.user_attrs["acc"]).number == a.number  # what it used to show


def test_progress_best_without_reevaluation_is_the_best_trial_as_before(tmp_path: Path, pool) -> None:
    """No --max-seeds: the best kept as trials end, and read from the study, is the maximum over
    every complete trial, first one on a tie (a TPE repeat of an ordering counts, as before)."""
    study, settings, space = new_study(tmp_path, pool, "plain", seeds=2)
    u, r, p = pool.names
    seeds = settings.seed_list
    for order, acc in [((u, r, p), 0.5), ((r, u, p), 0.7), ((u, r, p), 0.8), ((p, r, u), 0.8)]:
        add_record(study, space, order, seeds, acc)
    bridge = OptunaBridge(study, settings)
    assert bridge.progress_best() == {"acc": 0.8, "bwt": -0.1, "number": 2}
    bridge.note_best({"acc": 0.85, "bwt": -0.2, "number": 9})  # what end() does for a new trial
    assert bridge.progress_best() == {"acc": 0.85, "bwt": -0.2, "number": 9}


# ---- 2. the harvested affinity evidence -----------------------------------------------------------
def test_harvest_takes_each_ordering_once_at_its_latest_record(tmp_path: Path, pool) -> None:
    """(u, r, p) recorded on 1, 2 and 3 seeds, (r, u, p) on 1 and 2, (p, r, u) once: the harvest
    holds three orderings, each with its latest R, as if the study held nothing else."""
    study, settings, space = new_study(tmp_path, pool, "harvest", seeds=1, max_seeds=3)
    u, r, p = pool.names
    s0, s1, s2 = settings.all_seeds
    history = [
        ((u, r, p), [s0], 0.70),
        ((r, u, p), [s0], 0.65),
        ((p, r, u), [s0], 0.60),
        ((u, r, p), [s0, s1], 0.66),
        ((r, u, p), [s0, s1], 0.68),
        ((u, r, p), [s0, s1, s2], 0.64),
    ]
    trials = [add_record(study, space, o, s, acc, shift=i / 100) for i, (o, s, acc) in enumerate(history)]
    latest = [trials[i] for i in (2, 4, 5)]
    every = study.get_trials(deepcopy=False)

    got = harvest_trials(every, "naive")
    assert got.to_dict() == harvest_trials(latest, "naive").to_dict()
    assert got.transfer[(u, r)].n == 1 and got.init[u].n == 3  # before: 3 and 6 observations
    want = evidence_from_r([u, r, p], trials[5].user_attrs["R"])  # the 3-seed R, not a stale one
    assert got.transfer[(u, r)].mean == pytest.approx(want.transfer[(u, r)].mean)
    assert sorted(trial_outcomes(every, "naive")) == sorted([([p, r, u], 0.60), ([r, u, p], 0.68), ([u, r, p], 0.64)])
    assert harvest_trials(every, "ewc").to_dict() == harvest_trials([], None).to_dict()


# ---- 3. the pruner -------------------------------------------------------------------------------
def pruner_study(tmp_path: Path, fresh: int, reevaluations: int) -> optuna.Study:
    """``fresh`` complete trials that reported 0.5-0.8 after the second task, and ``reevaluations``
    complete re-evaluations (tagged, no per-step values: they are never pruned, so never report)."""
    storage = open_storage(f"journal:///{tmp_path}/prune-{fresh}-{reevaluations}.journal")
    study = optuna.create_study(storage=storage, direction="maximize", pruner=BottomQuarterPruner(startup=4))
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(fresh):
        v, steps = 0.5 + 0.1 * i, {0: 0.9, 1: 0.5 + 0.1 * i}
        study.add_trial(create_trial(value=v, params={"x": 0.5}, distributions=dist, intermediate_values=steps))
    for _ in range(reevaluations):
        attrs = {REEVALUATE: {"seed": 1, "order": ["a", "b"], "strategy": "naive", "lambda": None}}
        study.add_trial(create_trial(value=0.6, params={"x": 0.5}, distributions=dist, user_attrs=attrs))
    return study


def pruned(study: optuna.Study, value: float, reevaluation: bool = False) -> bool:
    if reevaluation:
        study.enqueue_trial({"x": 0.5}, user_attrs={REEVALUATE: {"seed": 2}})
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.report(0.9, 0)
    trial.report(value, 1)
    verdict = trial.should_prune()
    study.tell(trial, state=TrialState.FAIL)
    return verdict


def test_pruner_counts_and_compares_fresh_records_only(tmp_path: Path) -> None:
    """Startup 4: three fresh trials and two re-evaluations are five complete trials but three
    values to compare with — not yet. A fourth fresh trial starts pruning. A re-evaluation is never
    pruned, even one that reports a value in the bottom quarter."""
    assert not pruned(pruner_study(tmp_path, 3, 2), 0.1)
    study = pruner_study(tmp_path, 4, 2)
    assert pruned(study, 0.1) and not pruned(study, 0.75)
    assert not pruned(study, 0.1, reevaluation=True)
    assert pruned(pruner_study(tmp_path, 5, 0), 0.1)  # without re-evaluation: as before


def test_a_recovered_reevaluation_keeps_its_tag(tmp_path: Path) -> None:
    """A killed search's re-evaluation, recorded in MLflow and completed on resume, carries the tag
    the live one has, so the pruner still tells it from a fresh record."""
    storage = open_storage(f"journal:///{tmp_path}/recover.journal")
    study = optuna.create_study(storage=storage, direction="maximize")
    tag = {"seed": 1, "order": ["a", "b", "c"], "strategy": "naive", "lambda": None}
    study.enqueue_trial({"x": 0.5}, user_attrs={REEVALUATE: tag})
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    stale = study.get_trials(states=(TrialState.RUNNING,))[0]
    R = RMatrix(["a", "b", "c"], r_matrix(0.6))
    outcome = TrialOutcome(
        stale.number, "complete", ("a", "b", "c"), StrategyConfig(name="naive"), None, (0, 1), R=R,
        metrics={"acc": 0.6, "bwt": -0.1}, values=(0.6,), mlflow_run_id="run-1",
    )  # fmt: skip
    number = end_trial(study, stale, outcome)
    held = study.trials[number]
    assert number != stale.number and held.state == TrialState.COMPLETE
    assert held.user_attrs[REEVALUATE] == tag and held.user_attrs["seeds"] == [0, 1]
