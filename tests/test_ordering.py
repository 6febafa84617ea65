"""Lehmer codes and the search space (pure functions, no Ray)."""

from __future__ import annotations

import itertools

import optuna
import pytest
from optuna.trial import TrialState

from search.orders.lehmer import (
    all_orderings,
    code_to_order,
    common_prefix,
    lehmer_decode,
    lehmer_encode,
    order_to_code,
)
from search.orders.space import SearchSpace
from search.study.storage import make_sampler
from tasks.errors import LLLError

TASKS = ["a", "b", "c", "d", "e"]


def test_lehmer_round_trip_is_a_bijection():
    codes = set()
    for perm in itertools.permutations(TASKS):
        code = lehmer_encode(list(perm), TASKS)
        assert all(0 <= c <= len(TASKS) - 1 - i for i, c in enumerate(code))
        assert lehmer_decode(code, TASKS) == list(perm)
        codes.add(tuple(code))
    assert len(codes) == 120


def test_lehmer_decode_rejects_bad_codes():
    with pytest.raises(ValueError, match="digits"):
        lehmer_decode([0, 0], TASKS)
    with pytest.raises(ValueError, match="must be in"):
        lehmer_decode([0, 0, 5, 0], TASKS)


def test_all_orderings_are_lexicographic_neighbours():
    orders = list(all_orderings(["a", "b", "c"]))
    assert orders[0] == ["a", "b", "c"] and orders[1] == ["a", "c", "b"]
    assert common_prefix(orders[0], orders[1]) == 1
    assert len(orders) == 6


def test_space_suggest_and_enqueue_params_agree():
    space = SearchSpace(TASKS, ["ewc", "naive"])
    params = space.trial_params(["c", "a", "e", "b", "d"], "ewc", 50.0)
    cand = space.suggest(optuna.trial.FixedTrial(params))
    assert cand.order == ("c", "a", "e", "b", "d")
    assert cand.strategy.name == "ewc" and cand.strategy.lam == pytest.approx(50.0)
    naive = space.suggest(optuna.trial.FixedTrial(space.trial_params(list(TASKS), "naive", None)))
    assert naive.strategy.name == "naive" and naive.strategy.lam is None


def test_space_rejects_bad_input():
    with pytest.raises(LLLError, match="unknown strategy"):
        SearchSpace(TASKS, ["ewc", "nope"])
    with pytest.raises(LLLError, match="twice"):
        SearchSpace(TASKS, ["ewc", "ewc"])
    with pytest.raises(LLLError, match="≥ 0"):
        SearchSpace(TASKS, ["ewc"], fixed_lambda=-1.0)


def _asks_while_pending(sampler: optuna.samplers.BaseSampler, keep_pending: bool, k: int = 4) -> list[tuple]:
    """``k`` candidates asked after ten told trials, without telling them (``keep_pending``: as
    parallel workers leave them RUNNING) or failing each one at once, so the sampler never sees a
    pending trial but its random state advances exactly as in the pending case."""
    space = SearchSpace(TASKS, ["ewc", "si"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(10):
        trial = study.ask()
        cand = space.suggest(trial)
        study.tell(trial, float(cand.order.index("a") + (cand.strategy.name == "si")))
    asked = []
    for _ in range(k):
        trial = study.ask()
        cand = space.suggest(trial)
        asked.append((cand.order, cand.strategy.name, cand.strategy.lam))
        if not keep_pending:
            study.tell(trial, state=TrialState.FAIL)
    return asked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constant_liar_moves_later_asks_away_from_pending_trials(seed: int) -> None:
    """The sampler the search uses (make_sampler) proposes other points while trials are pending
    than without them; with the liar switched off, pending trials change nothing."""
    pending = _asks_while_pending(make_sampler(seed), keep_pending=True)
    without = _asks_while_pending(make_sampler(seed), keep_pending=False)
    assert pending[0] == without[0]  # the same history, nothing pending yet: the same first ask
    assert pending[1:] != without[1:], "pending trials did not change what the sampler proposes"

    def no_liar() -> optuna.samplers.BaseSampler:
        sampler = make_sampler(seed)
        sampler._constant_liar = False  # everything else exactly as the search configures it
        return sampler

    assert _asks_while_pending(no_liar(), keep_pending=True) == _asks_while_pending(no_liar(), keep_pending=False)


def test_search_code_is_read_suffix_first_and_round_trips():
    """The first digit of a search trial's code picks the LAST task (what final ACC depends on most)."""
    for perm in itertools.permutations(TASKS):
        code = order_to_code(list(perm), TASKS)
        assert code_to_order(code, TASKS) == list(perm)
        assert code[0] == TASKS.index(perm[-1])
