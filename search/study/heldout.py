"""Held-out statistics: what a recommendation is worth on seeds the search never used.

A search picks its best ordering from many noisy seed means, so the picked value is biased upwards
(the winner's curse). Validation retrains the top orderings, the pool's given order and random
orderings on *held-out* seeds and compares them seed by seed (paired: the same seeds for every
ordering, so the seed's own luck cancels in a difference). This module holds the arithmetic:
seed choice, means with Student-t intervals, paired gains and the plain-language verdicts; the
training goes through the scheduler like every other unit (search/study/validation.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.errors import LLLError

#: Held-out seeds start here: far above any seed a search gives a new ordering or a re-evaluation
#: (base seed + 0 .. max seeds - 1).
HELDOUT_OFFSET = 1_000_000
#: Studies with different base seeds validate on disjoint held-out seeds (base seed × this stride), so
#: repeated searches are judged on independent seeds rather than on a shared, equally lucky set.
HELDOUT_STRIDE = 1_000
#: How many random orderings stand for "a random ordering" in the paired baseline.
RANDOM_BASELINES = 2


def heldout_seeds(base_seed: int, n: int, search_seeds: Sequence[int], given: Sequence[int] | None = None) -> list[int]:
    """``n`` seeds the search never used: ``given`` (checked) or HELDOUT_OFFSET + base × HELDOUT_STRIDE + i."""
    seeds = list(given) if given else [HELDOUT_OFFSET + base_seed * HELDOUT_STRIDE + i for i in range(n)]
    overlap = sorted(set(seeds) & set(search_seeds))
    if overlap:
        raise LLLError(
            f"held-out seeds {overlap} were used by the search (its seeds: {sorted(set(search_seeds))}); "
            "pick held-out seeds outside them, or drop --heldout-seeds to use the default ones"
        )
    if len(set(seeds)) != len(seeds):
        raise LLLError(f"held-out seeds {seeds} repeat a seed; give distinct seeds")
    if len(seeds) < 2:
        raise LLLError(f"validation needs at least 2 held-out seeds for an interval, got {len(seeds)}; e.g. 3")
    return seeds


def random_orderings(tasks: Sequence[str], n: int, seed: int, avoid: Sequence[Sequence[str]] = ()) -> list[list[str]]:
    """``n`` distinct random orderings of ``tasks`` (drawn from ``seed``), none of them in ``avoid``."""
    rng = random.Random(f"random-baseline:{seed}")
    seen = {tuple(a) for a in avoid}
    out: list[list[str]] = []
    limit = math.factorial(len(tasks)) - len(seen)
    while len(out) < min(n, max(0, limit)):
        order = list(tasks)
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            out.append(order)
    return out


def t_quantile(df: int, level: float = 0.95) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% Student-t interval (``n`` values)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], level: float = 0.95) -> Interval:
        n = len(values)
        if n == 0:
            raise ValueError("no values")
        mean = sum(values) / n
        if n < 2:
            return cls(mean, float("-inf"), float("inf"), n)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_quantile(n - 1, level) * sd / math.sqrt(n)
        return cls(mean, mean - half, mean + half, n)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self, scale: float = 1.0) -> dict[str, float | int]:
        return {"mean": self.mean * scale, "ci95": [self.low * scale, self.high * scale], "n": self.n}


def paired_gain(best: dict[int, float], other: dict[int, float]) -> Interval:
    """The recommended ordering minus a baseline, seed by seed on their shared seeds."""
    shared = sorted(set(best) & set(other))
    if not shared:
        raise ValueError("no shared seeds")
    return Interval.of([best[s] - other[s] for s in shared])


def cross_fitted(
    candidates: Sequence[dict[int, float]], picked_by: Sequence[dict[int, float]] | None = None
) -> Interval:
    """What picking the best of several candidates on held-out seeds is worth on a seed it did not
    see: for each seed, the candidate best on the *other* seeds (by ``picked_by``, default the
    values themselves; ties to the earlier candidate), and its value on that seed. Unlike the
    winner's own held-out mean it cannot be flattered by the pick; it is pessimistic instead (a pick
    on one seed fewer is a worse pick), and equals the plain mean when there is one candidate."""
    picked_by = picked_by or candidates
    seeds = sorted(set.intersection(*(set(c) for c in candidates)))
    values = []
    for s in seeds:
        rest = [t for t in seeds if t != s]
        best = max(range(len(candidates)), key=lambda i: (sum(picked_by[i][t] for t in rest), -i))
        values.append(candidates[best][s])
    return Interval.of(values)


def mean_over(orderings: Sequence[dict[int, float]]) -> dict[int, float]:
    """Per seed, the mean over several orderings (the random baseline: one value per seed)."""
    seeds = set.intersection(*(set(o) for o in orderings)) if orderings else set()
    return {s: sum(o[s] for o in orderings) / len(orderings) for s in sorted(seeds)}


def verdict(gain: Interval, baseline: str) -> str:
    """One plain sentence: is the recommendation better than ``baseline`` on held-out seeds?"""
    pts = f"{gain.mean * 100:+.2f} points (95% CI {gain.low * 100:+.2f} to {gain.high * 100:+.2f}, {gain.n} seeds)"
    if gain.low > 0:
        return f"better than {baseline}: {pts}"
    if gain.high < 0:
        return f"worse than {baseline}: {pts}"
    return f"not clearly better than {baseline}: {pts}"
