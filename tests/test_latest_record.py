"""One observation per ordering (issue 19 follow-up): with re-evaluation an ordering has several
COMPLETE trials (a 1-seed record, a 2-seed record, ...), and TPE and `lll report` read only its
latest record, while a study without re-evaluation gives exactly what it gave before.

Real Optuna studies (in memory, and a journal file for `lll report`), no Ray, no training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from helpers import lll, tiny_pool_yaml
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from search.orders.lehmer import order_to_code, param_names
from search.orders.space import Candidate, SearchSpace
from search.propose.sampler import PermutationSampler
from search.study.launch import SearchRequest, new_settings
from search.study.records import REEVALUATE
from search.study.storage import create_study, make_sampler, open_storage
from search.study.tpe import LatestRecordView
from tasks.registry import load_pool

TASKS = ["a", "b", "c", "d"]
NAMES = param_names(len(TASKS))
DISTS = {p: IntDistribution(0, len(TASKS) - 1 - i) for i, p in enumerate(NAMES)}
ORDERS = [  # eight distinct orderings; the first is re-evaluated
    ("a", "b", "c", "d"),
    ("b", "a", "c", "d"),
    ("c", "d", "a", "b"),
    ("d", "c", "b", "a"),
    ("a", "c", "b", "d"),
    ("b", "d", "a", "c"),
    ("c", "a", "d", "b"),
    ("d", "b", "c", "a"),
]
VALUES = [0.9, 0.6, 0.55, 0.5, 0.62, 0.58, 0.52, 0.57]  # ORDERS[0]'s first seed is lucky
REEVALUATED = 0.4  # ... its 2-seed mean is the worst


def record(order: tuple[str, ...], value: float, seeds: list[int]) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial as the search records it (the attributes the latest-record rule reads)."""
    attrs = {"order": list(order), "strategy": "naive", "lambda": None, "seeds": seeds, "n_seeds": len(seeds)}
    attrs.update({"acc": value, "bwt": -0.1, "fwt": 0.0})
    params = dict(zip(NAMES, order_to_code(list(order), TASKS), strict=True))
    return create_trial(value=value, params=params, distributions=DISTS, user_attrs=attrs)


def raced_study(sampler: optuna.samplers.BaseSampler, stale: bool) -> optuna.Study:
    """Eight orderings on seed 0; ORDERS[0] re-evaluated on seed 1 at the end. ``stale``: keep its
    superseded 1-seed record (what a re-evaluating search holds), else only its latest record."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for i, (order, value) in enumerate(zip(ORDERS, VALUES, strict=True)):
        if i > 0 or stale:
            study.add_trial(record(order, value, [0]))
    study.add_trial(record(ORDERS[0], REEVALUATED, [0, 1]))
    return study


def asks(study: optuna.Study, k: int = 5) -> list[dict]:
    """``k`` suggestions, each left running (the constant liar sees the earlier ones)."""
    return [study.ask(DISTS).params for _ in range(k)]


def test_tpes_view_holds_each_orderings_latest_record_only() -> None:
    study = raced_study(make_sampler(0, "tpe"), stale=True)
    normal = study.ask(DISTS)  # a new ordering, running: the constant liar's point, kept
    again = dict(zip(NAMES, order_to_code(list(ORDERS[1]), TASKS), strict=True))
    study.enqueue_trial(again, user_attrs={REEVALUATE: {"seed": 1, "order": list(ORDERS[1])}})
    rerun = study.ask(DISTS)  # ORDERS[1] re-evaluated, running: already observed, left out
    assert rerun.params == again and REEVALUATE in rerun.user_attrs

    seen = LatestRecordView(study).get_trials(deepcopy=False)
    every = study.get_trials(deepcopy=False)
    assert [t.number for t in every] == list(range(11))
    assert [t.number for t in seen] == [*range(1, 9), normal.number]  # not 0 (stale), not the re-evaluation
    latest = {tuple(t.user_attrs["order"]): t.value for t in seen if t.state == TrialState.COMPLETE}
    assert latest[ORDERS[0]] == REEVALUATED and len(latest) == len(ORDERS)
    assert LatestRecordView(study).trials == LatestRecordView(study).get_trials()  # every read path filters
    assert [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))] == list(range(9))  # the study keeps all


def test_tpe_learns_from_the_latest_record_not_the_lucky_first_seed() -> None:
    """What TPE suggests on the re-evaluated study is bit for bit what plain TPE suggests on the
    same study without the superseded record. Plain TPE on the re-evaluated study suggests other
    points (the lucky first seed is its best trial), so the comparison tells the two apart."""
    for seed in (0, 3):
        plain = dict(seed=seed, constant_liar=True, multivariate=True, n_startup_trials=5)
        ours = asks(raced_study(make_sampler(seed, "tpe"), stale=True))
        assert ours == asks(raced_study(optuna.samplers.TPESampler(**plain), stale=False))
        assert ours != asks(raced_study(optuna.samplers.TPESampler(**plain), stale=True))


def lookup(c: Candidate) -> float:
    """A deterministic objective: task a late is good, si a little better, λ near 30 best."""
    lam = c.strategy.lam or 30.0
    return 0.5 + 0.05 * c.order.index("a") + 0.02 * (c.strategy.name == "si") - 0.01 * abs(math.log10(lam / 30))


def search(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict]:
    """``n`` asks over the real search space (orderings × {ewc, si} × λ) with one trial always
    running (the constant liar at work), told with the attributes the search records on 2 seeds."""
    space = SearchSpace(TASKS, ["ewc", "si"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    asked, running = [], []
    for _ in range(n):
        trial = study.ask()
        running.append((trial, space.suggest(trial)))
        asked.append(dict(trial.params))
        if len(running) == 2:
            t, c = running.pop(0)
            attrs = {"order": list(c.order), "strategy": c.strategy.name, "lambda": c.strategy.lam, "seeds": [0, 1]}
            for k, v in attrs.items():
                t.set_user_attr(k, v)
            study.tell(t, lookup(c))
    return asked


@pytest.mark.parametrize("kind", ["tpe", "model", "random"])
def test_without_reevaluation_suggestions_are_bit_identical_to_before(kind: str) -> None:
    """The samplers the search builds against the ones it built before (plain TPESampler; the
    model sampler with its plain TPE for strategy and λ): the same suggestions, to the last bit."""
    before = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=5, constant_liar=True, multivariate=True, n_startup_trials=5),
        "model": lambda: PermutationSampler(TASKS, seed=5),
        "random": lambda: optuna.samplers.RandomSampler(seed=5),
    }[kind]
    n = 12 if kind == "model" else 30
    got = search(make_sampler(5, kind, TASKS), n)
    assert got == search(before(), n)
    assert len({json.dumps(p, sort_keys=True) for p in got}) > n // 2  # a search, not one point repeated


# ---- `lll report` ------------------------------------------------------------------------------
R3 = [[0.1, 0.1, 0.1], [0.9, 0.1, 0.1], [0.7, 0.9, 0.1], [0.6, 0.7, 0.9]]  # (T+1) × T


def test_report_shows_each_ordering_once_at_its_latest_record(tmp_path: Path) -> None:
    """A study of 3-task orderings on 1 seed (--max-seeds 3): one ordering re-evaluated twice, one
    once. The plots' data hold one point per ordering, its latest record with its seed count; the
    recommended R is that of the best ordering's latest record, and the report says how many
    orderings were re-evaluated."""
    (tmp_path / "pool.yaml").write_text(tiny_pool_yaml("tiny-report", 60, 40))
    pool = load_pool(str(tmp_path / "pool.yaml"))
    url = f"journal:///{tmp_path}/optuna.journal"
    req = SearchRequest(pool="pool.yaml", strategies=["naive"], seeds=1, max_seeds=3, tracking_uri=None)
    study = create_study("rep", open_storage(url), new_settings(req, pool, 8))
    space = SearchSpace(list(pool.names), ["naive"])
    u, r, p = pool.names
    history = [  # (order, seeds, acc): the last record of an ordering is its value
        ((u, r, p), [0], 0.70),
        ((r, u, p), [0], 0.65),
        ((p, r, u), [0], 0.60),
        ((u, r, p), [0, 1], 0.66),
        ((u, p, r), [0], 0.55),
        ((r, u, p), [0, 1], 0.68),
        ((u, r, p), [0, 1, 2], 0.64),
    ]
    for i, (order, seeds, acc) in enumerate(history):
        params = space.trial_params(list(order), "naive", None)
        dists = {k: IntDistribution(0, len(order) - 1 - j) for j, k in enumerate(params)}
        attrs = {"order": list(order), "strategy": "naive", "lambda": None, "seeds": seeds, "n_seeds": len(seeds)}
        R = [[v + i / 100 for v in row] for row in R3]  # each record its own R
        attrs.update({"acc": acc, "bwt": -0.2 + i / 100, "fwt": 0.0, "R": R, "mlflow_run_id": f"run{i}"})
        study.add_trial(create_trial(value=acc, params=params, distributions=dists, user_attrs=attrs))

    res = lll("report", "--study", "rep", "--storage", url, "--out", "rep", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "4 orderings from 7 complete trials; 2 re-evaluated (up to 3 seeds)" in res.stdout
    shown = json.loads((tmp_path / "rep" / "report.json").read_text())
    points = {pt[0]: pt for pts in shown["pareto"]["points"].values() for pt in pts}
    assert {n: pt[3] for n, pt in points.items()} == {6: 3, 5: 2, 2: 1, 4: 1}
    assert points[6][2] == pytest.approx(64.0) and points[5][2] == pytest.approx(68.0)
    assert shown["history"]["trials"] == [2, 4, 5, 6] and shown["history"]["n_seeds"] == [1, 1, 2, 3]
    assert shown["history"]["best"] == pytest.approx([60.0, 60.0, 68.0, 68.0])
    assert sum(sum(c) for c in shown["acc_distribution"]["counts"].values()) == 4
    assert shown["records"] == {"orderings": 4, "records": 7, "start_seeds": 1, "reevaluated": 2, "max_seeds": 3}
    best = shown["recommended_R"]  # (r, u, p) at 68.0 on 2 seeds, not its 1-seed record (trial 1)
    assert (best["trial"], best["order"], best["n_seeds"]) == (5, [r, u, p], 2)
    assert best["R"] == [[v + 5 / 100 for v in row] for row in R3]  # trial 5's own R
