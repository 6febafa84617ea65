"""Permutations as arrays of task indices: features, neighbourhoods (swaps and insertions) and a
local search over them — shared by the model sampler and the graph model's heuristic ranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (i, j), i < j, task-index pairs of the precedence features, in a fixed order."""
    i, j = np.triu_indices(n, k=1)
    return i, j


def precedence(perms: np.ndarray) -> np.ndarray:
    """±1 features "task i before task j" for every pair i < j (T(T−1)/2 per ordering)."""
    perms = np.atleast_2d(perms)
    m, n = perms.shape
    pos = np.empty_like(perms)
    pos[np.arange(m)[:, None], perms] = np.arange(n)[None, :]
    i, j = pair_index(n)
    return np.where(pos[:, i] < pos[:, j], 1.0, -1.0)


@lru_cache(maxsize=32)
def move_index(n: int) -> np.ndarray:
    """Index maps of every swap and insertion on n positions (rows: perm[row] is a neighbour)."""
    base = np.arange(n)
    out = set()
    for a in range(n):
        for b in range(a + 1, n):
            p = base.copy()
            p[a], p[b] = p[b], p[a]
            out.add(tuple(p))
        rest = np.delete(base, a)
        for b in range(n):
            out.add(tuple(np.insert(rest, b, a)))
    out.discard(tuple(base))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, n)


def neighbours(perm: np.ndarray) -> np.ndarray:
    """Every ordering one swap or one insertion (move a task elsewhere) away, without repeats."""
    perm = np.asarray(perm)
    return perm[move_index(len(perm))]


def local_search(
    score: Callable[[np.ndarray], np.ndarray],
    starts: Sequence[np.ndarray],
    k: int = 1,
    max_steps: int = 50,
    exclude: set[tuple[int, ...]] | None = None,
) -> list[tuple[list[int], float]]:
    """Steepest ascent from each start over swaps and insertions; returns the ``k`` best distinct
    orderings visited (best first) that are not in ``exclude``. ``score`` maps rows of orderings to
    values (higher is better)."""
    exclude = exclude or set()
    seen: dict[tuple[int, ...], float] = {}

    def note(perms: np.ndarray, vals: np.ndarray) -> None:
        # only the best few of a batch can make the top k: convert just those
        taken = 0
        for i in np.argsort(-vals, kind="stable"):
            key = tuple(int(x) for x in perms[i])
            if key in exclude:
                continue
            seen[key] = float(vals[i])
            taken += 1
            if taken >= k:
                break

    for start in starts:
        cur = np.asarray(start, dtype=np.int64)
        cur_v = float(score(cur[None])[0])
        note(cur[None], np.array([cur_v]))
        for _ in range(max_steps):
            nb = neighbours(cur)
            if len(nb) == 0:
                break
            vals = score(nb)
            note(nb, vals)
            best = int(np.argmax(vals))
            if vals[best] <= cur_v + 1e-12:
                break
            cur, cur_v = nb[best], float(vals[best])
    ranked = sorted(seen.items(), key=lambda pv: (-pv[1], pv[0]))
    return [(list(p), v) for p, v in ranked[:k]]
