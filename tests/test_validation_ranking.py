"""Which orderings `--validate K` retrains (issue 19 point 5): the top K by the model sampler's
posterior mean when the study uses it, else by seed mean. No Ray: the ranking is a pure function of
the study (the training it leads to is tested in tests/test_validation.py).

The study: a smooth objective over orderings of 6 tasks seen on 4 noisy seeds each, plus a median
ordering whose one seed was lucky (above everything). By seed mean the lucky one is first; the
posterior shrinks it towards its neighbours and ranks others first, as the sampler's own
``posterior`` says.
"""

from __future__ import annotations

import numpy as np
import optuna

from search.orders.space import SearchSpace
from search.propose.sampler import PermutationSampler
from search.study.racing import posterior_of
from search.study.validation import rank_top

TASKS = [f"t{i}" for i in range(6)]


def lucky_study(sampler: optuna.samplers.BaseSampler) -> tuple[optuna.Study, tuple[str, ...]]:
    space = SearchSpace(TASKS, ["naive"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(4)
    w = rng.normal(size=len(TASKS))

    def f(p):  # later tasks count more: a smooth function of positions
        return 0.5 + float(sum(w[int(a[1])] * (i + 1) for i, a in enumerate(p))) * 0.01

    perms = list(dict.fromkeys(tuple(TASKS[i] for i in rng.permutation(len(TASKS))) for _ in range(40)))
    lucky = sorted(perms, key=f)[len(perms) // 2]
    for p in perms:
        seeds = (
            {0: max(f(q) for q in perms) + 0.05} if p == lucky else {s: f(p) + rng.normal(0, 0.05) for s in range(4)}
        )
        study.enqueue_trial(space.trial_params(list(p), "naive", None))
        trial = study.ask()
        space.suggest(trial)
        acc = float(np.mean(list(seeds.values())))
        attrs = {"order": list(p), "strategy": "naive", "lambda": None, "acc": acc, "bwt": -0.1, "seeds": list(seeds)}
        attrs["seed_values"] = {str(s): float(x) for s, x in seeds.items()}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, acc)
    return study, lucky


def test_model_sampler_studies_validate_the_best_posterior_means():
    sampler = PermutationSampler(TASKS, seed=0, use_graph=False)
    study, lucky = lucky_study(sampler)
    jobs, how = rank_top(study, 3, "acc", posterior_of(study))
    assert how == "the sampler's posterior mean"
    post = sampler.posterior(study)
    want = sorted(post, key=lambda p: -post[p][0])[:3]
    assert [j.order for j in jobs] == want
    assert [j.score for j in jobs] == [post[p][0] for p in want]
    assert lucky not in [j.order for j in jobs]
    # by seed mean the lucky ordering would have been first
    by_mean, how_mean = rank_top(study, 3, "acc", None)
    assert by_mean[0].order == lucky and how_mean.startswith("seed-mean ACC")


def test_other_samplers_validate_the_best_seed_means():
    study, lucky = lucky_study(optuna.samplers.TPESampler(seed=0))
    assert posterior_of(study) is None
    jobs, how = rank_top(study, 3, "acc", posterior_of(study))
    assert how == "seed-mean ACC on the search's seeds" and jobs[0].order == lucky
    accs = sorted((t.user_attrs["acc"] for t in study.trials), reverse=True)[:3]
    assert [j.score for j in jobs] == accs
