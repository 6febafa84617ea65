"""Lockstep (population) training: the same answers as one model at a time, whatever K is.

The full-config numbers (default pool, 10 epochs, several seeds) are in bench/out/population.json
(``python bench/population.py --agreement-only``); these tests use the tiny pool and 1–2 epochs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_units import SMALL_POOL, SMALL_TRAIN

import pipeline.lockstep as lockstep
from pipeline.config import StrategyConfig
from pipeline.lockstep import choose_population, parse_population
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
def one(spec: str) -> TrialWorker:
    return TrialWorker(spec, population=1)


@pytest.fixture(scope="module")
def small_pool(one: TrialWorker) -> TaskPool:
    return one.pool


@pytest.fixture(scope="module")
def lock(spec: str) -> TrialWorker:
    return TrialWorker(spec, population=8)


def units(pool: TaskPool, name: str, lams=(None,), heads: str | None = None, orders: int = 2) -> list[Unit]:
    a, b, c = pool.names
    train = TRAIN.model_copy(update={"heads": heads}).model_dump_json()
    return [
        Unit(order, StrategyConfig(name=name, lam=lam).model_dump_json(), train, seed)
        for order in [(a, b, c), (c, b, a)][:orders]
        for seed, lam in enumerate(lams)
    ]


def rows(outs: list[dict], pool: TaskPool) -> np.ndarray:
    assert all(o["error"] is None for o in outs), [o["error"] for o in outs]
    return np.array([[[r[n] for n in pool.names] for r in o["rows"]] for o in outs])


@pytest.fixture
def spy(monkeypatch) -> list[int]:
    """The sizes of the stacks trained: proves lockstep really ran (and with which K)."""
    sizes: list[int] = []
    real = lockstep.train_lockstep

    def counting(pool, steps):
        sizes.append(len(steps))
        return real(pool, steps)

    monkeypatch.setattr(lockstep, "train_lockstep", counting)
    return sizes


@pytest.mark.parametrize("name", LOCKSTEP)
def test_lockstep_agrees_with_one_at_a_time(
    small_pool: TaskPool, one: TrialWorker, lock: TrialWorker, spy: list[int], name: str
) -> None:
    """Mean |ΔR| ≤ 0.5 points per entry and the same ACC (within seed noise; measured here: equal)."""
    lams = (None,) if name in ("naive", "joint", "agem") else (None, 0.5)  # λ differs per member
    todo = units(small_pool, name, lams, orders=3 - len(lams))
    ones = rows(one.train_units(todo), small_pool)
    assert spy == []
    locks = rows(lock.train_units(todo), small_pool)
    assert max(spy) == len(todo)  # every member of a round in one stack
    assert np.abs(ones - locks).mean() * 100 <= 0.5
    acc = lambda r: r[:, -1].mean(1)  # noqa: E731  (every pool task is in the ordering)
    assert np.abs(acc(ones) - acc(locks)).max() * 100 <= 1.0
    assert locks[:, 1:].max() > locks[:, 0].max() + 0.1  # it trained


def test_lockstep_does_not_depend_on_k_and_is_deterministic(spec: str, small_pool: TaskPool, spy: list[int]) -> None:
    """A member's numbers never mix with another's: K=1 and K=4 give the same R bit for bit, and
    two runs with the same K are identical — per-task heads and mixed λ included."""
    todo = units(small_pool, "ewc", (1.0, 300.0), heads="per-task")
    k4 = rows(TrialWorker(spec, population=4).train_units(todo), small_pool)
    again = rows(TrialWorker(spec, population=4).train_units(todo), small_pool)
    k1 = rows(TrialWorker(spec, population=2).train_units(todo[:1]), small_pool)  # alone in its stack
    assert np.array_equal(k4, again)
    assert np.array_equal(k4[:1], k1)
    assert not np.array_equal(k4[0], k4[1])  # λ and seed really differ per member
    assert 4 in spy and 1 in spy


def test_fallback_strategies_train_one_at_a_time(
    small_pool: TaskPool, one: TrialWorker, lock: TrialWorker, spy: list[int]
) -> None:
    """GEM (a QP per step) has no stacked loop: in a lockstep worker it trains exactly as today."""
    todo = units(small_pool, "gem")[:1]
    ones = rows(one.train_units(todo), small_pool)
    locks = rows(lock.train_units(todo), small_pool)
    assert spy == [] and np.array_equal(ones, locks)


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
    import torch

    cpu = torch.device("cpu")
    k, note = choose_population("auto", cpu)
    assert 1 <= k <= lockstep.CPU_CAP and "auto" in note
    assert parse_population("8") == 8
    free = lockstep.free_memory(cpu)
    k, note = choose_population(1000, cpu, member_bytes=free // 10)  # only ~5 fit in half the memory
    assert k < 10 and "reduced" in note
    info = TrialWorker(spec, population=3).info()
    assert info["population"] == 3 and info["device"] == "cpu"
