"""Held-out statistics: intervals and paired gains against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from search.study.heldout import (
    HELDOUT_OFFSET,
    Interval,
    cross_fitted,
    heldout_seeds,
    mean_over,
    paired_gain,
    random_orderings,
    verdict,
)
from tasks.errors import LLLError


def test_interval_matches_scipy_t_interval():
    values = [0.512, 0.498, 0.531, 0.505]
    iv = Interval.of(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert iv.mean == pytest.approx(np.mean(values))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert Interval.of([0.5]).low == -math.inf  # one seed: no interval


def test_paired_gain_uses_shared_seeds_only_and_matches_a_paired_t_test():
    best = {1: 0.60, 2: 0.58, 3: 0.63, 4: 0.55}
    other = {1: 0.57, 2: 0.57, 3: 0.59, 9: 0.10}
    g = paired_gain(best, other)
    diffs = [0.03, 0.01, 0.04]
    assert g.n == 3 and g.mean == pytest.approx(np.mean(diffs))
    # The interval excludes 0 exactly when a two-sided paired t-test rejects at 5 %.
    p = stats.ttest_rel([best[s] for s in (1, 2, 3)], [other[s] for s in (1, 2, 3)]).pvalue
    assert g.excludes_zero == (p < 0.05)


def test_verdicts_say_not_clearly_better_when_the_interval_holds_zero():
    assert verdict(Interval(0.01, -0.002, 0.022, 3), "the pool's order").startswith("not clearly better than")
    assert verdict(Interval(0.01, 0.002, 0.018, 3), "a random ordering").startswith("better than")
    assert verdict(Interval(-0.01, -0.02, -0.001, 3), "a random ordering").startswith("worse than")


def test_heldout_seeds_never_overlap_the_search():
    assert heldout_seeds(0, 3, [0, 1]) == [HELDOUT_OFFSET, HELDOUT_OFFSET + 1, HELDOUT_OFFSET + 2]
    # Another base seed (a repeated search) validates on seeds disjoint from the first one's.
    assert not set(heldout_seeds(0, 3, [0, 1])) & set(heldout_seeds(1, 3, [1, 2]))
    with pytest.raises(LLLError, match="used by the search"):
        heldout_seeds(0, 3, [0, 1], given=[1, 5, 6])
    with pytest.raises(LLLError, match="at least 2"):
        heldout_seeds(0, 1, [0])


def test_random_orderings_are_distinct_reproducible_and_avoid_given_ones():
    tasks = ["a", "b", "c"]
    got = random_orderings(tasks, 4, seed=7, avoid=[["a", "b", "c"]])
    assert got == random_orderings(tasks, 4, seed=7, avoid=[["a", "b", "c"]])
    assert len({tuple(o) for o in got}) == 4 and ["a", "b", "c"] not in got
    assert len(random_orderings(tasks, 99, seed=1)) == 6  # no more than there are


def test_mean_over_averages_per_seed():
    assert mean_over([{1: 0.2, 2: 0.4}, {1: 0.4, 2: 0.8, 3: 1.0}]) == pytest.approx({1: 0.3, 2: 0.6})


def test_cross_fitted_scores_each_seed_with_the_pick_made_on_the_other_seeds():
    # 3 candidates x 3 seeds; on seed 2 candidate 1 looks best only because of that seed.
    table = np.array([[0.50, 0.52, 0.40], [0.45, 0.44, 0.70], [0.49, 0.50, 0.41]])
    cands = [dict(enumerate(row)) for row in table]
    expected = []
    for s in range(3):
        others = [t for t in range(3) if t != s]
        pick = int(np.argmax(table[:, others].sum(axis=1)))
        expected.append(table[pick, s])
    got = cross_fitted(cands)
    assert got.mean == pytest.approx(np.mean(expected)) and got.n == 3
    # Below the winner's own held-out mean (candidate 1: 0.53), which the pick inflates.
    assert got.mean < table.mean(axis=1).max()
    assert cross_fitted(cands[:1]).mean == pytest.approx(table[0].mean())  # K = 1: the plain mean
    # picked_by: scored on one metric (here the negated table), picked on another.
    neg = [{k: -v for k, v in c.items()} for c in cands]
    assert cross_fitted(neg, picked_by=cands).mean == pytest.approx(-np.mean(expected))
