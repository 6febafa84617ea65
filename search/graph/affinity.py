"""The task-affinity graph: which task helps or hurts which, built from measured and harvested
evidence (``search/graph/evidence.py``).

An edge's value is the count-weighted mean of both kinds of evidence, each harvested observation
weighted ``harvest_weight`` (default 0.5: one harvested observation is worth half a controlled one);
with only one kind its plain mean is used. Edges also carry how many observations back the value
and, for measured evidence of several seeds, its per-seed spread.

Dissimilarity of two tasks is ``1 − cos(p_a, p_b)`` of their *transfer profiles* ``p_a[c] =
transfer(a→c)`` over every pool task c (with ``p_a[a] = solo(a) − init(a)``, what training on a
teaches about a itself). It is symmetric, uses every task rather than only the a–b edge, and is
0 for tasks that teach the same things, 1 for unrelated, up to 2 for opposed ones. Tasks group
into clusters by it. The published ordering rules (``search/graph/rules.py``) read it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from search.graph.evidence import PAIR_KINDS, Evidence, Tally

HARVEST_WEIGHT = 0.5


def _combine(m: Tally | None, h: Tally | None, w: float) -> tuple[float, int, int]:
    """(weighted mean, measured count, harvested count); mean 0.0 when there is no evidence."""
    nm, nh = (m.n if m else 0), (h.n if h else 0)
    num = (m.total if m else 0.0) + w * (h.total if h else 0.0)
    den = nm + w * nh
    if den == 0:  # w == 0 and only harvested evidence: fall back to its plain mean
        return ((h.mean if nh else 0.0), nm, nh)
    return num / den, nm, nh


def _sd(t: Tally | None) -> float:
    return float(t.sd) if t is not None else math.nan


def pair_noise(measured: Evidence) -> float:
    """The per-seed spread of one pair measurement: the root mean square of the per-entry
    standard deviations over seeds of every measured transfer, interference and learned value
    (NaN with fewer than two seeds). One number, because the spread of one entry from two or three
    seeds is itself too noisy to use entry by entry."""
    var = [t.sd**2 for kind in PAIR_KINDS for t in getattr(measured, kind).values() if t.n >= 2]
    return float(math.sqrt(sum(var) / len(var))) if var else math.nan


def build_graph(
    tasks: Sequence[str] | None,
    measured: Evidence | None = None,
    harvested: Evidence | None = None,
    harvest_weight: float = HARVEST_WEIGHT,
    meta: Mapping[str, Any] | None = None,
) -> nx.DiGraph:
    """A complete DiGraph over ``tasks`` (default: every task seen in the evidence).

    Nodes: ``solo``, ``init`` (accuracies, NaN when unmeasured), ``n`` (observations), ``cluster``,
    ``solo_sd``. Edges a→b: ``transfer``, ``interference``, ``learned`` (accuracy on b after a then b;
    NaN unmeasured), ``dissimilarity``, ``n`` (observations of the pair, transfer and interference,
    both kinds), ``n_measured``, ``n_harvested``, and the per-seed spread of the measured values
    ``transfer_sd``, ``interference_sd``, ``learned_sd`` (NaN below two seeds). A pair with no
    evidence has n = 0 and transfer = interference = 0.
    Graph attributes: ``tasks`` (JSON list), ``harvest_weight``, ``pair_noise`` (:func:`pair_noise`),
    the evidence as JSON (so a read graph can be merged with new evidence), and anything in ``meta``.
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
        g.nodes[a]["solo_sd"] = _sd(m.solo.get(a))
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
            learned=m.learned[(a, b)].mean if (a, b) in m.learned else math.nan,
            transfer_sd=_sd(m.transfer.get((a, b))),
            interference_sd=_sd(m.interference.get((a, b))),
            learned_sd=_sd(m.learned.get((a, b))),
        )
    g.graph["pair_noise"] = pair_noise(m)
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


def write_graphml(g: nx.DiGraph, path: str | Path) -> Path:
    nx.write_graphml(g, str(path))
    return Path(path)


def read_graphml(path: str | Path) -> nx.DiGraph:
    g = nx.read_graphml(str(path))
    for key in ("node_default", "edge_default"):  # added by the reader, not ours
        g.graph.pop(key, None)
    return g
