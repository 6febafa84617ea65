"""Lockstep (population) training: the stacked half of the one training path.

Which steps stack is decided in one place (pipeline.units.lockstep_key), never by the worker or its
population K: a step of a stackable strategy trains in lockstep even alone (K=1), a member's result
does not depend on K or on who shares its stack, and a strategy that cannot stack (no stacked loop,
or one that swaps its model) falls back to one at a time transparently, in any population.

The full-config numbers (default pool, 10 epochs, several seeds) are in bench/out/population.json
(``python bench/population.py --agreement-only``); these tests use the tiny pool and 1–2 epochs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_units import SMALL_POOL, SMALL_TRAIN

import pipeline.lockstep as lockstep
import pipeline.units as units_mod
from pipeline.config import StrategyConfig
from pipeline.lockstep import choose_population, parse_population
from pipeline.runner import run_ordering
from pipeline.strategies import STRATEGIES
from pipeline.strategies.base import LockstepHooks
from pipeline.strategies.pnn import ProgressiveNets
from pipeline.units import Unit
from pipeline.workers import TrialWorker
from tasks.errors import LLLError
from tasks.pool import TaskPool

LOCKSTEP = ["naive", "joint", "l2", "ewc", "online-ewc", "si", "mas", "rwalk", "agem", "replay", "lwf"]
TRAIN = SMALL_TRAIN


@pytest.fixture(scope="module")
def spec() -> str:
    return json.dumps(SMALL_POOL)


@pytest.fixture(scope="module")
def lock(spec: str) -> TrialWorker:
    return TrialWorker(spec, population=8)


@pytest.fixture(scope="module")
def small_pool(lock: TrialWorker) -> TaskPool:
    return lock.pool


def units(
    pool: TaskPool, name: str, lams=(None,), heads: str | None = None, orders: int = 2, train=TRAIN
) -> list[Unit]:
    a, b, c = pool.names
    train = train.model_copy(update={"heads": heads}).model_dump_json()
    return [
        Unit(order, StrategyConfig(name=name, lam=lam).model_dump_json(), train, seed)
        for order in [(a, b, c), (c, b, a), (b, a, c)][:orders]
        for seed, lam in enumerate(lams)
    ]


def rows(outs: list[dict], pool: TaskPool) -> np.ndarray:
    assert all(o["error"] is None for o in outs), [o["error"] for o in outs]
    return np.array([[[r[n] for n in pool.names] for r in o["rows"]] for o in outs])


@pytest.fixture
def spy(monkeypatch) -> list[int]:
    """The sizes of the stacks trained: proves lockstep really ran (and with which K)."""
    sizes: list[int] = []
    real = units_mod.train_lockstep

    def counting(pool, steps, on_epoch=None):
        sizes.append(len(steps))
        return real(pool, steps, on_epoch)

    monkeypatch.setattr(units_mod, "train_lockstep", counting)
    return sizes


@pytest.fixture
def one_at_a_time(monkeypatch):
    """Switch the one decision off: every step trains one model at a time (the reference the
    stacked loops must agree with)."""

    def go() -> None:
        monkeypatch.setattr(units_mod, "lockstep_key", lambda pool, step: None)

    return go


@pytest.mark.parametrize("name", LOCKSTEP)
def test_lockstep_agrees_with_one_at_a_time(
    spec: str, small_pool: TaskPool, lock: TrialWorker, spy: list[int], one_at_a_time, name: str
) -> None:
    """Mean |ΔR| ≤ 0.5 points per entry and the same ACC (within seed noise; measured here: equal)."""
    lams = (None,) if name in ("naive", "joint", "agem") else (None, 0.5)  # λ differs per member
    todo = units(small_pool, name, lams, orders=3 - len(lams))
    locks = rows(lock.train_units(todo), small_pool)
    assert max(spy) == len(todo)  # every member of a round in one stack
    one_at_a_time()
    ones = rows(TrialWorker(spec, population=8).train_units(todo), small_pool)
    assert np.abs(ones - locks).mean() * 100 <= 0.5
    acc = lambda r: r[:, -1].mean(1)  # noqa: E731  (every pool task is in the ordering)
    assert np.abs(acc(ones) - acc(locks)).max() * 100 <= 1.0
    assert locks[:, 1:].max() > locks[:, 0].max() + 0.1  # it trained


@pytest.mark.parametrize("name", ["ewc", "naive"])
def test_population_never_changes_a_result(spec: str, small_pool: TaskPool, spy: list[int], name: str) -> None:
    """The same units under population 1, 3 and 8, and each unit alone: R bit for bit. Widths whose
    slices are not 64-byte aligned (50), mixed λ and seeds, three orderings sharing prefixes, per-task
    heads, and two intra-op threads as well as one — what a K-dependence would need to show up."""
    train = TRAIN.model_copy(update={"hidden": (50, 50)})
    lams = (1.0, 300.0, None) if name == "ewc" else (None, None)
    todo = units(small_pool, name, lams, heads="per-task", orders=3, train=train)
    by_k = {k: rows(TrialWorker(spec, population=k).train_units(todo), small_pool) for k in (1, 3, 8)}
    alone = rows([TrialWorker(spec, population=8).train_units([u])[0] for u in todo], small_pool)
    assert {1, 3} <= set(spy) and max(spy) == min(8, len(todo))  # K=1 stacks too: lockstep of one
    for k, got in by_k.items():
        assert np.array_equal(got, by_k[8]), k
    assert np.array_equal(alone, by_k[8])
    assert len({r.tobytes() for r in by_k[8]}) == len(todo)  # λ, seed and order really differ
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = rows(TrialWorker(spec, population=1, threads=2).train_units(todo[:2]), small_pool)
        assert np.array_equal(two, by_k[8][:2])
    finally:
        torch.set_num_threads(threads)
    # `lll run`'s path is the same path: it gives the stacked member's R too.
    for u, r in zip(todo[:2], by_k[8][:2], strict=True):
        cfg = StrategyConfig.model_validate_json(u.strategy_json)
        direct = run_ordering(small_pool, list(u.order), cfg, train.model_copy(update={"heads": "per-task"}), u.seed)
        assert np.array_equal(np.array([[row[n] for n in small_pool.names] for row in direct.rows]), r)


def test_fallback_strategies_train_one_at_a_time(
    spec: str, small_pool: TaskPool, lock: TrialWorker, spy: list[int], one_at_a_time
) -> None:
    """GEM (a QP per step) has no stacked loop: in a lockstep worker it trains exactly as alone."""
    todo = units(small_pool, "gem")[:1]
    locks = rows(lock.train_units(todo), small_pool)
    assert spy == []
    one_at_a_time()
    assert np.array_equal(rows(TrialWorker(spec, population=1).train_units(todo), small_pool), locks)


class SwappingWithHooks(ProgressiveNets):
    """PNN (it swaps its model in before_task) that claims a stacked loop anyway, as a user's
    expansion strategy might: the stack must notice and train it one at a time."""

    name = "pnn-claims-lockstep"
    lockstep = LockstepHooks


def test_expansion_strategies_fall_back_in_a_population(
    spec: str, small_pool: TaskPool, spy: list[int], monkeypatch
) -> None:
    """Expansion strategies (PNN, and one that wrongly claims a stacked loop) mixed with EWC units in
    a population of 8: nothing fails, EWC still stacks, and every expansion unit gives exactly what
    it gives alone through `lll run`'s path."""
    monkeypatch.setitem(STRATEGIES, SwappingWithHooks.name, SwappingWithHooks)
    todo = units(small_pool, "pnn") + units(small_pool, SwappingWithHooks.name) + units(small_pool, "ewc", (1.0, 5.0))
    got = rows(TrialWorker(spec, population=8).train_units(todo), small_pool)
    assert 4 in spy  # the EWC units stacked (two orderings × two λ); the swapping ones left the stack
    for u, r in zip(todo[:4], got[:4], strict=True):
        direct = run_ordering(
            small_pool, list(u.order), StrategyConfig(name=json.loads(u.strategy_json)["name"]), TRAIN
        )
        assert np.array_equal(np.array([[row[n] for n in small_pool.names] for row in direct.rows]), r), u
    assert np.array_equal(got[0], got[2])  # the claimed stacked loop changed nothing: it is PNN


def test_lockstep_states_are_cached_like_any_other(spec: str, small_pool: TaskPool) -> None:
    a, b, c = small_pool.names
    w = TrialWorker(spec, population=4)
    s, t = StrategyConfig(name="si").model_dump_json(), TRAIN.model_dump_json()
    first = w.train_units([Unit((a, b), s, t, 0), Unit((a, c), s, t, 0)])
    assert [o["trained"] for o in first] == [2, 1]
    (cont,) = w.train_units([Unit((a, b, c), s, t, 0, keep_checkpoint=True)])
    assert (cont["trained"], cont["reused"]) == (1, 1) and cont["rows"][:3] == first[0]["rows"]
    assert cont["checkpoint"]


@pytest.mark.parametrize("bad", [0, -3, "many", 2.5, "0"])
def test_bad_population_is_one_line_error(bad) -> None:
    with pytest.raises(LLLError, match="population"):
        parse_population(bad)


def test_population_auto_and_reduced_to_fit(spec: str) -> None:
    cpu = torch.device("cpu")
    k, note = choose_population("auto", cpu)
    assert 1 <= k <= lockstep.CPU_CAP and "auto" in note
    assert parse_population("8") == 8
    free = lockstep.free_memory(cpu)
    k, note = choose_population(1000, cpu, member_bytes=free // 10)  # only ~5 fit in half the memory
    assert k < 10 and "reduced" in note
    info = TrialWorker(spec, population=3).info()
    assert info["population"] == 3 and info["device"] == "cpu"
