"""Re-evaluation during a search (issue 19): which ordering gets another seed next, and which one
the validation retrains.

Modelled on SMAC's intensifier and irace's racing:

* SMAC (``smac/intensifier/intensifier.py``) runs a challenger on the incumbent's own seeds, so the
  two are compared on the seeds they share, gives it more of them while it is not worse there, and
  gives the incumbent one new seed when no challenger is waiting for one.
* irace (``race.R``) drops a candidate as soon as a statistical test on the instances it shares with
  the best says it is worse, and returns the elites that were evaluated most.

Here a *challenger* stays in the race while the upper confidence bound of its paired gap to the
incumbent — the mean over shared seeds of (challenger − incumbent), plus z standard errors — is
above 0. The standard error uses one seed's noise σ pooled over the whole study
(``search/propose/observations.py``, or the GP's noise term), √2·σ/√n for n shared seeds: with one
to four seeds per ordering a per-pair sample variance would be almost random. The *incumbent* is the
ordering with the best score — the GP's posterior mean (``PermutationSampler.posterior``), not the
best observed value.

Everything is a pure function of the per-ordering seed results: nothing to store, so a search
resumed after SIGKILL takes the same decisions, and a seed already trained is never asked for again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

Order = tuple[str, ...]
Results = Mapping[Order, Mapping[int, float]]  # ordering → {seed: value (maximised)}


@dataclass(frozen=True)
class Racing:
    """How a search spends its evaluations on seeds (one evaluation = one ordering on one seed)."""

    seeds: int = 1  # --seeds: the seeds a new ordering starts with
    max_seeds: int = 4  # --max-seeds: the most seeds any ordering gets
    share: float = 0.3  # the largest part of the evaluations that re-evaluation may take
    z: float = 1.0  # a challenger stays while gap + z·se > 0 (one-sided, ~84 % at z = 1)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, not {self.seeds}")
        if self.max_seeds < self.seeds:
            raise ValueError(f"max_seeds ({self.max_seeds}) is below seeds ({self.seeds})")
        if not 0.0 <= self.share < 1.0:
            raise ValueError(f"share must be in [0, 1), not {self.share}")

    def seed_list(self, first: int = 0) -> list[int]:
        """The search's seeds, in the order they are used: first, first+1, ..., first+max_seeds−1."""
        return [first + k for k in range(self.max_seeds)]


def paired_gap(challenger: Mapping[int, float], incumbent: Mapping[int, float]) -> tuple[float, int]:
    """(mean over shared seeds of challenger − incumbent, number of shared seeds)."""
    shared = sorted(set(challenger) & set(incumbent))
    if not shared:
        return 0.0, 0
    return sum(challenger[s] - incumbent[s] for s in shared) / len(shared), len(shared)


def still_in_race(challenger: Mapping[int, float], incumbent: Mapping[int, float], noise_sd: float, z: float) -> bool:
    """True while the challenger can still beat the incumbent: the upper bound of the paired gap on
    their shared seeds is above 0 (no shared seed: nothing says it cannot)."""
    gap, n = paired_gap(challenger, incumbent)
    if n == 0:
        return True
    return gap + z * math.sqrt(2.0) * noise_sd / math.sqrt(n) > 0.0


def incumbent(results: Results, score: Mapping[Order, float]) -> Order:
    """The ordering with the best score (posterior mean); ties go to the one with more seeds."""
    return max(results, key=lambda o: (score.get(o, -math.inf), len(results[o])))


def next_reevaluation(
    results: Results,
    score: Mapping[Order, float],
    plan: Racing,
    noise_sd: float,
    seeds: Sequence[int],
    busy: Collection[tuple[Order, int]] = (),
) -> tuple[Order, int] | None:
    """The (ordering, seed) to train next, or None when no re-evaluation is worth it.

    1. Challengers still in the race that lack one of the incumbent's seeds, best score first: the
       first gets the incumbent's first seed it lacks (a paired comparison grows one seed at a time).
    2. Else the incumbent gets its next seed, if it has fewer than ``plan.max_seeds``.
    ``seeds``: the search's seeds in order (``plan.seed_list``); ``busy``: (ordering, seed) pairs
    being trained now (never asked twice; they count towards ``max_seeds``)."""
    if not results:
        return None
    busy = set(busy)

    def taken(order: Order) -> set[int]:
        return set(results[order]) | {s for o, s in busy if o == order}

    inc = incumbent(results, score)
    inc_seeds = results[inc]
    for order in sorted(results, key=lambda o: -score.get(o, -math.inf)):
        have = taken(order)
        if order == inc or len(have) >= plan.max_seeds:
            continue
        missing = [s for s in seeds if s in inc_seeds and s not in have]
        if missing and still_in_race(results[order], inc_seeds, noise_sd, plan.z):
            return order, missing[0]
    have = taken(inc)
    if len(have) < plan.max_seeds:
        fresh = [s for s in seeds if s not in have]
        if fresh:
            return inc, fresh[0]
    return None


def may_reevaluate(evaluations: int, reevaluations: int, plan: Racing) -> bool:
    """True while re-evaluation stays within its share of the evaluations (counting the next one)."""
    return reevaluations + 1 <= plan.share * (evaluations + 1)


def top_k(score: Mapping[Order, float], k: int) -> list[Order]:
    """The ``k`` orderings with the best score (what ``--validate K`` retrains on held-out seeds)."""
    return sorted(score, key=lambda o: -score[o])[:k]


def pick_validated(validation: Results, score: Mapping[Order, float]) -> Order:
    """The recommendation: the best mean over the held-out validation seeds (ties: the better
    score). Those seeds never chose the candidates, so this mean is not inflated by selection."""

    def mean(o: Order) -> float:
        v = validation[o]
        return sum(v.values()) / len(v) if v else -math.inf

    return max(validation, key=lambda o: (mean(o), score.get(o, -math.inf)))
