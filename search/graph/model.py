"""A model of final accuracy built from the affinity graph's single-task and pair trainings.

The path score of ``search/graph/affinity.py`` only sees consecutive pairs. Final accuracy on a task j
depends on *every* task trained before and after it. The model follows one number per task — the
test accuracy ``a_j`` on j — through an ordering, and treats each task-training as an *affine map*
of it (history-independent; measured, not assumed, from the T² trainings of one initialisation):

* training k ≠ j:  ``a_j ← base_j(k) + r_kj · (a_j − init_j)``, with
  ``r_kj = (pair_j(k) − base_j(k)) / (s_j − init_j)`` (clipped to [0, 1]): the map through the two
  points the graph measured — from the random init, k alone gives ``base_j(k)`` (transfer); from
  j's solo accuracy ``s_j``, k gives ``pair_j(k)`` (interference). ``r_kj`` is the share of what j
  had gained over its init that survives k, ``base_j(k)`` is where k pulls j's accuracy.
* training j itself: ``a_j ← a_j + (s_j − init_j)`` (clipped to [0, 1]): what j alone teaches is
  added to what the earlier tasks already gave on j.

Every earlier task therefore sets the start from which j is learned, every later task erodes it
(multiplicatively, towards its own transfer), and the last task matters most because nothing
erodes its effect. The ground truth (bench/graph_model_probe.py) showed why the previous model —
erosion from j's *solo* accuracy towards the last task's transfer — was wrong at realistic
training: tasks trained late are learned better (or worse) than alone, because the earlier ones
act as pre-training; and the affine chain reproduces a triple's accuracy from its pairs better.

Two parameters, by default α = 1, κ = 0 (the maps exactly as measured), are fitted to a study's
finished trials together with the linear map ``ACC = a + b · mean_j a_j``:

* ``α`` — strength of forgetting: every cross map's loss ``1 − r_kj`` is scaled by α (its pull
  target ``base_j(k)`` kept): over a sequence, pair trainings can over- or under-state erosion;
* ``κ`` — stiffening: the training at position p (0-based) moves every accuracy by only
  ``1 / (1 + κ·p)`` of its measured step. A quadratic regulariser such as EWC adds one penalty per
  finished task, so the curvature the new task's loss competes with grows linearly with p and the
  step shrinks like 1/(1 + κp): early tasks are retained and late ones learned less. Naive: κ ≈ 0.

The pair trainings alone cannot tell κ (one penalty at most): on the 7-task ground truth the
default parameters rank naive orderings with Spearman ρ ≈ +0.5 but EWC ones at ≈ −0.2; fitted to 30
orderings, EWC is predicted about as well as naive (out of sample +0.5..+0.6 on seed 0's pairs;
bench/out/graph_model_probe.txt). ``fit`` sets α, κ by bounded least squares from a grid of
starts, and a, b in closed form.

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
R_MAX = 1.0  # a training cannot amplify what j had gained over its init
CHUNK = 100_000


@dataclass(frozen=True)
class ModelParams:
    alpha: float = 1.0  # strength of forgetting (scales every cross map's loss 1 − r)
    kappa: float = 0.0  # stiffening: the training at position p moves accuracies by 1/(1 + κ·p) of its step
    a: float = 0.0  # ACC = a + b · mean final accuracy
    b: float = 1.0
    fitted_on: int = 0
    r2: float | None = None

    def describe(self) -> str:
        core = f"α {self.alpha:.3g}, κ {self.kappa:.3g}"
        if not self.fitted_on:
            return f"default parameters ({core})"
        return f"fitted on {self.fitted_on} trials ({core}, ACC = {self.a:+.3f} + {self.b:.3f}·mean; R² {self.r2:.2f})"


STIFFENING_KAPPA = 1.0


def default_params(strategy: str | None) -> ModelParams:
    """The unfitted model for a strategy. A quadratic-penalty strategy (EWC, SI, MAS, L2, ...) adds
    a penalty for every finished task, so each later training moves the network less: κ = 1 (the
    training at position p takes 1/(1+p) of its measured step). The pair trainings cannot show this
    (they hold at most one penalty); without it EWC's orderings were ranked backwards on the 7-task
    ground truth (Spearman −0.24 with κ = 0; +0.39 to +0.46 for any κ in 0.5–4). Every other
    strategy: κ = 0. ``fit`` replaces both from a study's trials."""
    if strategy:
        from pipeline.strategies import STRATEGIES
        from pipeline.strategies.quadratic import QuadraticPenalty

        cls = STRATEGIES.get(strategy)
        if cls is not None and issubclass(cls, QuadraticPenalty):
            return ModelParams(kappa=STIFFENING_KAPPA)
    return ModelParams()


@dataclass(frozen=True)
class GraphModel:
    """The measured quantities as arrays over ``tasks`` (index order), and the parameters."""

    tasks: tuple[str, ...]
    solo: np.ndarray  # s_j
    base: np.ndarray  # base[j, k] = accuracy on j after training only k (diagonal: s_j)
    rho: np.ndarray  # rho[j, k] = r_kj, share of j's gain over its init surviving k (diagonal unused)
    init: np.ndarray | None = None  # accuracy on j at the random initialisation (None: zeros)
    params: ModelParams = ModelParams()

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls, tasks: Sequence[str], solo, base, pair, params: ModelParams | None = None, init=None
    ) -> GraphModel:
        """``pair[j, k]`` = accuracy on j after j then k; ``base[j, k]`` = on j after k alone;
        ``init[j]`` = on j at the random initialisation (default 0)."""
        solo, base, pair = (np.asarray(v, dtype=np.float64) for v in (solo, base, pair))
        init = np.zeros(len(solo)) if init is None else np.asarray(init, dtype=np.float64)
        gain = solo - init
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(gain[:, None] > 1e-9, (pair - base) / np.where(gain > 1e-9, gain, 1.0)[:, None], 1.0)
        rho = np.clip(np.nan_to_num(rho, nan=1.0), 0.0, R_MAX)
        np.fill_diagonal(rho, 1.0)
        base = base.copy()
        np.fill_diagonal(base, solo)
        return cls(tuple(tasks), solo, base, rho, init, params or ModelParams())

    @classmethod
    def from_graph(cls, g: nx.DiGraph, params: ModelParams | None = None, strategy: str | None = None) -> GraphModel:
        """From an affinity graph (``search.graph.affinity.build_graph``): node solo/init, edge transfer and
        interference. A task never measured alone gets the mean solo accuracy. Unfitted parameters
        default by ``strategy`` (else the graph's own ``strategy`` attribute): :func:`default_params`."""
        from search.graph.affinity import graph_tasks

        params = params or default_params(strategy or g.graph.get("strategy"))
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
        return cls.from_arrays(names, solo, base, pair, params, init)

    @classmethod
    def from_rows(cls, tasks: Sequence[str], single: dict, pair: dict, params: ModelParams | None = None, init=None):
        """From raw rows: ``single[a]`` = {task: acc} after a alone, ``pair[(a, b)]`` after a then b,
        ``init`` = {task: acc} at the random initialisation."""
        n = len(tasks)
        solo = np.array([single[a][a] for a in tasks])
        base, pr = np.zeros((n, n)), np.zeros((n, n))
        for j, a in enumerate(tasks):
            for k, b in enumerate(tasks):
                if j != k:
                    base[j, k] = single[b][a]
                    pr[j, k] = pair[(a, b)][a]
        i0 = None if init is None else [init[a] for a in tasks]
        return cls.from_arrays(tasks, solo, base, pr, params, i0)

    def with_params(self, params: ModelParams) -> GraphModel:
        return replace(self, params=params)

    # ---- prediction --------------------------------------------------------------------------
    def index(self, orders: Iterable[Sequence[str]]) -> np.ndarray:
        pos = {a: i for i, a in enumerate(self.tasks)}
        return np.array([[pos[a] for a in o] for o in orders], dtype=np.int64)

    def final(self, perms: np.ndarray, alpha: float | None = None, kappa: float | None = None) -> np.ndarray:
        """Predicted final accuracy on every task (columns in ``tasks`` order) after each ordering."""
        alpha = self.params.alpha if alpha is None else alpha
        kappa = self.params.kappa if kappa is None else kappa
        perms = np.atleast_2d(perms)
        n = len(self.tasks)
        init = np.zeros(n) if self.init is None else self.init
        # map of training k on task j: a_j ← r[k, j]·a_j + c[k, j]; diagonal: learning j adds its gain
        r = np.clip(1.0 - alpha * (1.0 - self.rho.T), 0.0, R_MAX)
        np.fill_diagonal(r, 1.0)
        c = self.base.T - r * init[None, :]
        np.fill_diagonal(c, self.solo - init)
        acc = np.tile(init, (perms.shape[0], 1))
        for p in range(perms.shape[1]):
            k = perms[:, p]
            step = 1.0 / (1.0 + kappa * p)
            new = r[k] * acc + c[k]
            acc = np.clip(acc + step * (new - acc), 0.0, 1.0)
        return acc

    def mean_final(self, perms: np.ndarray, alpha: float | None = None, kappa: float | None = None) -> np.ndarray:
        """Mean predicted final accuracy of each ordering (rows of task indices), before a, b."""
        perms = np.atleast_2d(perms)
        if perms.shape[1] == 0:
            return np.zeros(perms.shape[0])
        final = self.final(perms, alpha, kappa)
        return np.take_along_axis(final, perms, axis=1).mean(axis=1)  # over the tasks trained

    def predict(self, orders: Iterable[Sequence[str]]) -> np.ndarray:
        """Predicted ACC of each ordering (names)."""
        p = self.params
        return p.a + p.b * self.mean_final(self.index(orders))

    def predict_perms(self, perms: np.ndarray) -> np.ndarray:
        p = self.params
        return p.a + p.b * self.mean_final(perms)

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, outcomes: Sequence[tuple[Sequence[str], float]], min_trials: int = 6) -> GraphModel:
        """Fit α, κ, a, b to (ordering, ACC) pairs (complete orderings of all the model's tasks);
        with fewer than ``min_trials`` usable pairs, the model is returned unchanged."""
        from scipy.optimize import minimize

        rows = [(o, y) for o, y in outcomes if len(o) == len(self.tasks) and math.isfinite(y)]
        if len(rows) < min_trials:
            return self
        perms = self.index([o for o, _ in rows])
        y = np.array([v for _, v in rows], dtype=np.float64)

        def linear(alpha: float, kappa: float) -> tuple[float, float, float]:
            x = self.mean_final(perms, alpha, kappa)
            xc = x - x.mean()
            var = float(xc @ xc)
            b = float(xc @ (y - y.mean()) / var) if var > 1e-15 else 0.0
            a = float(y.mean() - b * x.mean())
            return a, b, float(((y - a - b * x) ** 2).sum())

        def loss(v: np.ndarray) -> float:
            return linear(float(v[0]), float(v[1]))[2]

        starts = [(al, ka) for al in (0.25, 1.0, 3.0) for ka in (0.0, 0.5, 2.0)]
        best = min(starts, key=lambda s: loss(np.array(s)))
        res = minimize(loss, np.array(best), method="L-BFGS-B", bounds=[(0.0, 10.0), (0.0, 10.0)])
        alpha, kappa = (float(v) for v in (res.x if res.fun <= loss(np.array(best)) else best))
        a, b, sse = linear(alpha, kappa)
        ss = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - sse / ss if ss > 0 else 0.0
        return self.with_params(ModelParams(alpha, kappa, a, b, fitted_on=len(rows), r2=r2))

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
        from search.orders.moves import local_search

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
    from search.graph.rules import dissimilarity_from_model, rule_orderings

    return [o for o, _ in rule_orderings(list(model.tasks), dissimilarity_from_model(model)).values()]
