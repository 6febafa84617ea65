"""Issue 19, points 2 and 3: seed-adjusted observations, the noise-aware GP and sampler (incumbent =
best posterior mean), the racing decisions, and the lookup benchmark's quick mode."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from search.orders.space import SearchSpace
from search.propose.gp import PermutationGP, encode
from search.propose.intensify import (
    Racing,
    incumbent,
    may_reevaluate,
    next_reevaluation,
    paired_gap,
    pick_validated,
    still_in_race,
    top_k,
)
from search.propose.observations import fit_additive
from search.propose.sampler import PermutationSampler

ROOT = Path(__file__).resolve().parent.parent
TASKS = [f"t{i}" for i in range(6)]


# ---- observations --------------------------------------------------------------------------------
def test_additive_fit_matches_least_squares_on_unbalanced_seeds():
    """m[o] + c[seed] recovered as numpy's least squares on the design matrix does (c centred)."""
    rng = np.random.default_rng(0)
    orders = [tuple(p) for p in itertools.islice(itertools.permutations("abcd"), 12)]
    values = {}
    for i, o in enumerate(orders):
        seeds = [0] if i % 3 == 0 else ([0, 1, 2] if i % 3 == 1 else [1, 2])
        values[o] = {s: float(rng.normal()) for s in seeds}
    obs = fit_additive(values)
    rows = [(i, s, v) for i, o in enumerate(orders) for s, v in values[o].items()]
    design = np.zeros((len(rows) + 1, len(orders) + 3))
    target = np.zeros(len(rows) + 1)
    for r, (i, s, v) in enumerate(rows):
        design[r, i], design[r, len(orders) + s], target[r] = 1.0, 1.0, v
    n_b = np.bincount([s for _, s, _ in rows], minlength=3)
    design[-1, len(orders) :] = n_b  # the constraint: count-weighted offsets sum to 0
    sol = np.linalg.lstsq(design, target, rcond=None)[0]
    assert np.allclose(obs.mean, sol[: len(orders)], atol=1e-8)
    assert np.allclose([obs.offsets[s] for s in range(3)], sol[len(orders) :], atol=1e-8)
    resid = target[:-1] - design[:-1] @ sol
    assert obs.ss_within == pytest.approx(float(resid @ resid), abs=1e-8)
    assert obs.dof_within == len(rows) - len(orders) - 2
    assert list(obs.count) == [len(values[o]) for o in orders]


def test_sampler_history_removes_a_seed_that_is_bad_for_every_ordering():
    """Seed 1 is 0.10 below seed 0 for every ordering: an ordering seen only on seed 1 gets back
    its seed-0-level value instead of looking 0.05-0.10 worse than the others."""
    space = SearchSpace(TASKS, ["naive"])
    sampler = PermutationSampler(TASKS, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    f = {p: 0.5 + 0.01 * n for n, p in enumerate(itertools.islice(itertools.permutations(TASKS), 6))}
    for n, (p, v) in enumerate(f.items()):
        seeds = {0: v, 1: v - 0.10} if n < 5 else {1: v - 0.10}
        study.enqueue_trial(space.trial_params(list(p), "naive", None))
        trial = study.ask()
        space.suggest(trial)
        trial.set_user_attr("seed_values", {str(s): x for s, x in seeds.items()})
        study.tell(trial, float(np.mean(list(seeds.values()))))
    finished, _, _ = sampler.history(study)
    got = np.array([finished[p] for p in f])
    want = np.array(list(f.values()))
    assert np.allclose(got - got[0], want - want[0], atol=1e-9)  # the order of all six is the truth's
    post = sampler.posterior(study)
    assert {p: n for p, (_, _, n) in post.items()} == {p: 2 if i < 5 else 1 for i, p in enumerate(f)}


# ---- the GP --------------------------------------------------------------------------------------
def _perms(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(len(TASKS)) for _ in range(n)])


def test_gp_trusts_an_ordering_seen_on_four_seeds_more_than_one_seen_once():
    """The same outlying value: on 1 seed it is pulled back towards its neighbours further than on 4,
    and its posterior sd is larger."""
    perms = _perms(30)
    y = np.random.default_rng(1).normal(0.0, 0.01, 30)
    y[0] = 0.2
    counts = np.ones(30)
    one = PermutationGP(encode(perms), y, counts=counts, within=(0.01, 30))
    counts[0] = 4
    four = PermutationGP(encode(perms), y, hyper=one.hyper, counts=counts, within=(0.01, 30))
    m1, s1 = one.predict(encode(perms[:1]))
    m4, s4 = four.predict(encode(perms[:1]))
    assert 0.2 - m1[0] > 0.2 - m4[0] > 0.0
    assert s1[0] > s4[0]


def test_gp_learns_more_noise_when_the_seeds_disagree():
    """The seeds' spread about their own means is evidence about the noise term."""
    perms = _perms(25, seed=2)
    y = perms[:, 0].astype(float) * 0.01 + np.random.default_rng(3).normal(0, 0.002, 25)
    quiet = PermutationGP(encode(perms), y, counts=np.full(25, 2.0), within=(25 * 1e-7, 25))
    loud = PermutationGP(encode(perms), y, counts=np.full(25, 2.0), within=(25 * 1e-2, 25))
    assert loud.hyper.noise > quiet.hyper.noise
    assert loud.noise_sd > quiet.noise_sd


def test_incumbent_is_the_best_posterior_mean_not_the_luckiest_observation():
    """A smooth objective seen on 4 noisy seeds each (σ 0.05), plus a median ordering whose single
    seed was lucky: the posterior ranks another ordering first and shrinks the lucky one."""
    space = SearchSpace(TASKS, ["naive"])
    sampler = PermutationSampler(TASKS, seed=0, use_graph=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(4)
    w = rng.normal(size=len(TASKS))

    def f(p):  # later tasks count more: a smooth function of positions
        return float(sum(w[int(a[1])] * (i + 1) for i, a in enumerate(p))) * 0.01

    perms = [tuple(TASKS[i] for i in rng.permutation(len(TASKS))) for _ in range(40)]
    perms = list(dict.fromkeys(perms))
    lucky = sorted(perms, key=f)[len(perms) // 2]  # a median ordering, observed once above everything
    lucky_value = max(f(q) for q in perms) + 0.05
    for p in perms:
        seeds = {0: lucky_value} if p == lucky else {s: f(p) + float(rng.normal(0, 0.05)) for s in range(4)}
        study.enqueue_trial(space.trial_params(list(p), "naive", None))
        trial = study.ask()
        space.suggest(trial)
        trial.set_user_attr("seed_values", {str(s): x for s, x in seeds.items()})
        study.tell(trial, float(np.mean(list(seeds.values()))))
    post = sampler.posterior(study)
    best = max(post, key=lambda p: post[p][0])
    assert best != lucky
    assert post[lucky][0] < lucky_value - 0.01
    assert post[lucky][2] == 1 and post[best][2] == 4  # the seeds behind each
    observed = PermutationSampler(TASKS, seed=0, use_graph=False, incumbent="observed")
    assert observed.propose(study, 999) and sampler.propose(study, 999)  # both still propose


# ---- racing --------------------------------------------------------------------------------------
A, B, C = ("a", "b"), ("b", "a"), ("c", "a")


def test_racing_settings_are_checked():
    with pytest.raises(ValueError, match="max_seeds"):
        Racing(seeds=3, max_seeds=2)
    with pytest.raises(ValueError, match="share"):
        Racing(share=1.0)
    assert Racing(seeds=1, max_seeds=3).seed_list(10) == [10, 11, 12]


def test_paired_gap_and_the_confidence_bound():
    assert paired_gap({0: 0.5, 1: 0.7, 5: 9.0}, {0: 0.6, 1: 0.6, 2: 0.0}) == (pytest.approx(0.0), 2)
    assert paired_gap({3: 1.0}, {0: 1.0}) == (0.0, 0)
    # gap −0.05 on 2 shared seeds, σ = 0.03: bound −0.05 + z·√2·0.03/√2 = −0.05 + 0.03z
    ch, inc = {0: 0.50, 1: 0.60}, {0: 0.55, 1: 0.65}
    assert still_in_race(ch, inc, 0.03, z=2.0)  # −0.05 + 0.06 > 0
    assert not still_in_race(ch, inc, 0.03, z=1.0)  # −0.05 + 0.03 < 0
    assert still_in_race({0: 0.0}, {1: 1.0}, 0.01, 1.0)  # nothing shared: not beaten yet


def test_a_challenger_gets_the_incumbents_seeds_only_while_it_can_win():
    plan = Racing(seeds=1, max_seeds=3, z=1.0)
    seeds = plan.seed_list(0)
    score = {A: 0.60, B: 0.58, C: 0.40}
    results = {A: {0: 0.60, 1: 0.61}, B: {0: 0.59}, C: {0: 0.40}}
    assert incumbent(results, score) == A
    # B is 0.01 behind on seed 0 (bound −0.01 + 0.02 > 0): it gets seed 1, the incumbent's next
    assert next_reevaluation(results, score, plan, 0.02, seeds) == (B, 1)
    # B now 0.05 behind on two seeds (bound −0.05 + 0.02 < 0): out; C is far behind: out;
    # so the incumbent gets a fresh seed
    results[B][1] = 0.52
    assert next_reevaluation(results, score, plan, 0.02, seeds) == (A, 2)
    # a pair being trained now is not asked again and counts towards max_seeds
    assert next_reevaluation(results, score, plan, 0.02, seeds, busy={(A, 2)}) is None
    results[A][2] = 0.6
    assert next_reevaluation(results, score, plan, 0.02, seeds) is None  # A at max, no one can win
    # the incumbent is the best SCORE (posterior mean), not the best observed value
    assert incumbent({A: {0: 0.5}, B: {0: 0.9}}, {A: 0.6, B: 0.55}) == A


def test_reevaluation_never_asks_for_a_seed_already_trained_and_respects_max_seeds():
    rng = np.random.default_rng(5)
    orders = [tuple(p) for p in itertools.permutations("abcd")]
    for _ in range(200):
        plan = Racing(seeds=1, max_seeds=int(rng.integers(1, 5)), z=float(rng.uniform(0, 3)))
        seeds = plan.seed_list(int(rng.integers(0, 3)))
        results = {}
        for o in rng.choice(len(orders), 8, replace=False):
            k = int(rng.integers(1, plan.max_seeds + 1))
            results[orders[o]] = {s: float(rng.normal()) for s in seeds[:k]}
        score = {o: float(np.mean(list(v.values()))) for o, v in results.items()}
        step = next_reevaluation(results, score, plan, float(rng.uniform(0.01, 1)), seeds)
        if step is not None:
            order, seed = step
            assert seed in seeds and seed not in results[order]
            assert len(results[order]) < plan.max_seeds


def test_budget_share_top_k_and_the_validated_pick():
    plan = Racing(share=0.25)
    assert may_reevaluate(3, 0, plan) and not may_reevaluate(3, 1, plan)  # 1 of 4, then 2 of 5
    assert may_reevaluate(7, 1, plan)  # 2 of 8
    assert not Racing(share=0.0) or not may_reevaluate(100, 0, Racing(share=0.0))
    score = {A: 0.3, B: 0.9, C: 0.5}
    assert top_k(score, 2) == [B, C]
    # validation: C's held-out mean is the best, whatever the search's score said
    assert pick_validated({B: {7: 0.5, 8: 0.6}, C: {7: 0.7, 8: 0.6}}, score) == C


# ---- the lookup benchmark ------------------------------------------------------------------------
def test_fresh_seed_quick_ranks_and_the_ceiling(tmp_path):
    """--quick runs end to end; every rank is in 1..5,040 and the ceiling's rank is the held-out rank
    of the ordering best on the search seed, computed here from the truth file directly."""
    sys.path.insert(0, str(ROOT / "bench"))
    import common

    out = tmp_path / "fresh_seed.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "bench" / "fresh_seed.py"), "--quick", "--reps", "1"]
    cmd += ["--kinds", "random,default,ceiling", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    details = json.loads((tmp_path / "fresh_seed_cheap_quick_details.json").read_text())
    assert details["split"] == {"search": [0], "validation": [], "heldout": [1]}
    got = details["per_strategy"]["naive"]["60"]
    for kind in ("random", "default", "ceiling"):
        assert all(1 <= r <= 5040 for r in got[kind]["ranks"]), kind
    runs = common.seed_runs(common.load_truth("cheap"), "naive")
    best = int(np.argmax(runs[0]))
    assert got["ceiling"]["ranks"] == [int((runs[1] > runs[1][best]).sum()) + 1]
