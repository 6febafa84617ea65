"""Published task-ordering rules, computed from the affinity graph's dissimilarity between tasks.

* ``periphery-to-core`` (Li & Hiratani, ICML 2025): least typical tasks first, most typical last;
  a task's typicality is its mean similarity (1 − dissimilarity) to the other tasks.
* ``max-path`` (Li & Hiratani): adjacent tasks dissimilar — the Hamiltonian path of largest total
  dissimilarity (exact by dynamic programming up to 12 tasks, simulated annealing beyond).
* ``greedy`` (Tsipory et al., NeurIPS 2025): start with the least typical task, then always the
  task most dissimilar to the last one. Single-pass greedy can fail badly, so
  :func:`greedy_hybrid` offers the greedy-then-random hybrid: greedy for the first half, the rest
  in a seeded random order.

Dissimilarity is the graph's (``search/graph/affinity.py``): 1 − cosine of the tasks' transfer profiles,
which come from the zero-shot transfer of each single-task training to every other task.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from tasks.errors import LLLError


def dissimilarity_from_graph(g) -> np.ndarray:
    from search.graph.affinity import similarity_matrix

    d = 1.0 - similarity_matrix(g)
    np.fill_diagonal(d, 0.0)
    return d


def dissimilarity_from_model(model) -> np.ndarray:
    """1 − cosine of the transfer profiles base[:, a] (accuracy on every task after a alone,
    relative to the lowest), for a GraphModel without its graph."""
    p = (model.base - model.base.min(axis=1, keepdims=True)).T
    norm = np.linalg.norm(p, axis=1)
    unit = p / np.where(norm > 0, norm, 1.0)[:, None]
    d = 1.0 - np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(d, 0.0)
    return d


def typicality(d: np.ndarray) -> np.ndarray:
    n = len(d)
    if n < 2:
        return np.zeros(n)
    return (1.0 - d).sum(axis=1) / (n - 1) - 1.0 / (n - 1)  # the diagonal's similarity 1 left out


def periphery_to_core(d: np.ndarray) -> list[int]:
    t = typicality(d)
    return sorted(range(len(d)), key=lambda i: (t[i], i))


def max_path(d: np.ndarray, seed: int = 0) -> list[int]:
    from search.graph.paths import EXACT_MAX, approx_path, held_karp

    w = np.asarray(d, dtype=np.float64)
    if len(w) <= EXACT_MAX:
        return held_karp(w)[0]
    return approx_path(w, seed)


def greedy(d: np.ndarray, start: int | None = None, steps: int | None = None, seed: int = 0) -> list[int]:
    """Most-dissimilar-next from ``start`` (default: the least typical task); after ``steps``
    greedy picks (default: all) the remaining tasks follow in a random order drawn from ``seed``."""
    n = len(d)
    if n == 0:
        return []
    t = typicality(d)
    cur = int(min(range(n), key=lambda i: (t[i], i))) if start is None else start
    path, left = [cur], [i for i in range(n) if i != cur]
    steps = n if steps is None else steps
    while left and len(path) < max(1, steps):
        nxt = max(left, key=lambda j: (d[path[-1], j], -j))
        path.append(nxt)
        left.remove(nxt)
    rng = np.random.default_rng(seed)
    return path + [left[i] for i in rng.permutation(len(left))]


def greedy_hybrid(d: np.ndarray, seed: int = 0) -> list[int]:
    """Greedy for the first ⌈T/2⌉ tasks, then random (Tsipory et al.'s remedy for greedy's failures)."""
    return greedy(d, steps=math.ceil(len(d) / 2), seed=seed)


# The ordering rules, by name: `lll affinity --rule`, its help and --seed-from-graph read them here.
RULES: dict[str, Callable[[np.ndarray, int], list[int]]] = {
    "periphery-to-core": lambda d, seed: periphery_to_core(d),
    "max-path": max_path,
    "greedy": lambda d, seed: greedy(d),
}


def check_rule(name: str) -> str:
    if name not in RULES:
        raise LLLError(f"unknown --rule {name!r}; choose one of {', '.join(RULES)}")
    return name


def rule_order(name: str, tasks: Sequence[str], d: np.ndarray, seed: int = 0) -> list[str]:
    check_rule(name)
    return [tasks[i] for i in RULES[name](d, seed)]


def rule_orderings(tasks: Sequence[str], d: np.ndarray, seed: int = 0) -> dict[str, tuple[list[str], float]]:
    """Every rule's ordering with its total adjacent dissimilarity (what max-path maximises)."""
    out = {}
    for name in RULES:
        o = rule_order(name, tasks, d, seed)
        idx = [list(tasks).index(a) for a in o]
        out[name] = (o, float(sum(d[a, b] for a, b in itertools.pairwise(idx))))
    return out
