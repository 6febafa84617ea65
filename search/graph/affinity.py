"""The task-affinity graph: which task helps or hurts which, and the orderings that follow from it.

Evidence comes in two kinds, kept apart because they answer slightly different questions:

* **measured** — controlled runs from the same random initialisation (``search/study/affinity_runs.py``):
  the single-task ordering ``[a]`` gives ``transfer(a→b) = R(after a, on b) − R(init, on b)`` for
  every other pool task b, and the pair ``[a, b]`` gives ``interference(a, b) = R(after a, on a) −
  R(after a then b, on a)``, the drop on a caused by training b next.
* **harvested** — what a study's finished trials saw anyway: the forward-transfer entry
  ``R[i−1][i] − R[0][i]`` and the forgetting entry ``R[i][i] − R[i+1][i]`` of every consecutive pair
  of its orderings. Free, and it grows as a study runs, but observational: the model had been
  trained on a whole prefix, not on the previous task alone, and R is the trial's mean over seeds.

Both are kept as sums and counts (:class:`Tally`), so more measurements merge exactly. An edge's
value is the count-weighted mean with each harvested observation weighted ``harvest_weight``
(default 0.5: one harvested observation is worth half a controlled one); with only one kind of
evidence its plain mean is used. Edge attributes also say how many observations of each kind
back the value.

Dissimilarity of two tasks is ``1 − cos(p_a, p_b)`` of their *transfer profiles* ``p_a[c] =
transfer(a→c)`` over every pool task c (with ``p_a[a] = solo(a) − init(a)``, what training on a
teaches about a itself). It is symmetric, uses every task rather than only the a–b edge, and is
0 for tasks that teach the same things, 1 for unrelated, up to 2 for opposed ones.

The path score of an ordering is ``intercept + Σ_consecutive (w_t·transfer + w_i·interference +
w_d·dissimilarity)``. Default weights: +1 transfer, −1 interference, 0 dissimilarity — published
studies disagree on whether similar tasks should be adjacent, so no sign is assumed there until
:func:`fit_weights` lets a study's finished trials decide (ridge regression of their ACC). The
best-scoring ordering is a maximum-weight Hamiltonian path: exact by dynamic programming over
subsets up to 12 tasks, simulated annealing (networkx) beyond.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

FEATURES = ("transfer", "interference", "dissimilarity")
HARVEST_WEIGHT = 0.5
EXACT_MAX = 12  # dynamic programming over subsets up to this many tasks (2^12·12 states)
ENUMERATE_MAX = 8  # up to this many tasks every ordering is scored (exact top-k)
Row = Mapping[str, float]


# ---------------------------------------------------------------------------------------------
# evidence: sums and counts per task and per ordered pair
# ---------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """A running mean kept as sum and count, so tallies merge exactly."""

    total: float = 0.0
    n: int = 0

    def add(self, value: float, count: int = 1) -> None:
        self.total += float(value) * count
        self.n += count

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


@dataclass
class Evidence:
    """Observations of one kind (measured or harvested), per task and per ordered pair."""

    transfer: dict[tuple[str, str], Tally] = field(default_factory=dict)
    interference: dict[tuple[str, str], Tally] = field(default_factory=dict)
    solo: dict[str, Tally] = field(default_factory=dict)  # R(after a, on a)
    init: dict[str, Tally] = field(default_factory=dict)  # R(random init, on a)

    def add(self, kind: str, key: Any, value: float, count: int = 1) -> None:
        if not math.isfinite(value):
            return
        getattr(self, kind).setdefault(key, Tally()).add(value, count)

    def update(self, other: Evidence) -> None:
        """Add ``other``'s sums and counts to this one (in place)."""
        for kind in ("transfer", "interference", "solo", "init"):
            for key, t in getattr(other, kind).items():
                tally = getattr(self, kind).setdefault(key, Tally())
                tally.total += t.total
                tally.n += t.n

    def merge(self, other: Evidence) -> Evidence:
        """A new Evidence holding both (sums and counts added)."""
        out = Evidence()
        out.update(self)
        out.update(other)
        return out

    def tasks(self) -> set[str]:
        names = set(self.solo) | set(self.init)
        for a, b in list(self.transfer) + list(self.interference):
            names.update((a, b))
        return names

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for kind in ("transfer", "interference"):
            out[kind] = [[a, b, t.total, t.n] for (a, b), t in sorted(getattr(self, kind).items())]
        for kind in ("solo", "init"):
            out[kind] = [[a, t.total, t.n] for a, t in sorted(getattr(self, kind).items())]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> Evidence:
        ev = cls()
        for kind in ("transfer", "interference"):
            for a, b, total, n in d.get(kind, []):
                getattr(ev, kind)[(a, b)] = Tally(float(total), int(n))
        for kind in ("solo", "init"):
            for a, total, n in d.get(kind, []):
                getattr(ev, kind)[a] = Tally(float(total), int(n))
        return ev


def evidence_from_rows(
    init_row: Row, single_rows: Mapping[str, Row], pair_rows: Mapping[tuple[str, str], Row]
) -> Evidence:
    """Measured evidence of one seed. ``init_row``: accuracy on every pool task at the random
    initialisation; ``single_rows[a]``: after training a alone; ``pair_rows[(a, b)]``: after a then b."""
    ev = Evidence()
    for b, v in init_row.items():
        ev.add("init", b, v)
    for a, row in single_rows.items():
        ev.add("solo", a, row[a])
        for b, v in row.items():
            if b != a and b in init_row:
                ev.add("transfer", (a, b), v - init_row[b])
    for (a, b), row in pair_rows.items():
        if a in single_rows:
            ev.add("interference", (a, b), single_rows[a][a] - row[a])
    return ev


def evidence_from_r(order: Sequence[str], r: Sequence[Sequence[float]]) -> Evidence:
    """Harvested evidence of one trial: R is (T+1)×T, rows init then after each task, columns in
    ``order``. FWT entries R[i−1][i] − R[0][i] (column i, 0-based, i ≥ 1) go to the pair
    (order[i−1], order[i]); forgetting entries R[i+1][i] − R[i+2][i] (the drop on column i right
    after the next task) go to (order[i], order[i+1]). Row 1 is the solo accuracy of order[0]."""
    ev = Evidence()
    t = len(order)
    if t == 0 or len(r) != t + 1:
        return ev
    for j, name in enumerate(order):
        ev.add("init", name, r[0][j])
    ev.add("solo", order[0], r[1][0])
    for i in range(1, t):
        ev.add("transfer", (order[i - 1], order[i]), r[i][i] - r[0][i])
    for i in range(t - 1):
        ev.add("interference", (order[i], order[i + 1]), r[i + 1][i] - r[i + 2][i])
    return ev


def _complete(trials: Iterable[Any], strategy: str | None) -> list[Any]:
    from optuna.trial import TrialState

    keep = []
    for t in trials:
        a = t.user_attrs
        if t.state != TrialState.COMPLETE or "R" not in a or "order" not in a:
            continue
        if strategy is not None and a.get("strategy") != strategy:
            continue
        keep.append(t)
    return keep


def harvest_trials(trials: Iterable[Any], strategy: str | None = None) -> Evidence:
    """Evidence from a study's complete trials (FrozenTrials with user attrs ``order`` and ``R``).
    ``strategy``: only trials of this strategy — interference depends on it, so a graph describes
    one (pool, strategy); None takes every trial."""
    ev = Evidence()
    for t in _complete(trials, strategy):
        ev.update(evidence_from_r(t.user_attrs["order"], t.user_attrs["R"]))
    return ev


def trial_outcomes(
    trials: Iterable[Any], strategy: str | None = None, metric: str = "acc"
) -> list[tuple[list[str], float]]:
    """(ordering, metric) of the complete trials (of ``strategy``), what :func:`fit_weights` fits."""
    return [
        (list(t.user_attrs["order"]), float(t.user_attrs[metric]))
        for t in _complete(trials, strategy)
        if metric in t.user_attrs
    ]


# ---------------------------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------------------------
def _combine(m: Tally | None, h: Tally | None, w: float) -> tuple[float, int, int]:
    """(weighted mean, measured count, harvested count); mean 0.0 when there is no evidence."""
    nm, nh = (m.n if m else 0), (h.n if h else 0)
    num = (m.total if m else 0.0) + w * (h.total if h else 0.0)
    den = nm + w * nh
    if den == 0:  # w == 0 and only harvested evidence: fall back to its plain mean
        return ((h.mean if nh else 0.0), nm, nh)
    return num / den, nm, nh


def build_graph(
    tasks: Sequence[str] | None,
    measured: Evidence | None = None,
    harvested: Evidence | None = None,
    harvest_weight: float = HARVEST_WEIGHT,
    meta: Mapping[str, Any] | None = None,
) -> nx.DiGraph:
    """A complete DiGraph over ``tasks`` (default: every task seen in the evidence).

    Nodes: ``solo``, ``init`` (accuracies, NaN when unmeasured), ``n`` (observations), ``cluster``.
    Edges a→b: ``transfer``, ``interference``, ``dissimilarity``, ``n`` (observations of the pair,
    transfer and interference, both kinds), ``n_measured``, ``n_harvested``. A pair with no
    evidence has n = 0 and transfer = interference = 0 (neutral in the path score).
    Graph attributes: ``tasks`` (JSON list), ``harvest_weight``, the evidence as JSON (so a read
    graph can be merged with new evidence), and anything in ``meta``.
    """
    m, h = measured or Evidence(), harvested or Evidence()
    names = list(tasks) if tasks is not None else sorted(m.tasks() | h.tasks())
    g = nx.DiGraph()
    g.graph.update({k: v for k, v in (meta or {}).items() if isinstance(v, str | int | float | bool)})
    g.graph["tasks"] = json.dumps(names)
    g.graph["harvest_weight"] = float(harvest_weight)
    g.graph["measured"] = json.dumps(m.to_dict())
    g.graph["harvested"] = json.dumps(h.to_dict())
    for a in names:
        solo, nm, nh = _combine(m.solo.get(a), h.solo.get(a), harvest_weight)
        init, _, _ = _combine(m.init.get(a), h.init.get(a), harvest_weight)
        g.add_node(a, solo=solo if nm + nh else math.nan, init=init if (a in m.init or a in h.init) else math.nan)
        g.nodes[a]["n"] = nm + nh
    for a, b in itertools.permutations(names, 2):
        tr, tm, th = _combine(m.transfer.get((a, b)), h.transfer.get((a, b)), harvest_weight)
        it, im, ih = _combine(m.interference.get((a, b)), h.interference.get((a, b)), harvest_weight)
        g.add_edge(
            a,
            b,
            transfer=float(tr),
            interference=float(it),
            n=tm + th + im + ih,
            n_measured=tm + im,
            n_harvested=th + ih,
        )
    sim = similarity_matrix(g)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                g.edges[a, b]["dissimilarity"] = float(1.0 - sim[i, j])
    for k, members in enumerate(clusters(g)):
        for a in members:
            g.nodes[a]["cluster"] = k
    return g


def graph_tasks(g: nx.DiGraph) -> list[str]:
    """The graph's tasks in their stored order (the pool's)."""
    return list(json.loads(g.graph["tasks"])) if "tasks" in g.graph else list(g.nodes)


def graph_evidence(g: nx.DiGraph) -> tuple[Evidence, Evidence]:
    """(measured, harvested) evidence stored in a graph, e.g. one read back from GraphML."""
    return (
        Evidence.from_dict(json.loads(g.graph.get("measured", "{}"))),
        Evidence.from_dict(json.loads(g.graph.get("harvested", "{}"))),
    )


def transfer_matrix(g: nx.DiGraph) -> np.ndarray:
    names = graph_tasks(g)
    t = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and g.has_edge(a, b):
                t[i, j] = g.edges[a, b]["transfer"]
    return t


def similarity_matrix(g: nx.DiGraph) -> np.ndarray:
    """Cosine similarity of the tasks' transfer profiles (rows of the transfer matrix with the
    self-transfer solo − init on the diagonal); 0 where a profile is all zero."""
    names = graph_tasks(g)
    p = transfer_matrix(g)
    for i, a in enumerate(names):
        solo, init = g.nodes[a].get("solo", math.nan), g.nodes[a].get("init", math.nan)
        p[i, i] = solo - init if math.isfinite(solo) and math.isfinite(init) else 0.0
    norm = np.linalg.norm(p, axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    unit = p / safe[:, None]
    sim = unit @ unit.T
    sim[norm == 0, :] = 0.0
    sim[:, norm == 0] = 0.0
    return np.clip(sim, -1.0, 1.0)


def clusters(g: nx.DiGraph) -> list[list[str]]:
    """Groups of related tasks: greedy modularity communities of the undirected graph whose edge
    weights are the positive profile similarities. Largest first, then in task order."""
    names = graph_tasks(g)
    sim = similarity_matrix(g)
    u = nx.Graph()
    u.add_nodes_from(names)
    for i, j in itertools.combinations(range(len(names)), 2):
        if sim[i, j] > 1e-9:
            u.add_edge(names[i], names[j], weight=float(sim[i, j]))
    if u.number_of_edges() == 0:
        groups = [{a} for a in names]
    else:
        groups = list(nx.community.greedy_modularity_communities(u, weight="weight"))
    pos = {a: i for i, a in enumerate(names)}
    return sorted(([a for a in names if a in c] for c in groups), key=lambda c: (-len(c), pos[c[0]]))


# ---------------------------------------------------------------------------------------------
# GraphML and drawing
# ---------------------------------------------------------------------------------------------
def write_graphml(g: nx.DiGraph, path: str | Path) -> Path:
    nx.write_graphml(g, str(path))
    return Path(path)


def read_graphml(path: str | Path) -> nx.DiGraph:
    g = nx.read_graphml(str(path))
    for key in ("node_default", "edge_default"):  # added by the reader, not ours
        g.graph.pop(key, None)
    return g


def _pp(v: float) -> str:
    """Percentage points, one decimal for small values (so −0.2 does not print as "-0")."""
    return f"{v * 100:+.1f}" if abs(v) < 0.1 else f"{v * 100:+.0f}"


def draw(g: nx.DiGraph, path: str | Path, title: str | None = None) -> Path:
    """A PNG: edge width by |transfer|, green positive / red negative, curved so a→b and b→a are
    both visible; nodes coloured by cluster and labelled with their solo accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = graph_tasks(g)
    groups = clusters(g)
    colour_of = {a: k for k, c in enumerate(groups) for a in c}
    palette = plt.get_cmap("tab10")
    sim = similarity_matrix(g)
    layout = nx.Graph()
    layout.add_nodes_from(names)
    for i, j in itertools.combinations(range(len(names)), 2):
        layout.add_edge(names[i], names[j], weight=float(max(sim[i, j], 0.0)) + 0.05)
    pos = nx.spring_layout(layout, weight="weight", seed=0) if len(names) > 2 else nx.circular_layout(layout)

    edges = [(a, b) for a, b, d in g.edges(data=True) if d.get("n", 0) > 0]
    top = max((abs(g.edges[e]["transfer"]) for e in edges), default=0.0) or 1.0
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    nx.draw_networkx_nodes(
        g, pos, nodelist=names, node_color=[palette(colour_of[a] % 10) for a in names], node_size=1500, ax=ax
    )
    labels = {}
    for a in names:
        solo = g.nodes[a].get("solo", math.nan)
        labels[a] = f"{a}\n{solo * 100:.0f}%" if math.isfinite(solo) else a
    nx.draw_networkx_labels(g, pos, labels=labels, font_size=8, ax=ax)
    if edges:
        nx.draw_networkx_edges(
            g,
            pos,
            edgelist=edges,
            width=[0.5 + 6.0 * abs(g.edges[e]["transfer"]) / top for e in edges],
            edge_color=["tab:green" if g.edges[e]["transfer"] >= 0 else "tab:red" for e in edges],
            arrows=True,
            arrowsize=14,
            node_size=1500,
            connectionstyle="arc3,rad=0.15",
            alpha=0.8,
            ax=ax,
        )
        if len(names) <= 6:
            nx.draw_networkx_edge_labels(
                g,
                pos,
                edge_labels={e: _pp(g.edges[e]["transfer"]) for e in edges},
                label_pos=0.3,
                font_size=7,
                connectionstyle="arc3,rad=0.15",
                ax=ax,
            )
    handles = [
        Line2D([0], [0], color="tab:green", lw=3, label="positive transfer a→b"),
        Line2D([0], [0], color="tab:red", lw=3, label="negative transfer a→b"),
    ]
    handles += [
        Line2D([0], [0], marker="o", color="w", markerfacecolor=palette(k % 10), markersize=10, label=", ".join(c))
        for k, c in enumerate(groups)
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=7, title="edges / clusters", title_fontsize=7)
    ax.set_title(title or "task affinity: edge width ∝ |transfer| (pp labels), node = solo accuracy", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# path score, weight fitting, best orderings
# ---------------------------------------------------------------------------------------------
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
