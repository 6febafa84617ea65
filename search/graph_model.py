"""A model of final accuracy built from the affinity graph's single-task and pair trainings.

The path score of ``search/affinity.py`` only sees consecutive pairs. Final accuracy on a task j
depends on *every* task trained after it, and on which task comes last. From the T² trainings the
graph measures (``[a]`` and ``[a, b]``, one random initialisation) three accuracies on j are known:

* ``s_j``       — after training j alone (node ``solo``);
* ``base_j(k)`` — after training only k: what k alone teaches about j (``init_j + transfer(k→j)``);
* ``pair_j(k)`` — after j then k (``s_j − interference(j, k)``).

``ρ_jk = (pair_j(k) − base_j(k)) / (s_j − base_j(k))`` is the share of what j knows *beyond what k
alone would give* that survives training k (clipped to [0, 1.2]). The model chains these shares:

    final_j = base_j(L) + (s_j − base_j(L))⁺ · Π_{k after j} ρ_jk ^ (α · γ^(d_jk − 1))
    final_L = s_L                                 (L = the last task, d_jk = positions between)
    ACC(π)  = a + b · mean_j final_j

so every later task erodes j (α: how strongly, γ: how much less a task far after j matters), and
the last task sets the floor each earlier task decays towards (transfer from it is kept). The
defaults (α = 1, γ = 1, a = 0, b = 1) need no search at all; ``fit`` sets α, γ (bounded least
squares from a grid of starts) and a, b (linear, closed form) to a study's finished trials.

Ranking: every ordering is scored exactly up to :data:`EXACT_MAX` tasks (vectorised, in chunks;
10 tasks = 3.6 M orderings, some seconds); beyond, a local search over swaps and insertions from
the published rules' orderings and random starts (heuristic).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import networkx as nx
import numpy as np

EXACT_MAX = 10
RHO_MAX = 1.2
CHUNK = 100_000


@dataclass(frozen=True)
class ModelParams:
    alpha: float = 1.0  # strength of forgetting
    gamma: float = 1.0  # decay of a later task's effect with its distance
    a: float = 0.0  # ACC = a + b · mean final accuracy
    b: float = 1.0
    fitted_on: int = 0
    r2: float | None = None

    def describe(self) -> str:
        core = f"α {self.alpha:.3g}, γ {self.gamma:.3g}"
        if not self.fitted_on:
            return f"default parameters ({core})"
        return f"fitted on {self.fitted_on} trials ({core}, ACC = {self.a:+.3f} + {self.b:.3f}·mean; R² {self.r2:.2f})"


@dataclass(frozen=True)
class GraphModel:
    """The measured quantities as arrays over ``tasks`` (index order), and the parameters."""

    tasks: tuple[str, ...]
    solo: np.ndarray  # s_j
    base: np.ndarray  # base[j, k] = accuracy on j after training only k (diagonal: s_j)
    rho: np.ndarray  # rho[j, k] = share of j's excess surviving k (diagonal unused)
    params: ModelParams = ModelParams()

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, tasks: Sequence[str], solo, base, pair, params: ModelParams | None = None) -> GraphModel:
        """``pair[j, k]`` = accuracy on j after j then k; ``base[j, k]`` = on j after k alone."""
        solo, base, pair = (np.asarray(v, dtype=np.float64) for v in (solo, base, pair))
        excess = solo[:, None] - base
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(excess > 1e-9, (pair - base) / np.where(excess > 1e-9, excess, 1.0), 1.0)
        rho = np.clip(np.nan_to_num(rho, nan=1.0), 0.0, RHO_MAX)
        np.fill_diagonal(rho, 1.0)
        base = base.copy()
        np.fill_diagonal(base, solo)
        return cls(tuple(tasks), solo, base, rho, params or ModelParams())

    @classmethod
    def from_graph(cls, g: nx.DiGraph, params: ModelParams | None = None) -> GraphModel:
        """From an affinity graph (``search.affinity.build_graph``): node solo/init, edge transfer and
        interference. A task never measured alone gets the mean solo accuracy."""
        from search.affinity import graph_tasks

        names = graph_tasks(g)
        n = len(names)
        solo = np.array([g.nodes[a].get("solo", math.nan) for a in names], dtype=np.float64)
        init = np.array([g.nodes[a].get("init", math.nan) for a in names], dtype=np.float64)
        solo = np.where(np.isfinite(solo), solo, np.nanmean(solo) if np.isfinite(solo).any() else 0.0)
        init = np.where(np.isfinite(init), init, 0.0)
        base, pair = np.zeros((n, n)), np.zeros((n, n))
        for j, a in enumerate(names):
            for k, b in enumerate(names):
                if j == k:
                    continue
                e_kj = g.edges[b, a] if g.has_edge(b, a) else {}
                e_jk = g.edges[a, b] if g.has_edge(a, b) else {}
                base[j, k] = init[j] + e_kj.get("transfer", 0.0)
                pair[j, k] = solo[j] - e_jk.get("interference", 0.0)
        return cls.from_arrays(names, solo, base, pair, params)

    @classmethod
    def from_rows(cls, tasks: Sequence[str], single: dict, pair: dict, params: ModelParams | None = None):
        """From raw rows: ``single[a]`` = {task: acc} after a alone, ``pair[(a, b)]`` after a then b."""
        n = len(tasks)
        solo = np.array([single[a][a] for a in tasks])
        base, pr = np.zeros((n, n)), np.zeros((n, n))
        for j, a in enumerate(tasks):
            for k, b in enumerate(tasks):
                if j != k:
                    base[j, k] = single[b][a]
                    pr[j, k] = pair[(a, b)][a]
        return cls.from_arrays(tasks, solo, base, pr, params)

    def with_params(self, params: ModelParams) -> GraphModel:
        return replace(self, params=params)

    # ---- prediction --------------------------------------------------------------------------
    def index(self, orders: Iterable[Sequence[str]]) -> np.ndarray:
        pos = {a: i for i, a in enumerate(self.tasks)}
        return np.array([[pos[a] for a in o] for o in orders], dtype=np.int64)

    def mean_final(self, perms: np.ndarray, alpha: float | None = None, gamma: float | None = None) -> np.ndarray:
        """Mean predicted final accuracy of each ordering (rows of task indices), before a, b."""
        alpha = self.params.alpha if alpha is None else alpha
        gamma = self.params.gamma if gamma is None else gamma
        perms = np.atleast_2d(perms)
        m, t = perms.shape
        if t == 0:
            return np.zeros(m)
        log_rho = np.log(np.maximum(self.rho, 1e-6))
        # at[p, q] = log ρ(task at position p, task at position q), weighted by distance q − p.
        at = log_rho[perms[:, :, None], perms[:, None, :]]
        d = np.arange(t)[None, :] - np.arange(t)[:, None]
        w = np.where(d > 0, alpha * np.power(gamma, np.maximum(d - 1, 0).astype(np.float64)), 0.0)
        keep = np.exp((at * w[None]).sum(axis=2))  # (m, t): surviving share of each position's excess
        last = perms[:, -1]
        s = self.solo[perms]
        floor = self.base[perms, last[:, None]]
        final = floor + np.maximum(s - floor, 0.0) * keep
        final[:, -1] = s[:, -1]
        return final.mean(axis=1)

    def predict(self, orders: Iterable[Sequence[str]]) -> np.ndarray:
        """Predicted ACC of each ordering (names)."""
        p = self.params
        return p.a + p.b * self.mean_final(self.index(orders))

    def predict_perms(self, perms: np.ndarray) -> np.ndarray:
        p = self.params
        return p.a + p.b * self.mean_final(perms)

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, outcomes: Sequence[tuple[Sequence[str], float]], min_trials: int = 6) -> GraphModel:
        """Fit α, γ, a, b to (ordering, ACC) pairs (complete orderings of all the model's tasks);
        with fewer than ``min_trials`` usable pairs, the model is returned unchanged."""
        from scipy.optimize import minimize

        rows = [(o, y) for o, y in outcomes if len(o) == len(self.tasks) and math.isfinite(y)]
        if len(rows) < min_trials:
            return self
        perms = self.index([o for o, _ in rows])
        y = np.array([v for _, v in rows], dtype=np.float64)

        def linear(alpha: float, gamma: float) -> tuple[float, float, float]:
            x = self.mean_final(perms, alpha, gamma)
            xc = x - x.mean()
            var = float(xc @ xc)
            b = float(xc @ (y - y.mean()) / var) if var > 1e-15 else 0.0
            a = float(y.mean() - b * x.mean())
            return a, b, float(((y - a - b * x) ** 2).sum())

        def loss(v: np.ndarray) -> float:
            return linear(float(v[0]), float(v[1]))[2]

        starts = [(al, ga) for al in (0.25, 1.0, 3.0) for ga in (0.3, 0.7, 1.0)]
        best = min(starts, key=lambda s: loss(np.array(s)))
        res = minimize(loss, np.array(best), method="L-BFGS-B", bounds=[(0.0, 10.0), (0.0, 1.0)])
        alpha, gamma = (float(v) for v in (res.x if res.fun <= loss(np.array(best)) else best))
        a, b, sse = linear(alpha, gamma)
        ss = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - sse / ss if ss > 0 else 0.0
        return self.with_params(ModelParams(alpha, gamma, a, b, fitted_on=len(rows), r2=r2))

    # ---- ranking -----------------------------------------------------------------------------
    def top(self, k: int = 1, seed: int = 0, exact_max: int = EXACT_MAX) -> tuple[list[tuple[list[str], float]], str]:
        """The ``k`` orderings with the highest predicted ACC, best first, and how they were found."""
        n = len(self.tasks)
        if n <= exact_max:
            best_v, best_p = np.empty(0), np.empty((0, n), dtype=np.int64)
            it = itertools.permutations(range(n))
            while True:
                chunk = np.array(list(itertools.islice(it, CHUNK)), dtype=np.int64).reshape(-1, n)
                if len(chunk) == 0:
                    break
                v = self.predict_perms(chunk)
                keep = np.argsort(-v, kind="stable")[:k]
                best_v, best_p = np.concatenate([best_v, v[keep]]), np.concatenate([best_p, chunk[keep]])
                order = np.argsort(-best_v, kind="stable")[:k]
                best_v, best_p = best_v[order], best_p[order]
            out = [([self.tasks[i] for i in p], float(v)) for p, v in zip(best_p, best_v, strict=True)]
            return out, f"exact: every ordering of {n} tasks scored"
        from search.perm_moves import local_search

        starts = [self.index([o])[0] for o in _rule_starts(self)]
        rng = np.random.default_rng(seed)
        starts += [rng.permutation(n) for _ in range(8)]
        found = local_search(lambda p: self.predict_perms(p), starts, k=k)
        out = [([self.tasks[i] for i in p], float(v)) for p, v in found]
        return (
            out,
            f"heuristic ({n} tasks > {exact_max}): local search over swaps and insertions from {len(starts)} starts",
        )


def _rule_starts(model: GraphModel) -> list[list[str]]:
    """Orderings of the published rules on the model's dissimilarity (starts for the local search)."""
    from search.order_rules import dissimilarity_from_model, rule_orderings

    return [o for o, _ in rule_orderings(list(model.tasks), dissimilarity_from_model(model)).values()]
