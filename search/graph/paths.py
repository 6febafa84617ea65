"""The path score: a linear score of an ordering from its consecutive pairs, and the maximum-weight
Hamiltonian path solvers the ``max-path`` rule uses.

``path score = intercept + Σ_consecutive (w_t·transfer + w_i·interference + w_d·dissimilarity)``
with default weights +1, −1, 0. It only sees neighbours, so it is not how `lll affinity` ranks
orderings (that is the zero-shot pick of ``search/graph/zero_shot.py`` and the graph model of
``search/graph/model.py``); it stays as the published baselines' machinery: :func:`held_karp`
(exact, dynamic programming over subsets up to 12 tasks) and :func:`approx_path` (simulated
annealing beyond) find the path of largest total weight, e.g. of dissimilarity for ``max-path``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from search.graph.affinity import graph_tasks

FEATURES = ("transfer", "interference", "dissimilarity")
EXACT_MAX = 12  # dynamic programming over subsets up to this many tasks (2^12·12 states)
ENUMERATE_MAX = 8  # up to this many tasks every ordering is scored (exact top-k)


@dataclass(frozen=True)
class PathWeights:
    """Weights of the path score. ``fitted_on`` = 0 means the defaults."""

    transfer: float = 1.0
    interference: float = -1.0
    dissimilarity: float = 0.0
    intercept: float = 0.0
    fitted_on: int = 0
    r2: float | None = None  # in-sample R² of the fit

    def vector(self) -> np.ndarray:
        return np.array([self.transfer, self.interference, self.dissimilarity])

    def describe(self) -> str:
        w = (
            f"transfer {self.transfer:+.3g}, interference {self.interference:+.3g}, "
            f"dissimilarity {self.dissimilarity:+.3g}"
        )
        if not self.fitted_on:
            return f"default weights ({w})"
        return f"weights fitted on {self.fitted_on} trials ({w}, intercept {self.intercept:.3g}, R² {self.r2:.2f})"


def pair_features(g: nx.DiGraph) -> tuple[list[str], np.ndarray]:
    """(tasks, F) with F[i, j] = (transfer, interference, dissimilarity) of the edge i→j (zeros on
    the diagonal and for missing edges)."""
    names = graph_tasks(g)
    f = np.zeros((len(names), len(names), len(FEATURES)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and g.has_edge(a, b):
                f[i, j] = [g.edges[a, b].get(k, 0.0) for k in FEATURES]
    return names, f


def path_features(g: nx.DiGraph, order: Sequence[str]) -> np.ndarray:
    """Sum of the pair features along consecutive tasks of ``order``."""
    names, f = pair_features(g)
    idx = [names.index(a) for a in order]
    return f[idx[:-1], idx[1:]].sum(axis=0) if len(idx) > 1 else np.zeros(len(FEATURES))


def path_score(g: nx.DiGraph, order: Sequence[str], weights: PathWeights | None = None) -> float:
    w = weights or PathWeights()
    return float(w.intercept + path_features(g, order) @ w.vector())


def fit_weights(
    g: nx.DiGraph, trials: Sequence[tuple[Sequence[str], float]], per_weight: int = 3, ridge: float = 1e-3
) -> PathWeights:
    """Fit the path-score weights to (ordering, ACC) pairs by ridge regression on standardised
    features (intercept not penalised). With fewer than ``per_weight`` × 3 trials, the defaults.
    A feature that does not vary over the trials gets weight 0."""
    rows = [(o, y) for o, y in trials if len(o) > 1 and all(a in g for a in o) and math.isfinite(y)]
    if len(rows) < per_weight * len(FEATURES):
        return PathWeights()
    x = np.array([path_features(g, o) for o, _ in rows])
    y = np.array([v for _, v in rows])
    mu, sd = x.mean(axis=0), x.std(axis=0)
    live = sd > 1e-12
    z = (x[:, live] - mu[live]) / sd[live]
    yc = y - y.mean()
    beta = np.linalg.solve(z.T @ z + ridge * len(y) * np.eye(z.shape[1]), z.T @ yc) if live.any() else np.zeros(0)
    w = np.zeros(len(FEATURES))
    w[live] = beta / sd[live]
    intercept = float(y.mean() - w @ mu)
    pred = intercept + x @ w
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 0.0
    return PathWeights(*map(float, w), intercept=intercept, fitted_on=len(rows), r2=r2)


def edge_weights(g: nx.DiGraph, weights: PathWeights | None = None) -> tuple[list[str], np.ndarray]:
    """(tasks, W) with W[i, j] the score contribution of putting j right after i."""
    names, f = pair_features(g)
    return names, f @ (weights or PathWeights()).vector()


def held_karp(w: np.ndarray) -> tuple[list[int], float, dict[int, tuple[list[int], float]]]:
    """Exact maximum-weight Hamiltonian path of the directed weights ``w`` (n×n) by dynamic
    programming over (visited set, last task). Returns (best path, its value, best path ending
    at each task)."""
    n = len(w)
    if n == 0:
        return [], 0.0, {}
    size = 1 << n
    dp = np.full((size, n), -np.inf)
    parent = np.full((size, n), -1, dtype=np.int64)
    for i in range(n):
        dp[1 << i, i] = 0.0
    bits = 1 << np.arange(n)
    for mask in range(1, size):
        row = dp[mask]
        if not np.isfinite(row).any():
            continue
        cand = row[:, None] + w  # from i (in mask) to j
        src = cand.argmax(axis=0)
        val = cand[src, np.arange(n)]
        free = np.nonzero((mask & bits) == 0)[0]
        if free.size == 0:
            continue
        nxt = mask | bits[free]
        better = val[free] > dp[nxt, free]
        dp[nxt[better], free[better]] = val[free][better]
        parent[nxt[better], free[better]] = src[free][better]

    def path_to(last: int) -> list[int]:
        mask, j, out = size - 1, last, [last]
        while parent[mask, j] >= 0:
            i = int(parent[mask, j])
            mask ^= 1 << j
            j = i
            out.append(j)
        return out[::-1]

    ends = {j: (path_to(j), float(dp[size - 1, j])) for j in range(n)}
    best = int(np.argmax(dp[size - 1]))
    return ends[best][0], ends[best][1], ends


def _value(w: np.ndarray, path: Sequence[int]) -> float:
    return float(sum(w[a, b] for a, b in itertools.pairwise(path)))


def approx_path(w: np.ndarray, seed: int = 0) -> list[int]:
    """A good (not provably best) maximum-weight Hamiltonian path: a directed travelling-salesman
    tour through an extra zero-cost node, by networkx's simulated annealing from its greedy tour,
    cut open at the extra node. Cost = (max W + 1) − W keeps every cost positive; a path always
    has n − 1 real edges, so the cheapest tour is the highest-scoring path."""
    from networkx.algorithms.approximation import simulated_annealing_tsp

    n = len(w)
    if n < 2:
        return list(range(n))
    if n == 2:
        return [0, 1] if w[0, 1] >= w[1, 0] else [1, 0]
    top = float(w.max()) + 1.0
    h = nx.DiGraph()
    dummy = n
    for i in range(n):
        h.add_edge(dummy, i, weight=0.0)
        h.add_edge(i, dummy, weight=0.0)
        for j in range(n):
            if i != j:
                h.add_edge(i, j, weight=top - float(w[i, j]))
    tour = simulated_annealing_tsp(
        h, "greedy", weight="weight", source=dummy, seed=seed, max_iterations=50, N_inner=200
    )
    return [v for v in tour[:-1] if v != dummy]


def best_orderings(
    g: nx.DiGraph, weights: PathWeights | None = None, k: int = 1, exact_max: int = EXACT_MAX, seed: int = 0
) -> tuple[list[tuple[list[str], float]], str]:
    """The best-scoring orderings (at most ``k``, best first) with their predicted scores, and how
    they were found. Up to 8 tasks every ordering is scored (exact top-k); up to ``exact_max``
    the exact best by dynamic programming, and as runners-up the best ordering ending in each
    other task; beyond, simulated annealing plus a greedy path from each start (approximate)."""
    w_ = weights or PathWeights()
    names, w = edge_weights(g, w_)
    n = len(names)
    if n == 0:
        return [], "empty graph"
    scored: list[tuple[list[int], float]]
    if n <= min(ENUMERATE_MAX, exact_max):
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
        vals = w[perms[:, :-1], perms[:, 1:]].sum(axis=1) if n > 1 else np.zeros(len(perms))
        top = np.argsort(-vals, kind="stable")[:k]
        scored = [(perms[i].tolist(), float(vals[i])) for i in top]
        method = f"exact: every ordering of {n} tasks scored"
    elif n <= exact_max:
        _, _, ends = held_karp(w)
        scored = sorted(ends.values(), key=lambda pv: -pv[1])[:k]
        method = f"exact best by dynamic programming over subsets ({n} tasks); runners-up: best ending in each task"
    else:
        cands = [approx_path(w, seed)]
        for s in range(n):  # greedy: always the best next task
            path, left = [s], set(range(n)) - {s}
            while left:
                nxt = max(sorted(left), key=lambda j, i=path[-1]: w[i, j])
                path.append(nxt)
                left.remove(nxt)
            cands.append(path)
        uniq = {tuple(p): _value(w, p) for p in cands}
        scored = sorted(([list(p), v] for p, v in uniq.items()), key=lambda pv: -pv[1])[:k]
        method = f"approximate ({n} tasks > {exact_max}): simulated annealing and greedy paths"
    return [([names[i] for i in p], float(w_.intercept + v)) for p, v in scored], method


def all_scores(g: nx.DiGraph, orders: Iterable[Sequence[str]], weights: PathWeights | None = None) -> list[float]:
    """Predicted score of each ordering (vectorised; used by the benchmark)."""
    w_ = weights or PathWeights()
    names, w = edge_weights(g, w_)
    pos = {a: i for i, a in enumerate(names)}
    out = []
    for o in orders:
        idx = [pos[a] for a in o]
        out.append(float(w_.intercept + sum(w[a, b] for a, b in itertools.pairwise(idx))))
    return out
