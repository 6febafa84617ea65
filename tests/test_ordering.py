"""Lehmer codes and the search space (pure functions, no Ray)."""

from __future__ import annotations

import itertools

import optuna
import pytest

from search.ordering import all_orderings, code_to_order, common_prefix, lehmer_decode, lehmer_encode, order_to_code
from search.space import SearchSpace
from search.study import make_sampler
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


def test_parallel_asks_are_not_all_the_same_point():
    """With the constant liar, trials asked before any result is told are spread out."""
    space = SearchSpace(TASKS, ["ewc"], fixed_lambda=1.0)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(0))
    for i, perm in enumerate(itertools.islice(itertools.permutations(TASKS), 0, 120, 10)):
        study.enqueue_trial(space.trial_params(list(perm), "ewc", 1.0))
        t = study.ask()
        study.tell(t, float(i % 5))
    pending = [space.suggest(study.ask()).order for _ in range(4)]
    assert len(set(pending)) > 1


def test_search_code_is_read_suffix_first_and_round_trips():
    """The first digit of a search trial's code picks the LAST task (what final ACC depends on most)."""
    for perm in itertools.permutations(TASKS):
        code = order_to_code(list(perm), TASKS)
        assert code_to_order(code, TASKS) == list(perm)
        assert code[0] == TASKS.index(perm[-1])
