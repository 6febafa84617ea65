"""The zero-shot pick: one ordering from the T² single-task and pair trainings alone, chosen to be
robust to the graph model's errors, with a predicted ACC, an interval and a verdict on the noise.

The graph model (``search/graph/model.py``) ranks orderings with real signal, but its top pick sits
where it extrapolates furthest, and its two parameters (α: strength of forgetting, κ: stiffening by
a quadratic penalty) cannot be read off the pairs. The pick therefore takes the consensus — the
mean of standardised scores — of an ensemble of scorers, each a reading of the same pair evidence
(bench/graph_zero_shot.py measured the alternatives on every ground truth):

* the graph model at α ∈ {0.5, 1, 2} and κ from the strategy's family: 0 for strategies without a
  penalty; 0.5 and 1 for quadratic-penalty strategies (EWC, SI, MAS, L2), whose later trainings
  move the network less;
* for quadratic-penalty strategies, the pair *precedence* score: every pair training says which
  of "a then b" and "b then a" ends better for the two tasks (mean accuracy on a and b), and an
  ordering scores the sum of those differences over every pair it puts in that order. It carries
  the first task's effect, which the graph model misses for EWC; for naive it points the wrong way
  on the cheap ground truth, so it is not used there.

With a study's finished trials (≥ 6), the graph model fitted to them replaces the ensemble.

Noise: each pair value is a one-seed draw. With two or more seeds the graph knows the per-seed
spread (``pair_noise``); with one, :data:`DEFAULT_PAIR_NOISE` (the spread measured on the cheap
ground truth's two seeds). The pick is recomputed on :data:`DRAWS` perturbed copies of the evidence
(each value plus Gaussian noise of the seed mean's standard error): the share of copies whose top
10 % still holds the pick is its *stability*, and the reference model's prediction over the copies
gives the interval. Below :data:`TRUST`, the pair evidence is too noisy to trust the pick.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import networkx as nx
import numpy as np

from search.graph.model import GraphModel, ModelParams, default_params

ALPHAS = (0.5, 1.0, 2.0)
PLAIN_KAPPAS = (0.0,)
PENALTY_KAPPAS = (0.5, 1.0)
DEFAULT_PAIR_NOISE = 0.05  # per-seed SD of one pair value; cheap ground truth, seeds 0 vs 1: 0.048
DRAWS = 20
TRUST = 0.5  # share of perturbed copies whose top 10 % holds the pick
TOP_SHARE = 0.10
ENUMERATE_MAX = 8  # up to this many tasks every ordering is scored; beyond, a local search
REFERENCE_SAMPLE = 4096  # orderings that set each scorer's mean and spread beyond ENUMERATE_MAX


@dataclass(frozen=True)
class PairArrays:
    """The pair evidence as arrays over ``tasks``: ``base[j, k]`` accuracy on j after k alone
    (diagonal: solo), ``pair[j, k]`` on j after j then k, ``learned[a, b]`` on b after a then b
    (NaN unmeasured), ``init[j]`` at the random initialisation; ``seeds`` measured, ``noise`` the
    per-seed SD of one value."""

    tasks: tuple[str, ...]
    init: np.ndarray
    base: np.ndarray
    pair: np.ndarray
    learned: np.ndarray
    seeds: int
    noise: float

    @classmethod
    def from_graph(cls, g: nx.DiGraph) -> PairArrays:
        """Read the graph's nodes and edges (a task never measured alone gets the mean solo)."""
        m = GraphModel.from_graph(g)  # the same solo, init and base as the graph model
        n = len(m.tasks)
        init = np.zeros(n) if m.init is None else m.init
        pair, learned = np.diag(m.solo).copy(), np.full((n, n), math.nan)
        for i, a in enumerate(m.tasks):
            for j, b in enumerate(m.tasks):
                if i != j and g.has_edge(a, b):
                    pair[i, j] = m.solo[i] - float(g.edges[a, b].get("interference", 0.0))
                    learned[i, j] = float(g.edges[a, b].get("learned", math.nan))
        seeds = max((int(d.get("n_measured", 0)) // 2 for *_, d in g.edges(data=True)), default=0)
        noise = float(g.graph.get("pair_noise", math.nan))
        return cls(m.tasks, init, m.base.copy(), pair, learned, seeds, noise)

    def perturbed(self, rng: np.random.Generator) -> PairArrays:
        """A copy as another draw of the seed mean: each single-task training's row moves by its
        own noise (and every pair that starts from that state inherits the shift on its first
        task), each pair row by independent noise on top; SD = the seed mean's standard error."""
        se = self.noise_level() / math.sqrt(max(self.seeds, 1))
        n = len(self.tasks)
        shift = rng.normal(0.0, se, (n, n))  # shift[j, k]: on j after k alone
        base = np.clip(self.base + shift, 0.0, 1.0)
        pair = np.clip(self.pair + np.diag(shift)[:, None] + rng.normal(0.0, se, (n, n)), 0.0, 1.0)
        np.fill_diagonal(pair, np.diag(base))
        learned = np.clip(self.learned + rng.normal(0.0, se, (n, n)), 0.0, 1.0)
        return replace(self, base=base, pair=pair, learned=learned)

    def noise_level(self) -> float:
        return self.noise if math.isfinite(self.noise) and self.seeds >= 2 else DEFAULT_PAIR_NOISE

    def model(self, params: ModelParams) -> GraphModel:
        solo = np.diag(self.base).copy()
        return GraphModel.from_arrays(self.tasks, solo, self.base, self.pair, params, self.init)

    def precedence(self) -> np.ndarray | None:
        """D[a, b] = (mean accuracy on a and b after a then b) − (after b then a); None unmeasured."""
        if not np.isfinite(self.learned[~np.eye(len(self.tasks), dtype=bool)]).all():
            return None
        both = (self.pair + self.learned) / 2.0  # pair[a, b]: on a after a then b; learned[a, b]: on b
        d = both - both.T
        np.fill_diagonal(d, 0.0)
        return d


def is_penalty(strategy: str | None) -> bool:
    """A quadratic-penalty strategy: its unfitted graph model stiffens (κ > 0)."""
    return default_params(strategy).kappa > 0


def precedence_scores(d: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Σ over every pair (i before j in the ordering) of D[task_i, task_j]."""
    perms = np.atleast_2d(perms)
    n = perms.shape[1]
    out = np.zeros(len(perms))
    for i, j in itertools.combinations(range(n), 2):
        out += d[perms[:, i], perms[:, j]]
    return out


@dataclass(frozen=True)
class Ensemble:
    """The scorers of one reading of the evidence; :meth:`score` is their consensus."""

    models: tuple[GraphModel, ...]
    precedence: np.ndarray | None
    ref_perms: np.ndarray  # orderings that set each scorer's mean and spread

    @classmethod
    def build(
        cls, arrays: PairArrays, strategy: str | None, fitted: ModelParams | None = None, ref_perms=None
    ) -> Ensemble:
        if fitted is not None:
            models, prec = (arrays.model(fitted),), None
        else:
            kappas = PENALTY_KAPPAS if is_penalty(strategy) else PLAIN_KAPPAS
            models = tuple(arrays.model(ModelParams(alpha=a, kappa=k)) for a in ALPHAS for k in kappas)
            prec = arrays.precedence() if is_penalty(strategy) else None
        return cls(models, prec, reference_perms(len(arrays.tasks)) if ref_perms is None else ref_perms)

    def raw(self, perms: np.ndarray) -> list[np.ndarray]:
        out = [m.mean_final(perms) for m in self.models]
        if self.precedence is not None:
            out.append(precedence_scores(self.precedence, perms))
        return out

    def score(self, perms: np.ndarray) -> np.ndarray:
        ref = self.raw(self.ref_perms)
        total = np.zeros(len(np.atleast_2d(perms)))
        for r, v in zip(ref, self.raw(perms), strict=True):
            total += (v - r.mean()) / (r.std() or 1.0)
        return total / len(ref)


def reference_perms(n: int) -> np.ndarray:
    """Every ordering up to :data:`ENUMERATE_MAX` tasks; beyond, a fixed random sample."""
    if n <= ENUMERATE_MAX:
        return np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(-1, n)
    rng = np.random.default_rng(0)
    return np.array([rng.permutation(n) for _ in range(REFERENCE_SAMPLE)], dtype=np.int64)


@dataclass(frozen=True)
class ZeroShot:
    """The pick and what `lll affinity --recommend` says about it."""

    order: list[str]
    predicted: float  # the reference graph model's predicted ACC of the pick
    interval: tuple[float, float]  # 5th–95th percentile of that prediction over the perturbed copies
    stability: float  # share of perturbed copies whose top 10 % holds the pick
    noise: float  # per-seed SD of one pair value used (measured, or the default with one seed)
    noise_measured: bool
    seeds: int
    runners_up: list[tuple[list[str], float]]  # next best by consensus (order, reference prediction)
    how: str
    params: ModelParams  # the reference model's parameters

    @property
    def trusted(self) -> bool:
        return self.stability >= TRUST


def _best(ens: Ensemble, n: int, k: int, starts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best orderings by consensus (rows) and their scores."""
    if n <= ENUMERATE_MAX:
        perms = ens.ref_perms
        s = ens.score(perms)
        top = np.argsort(-s, kind="stable")[:k]
        return perms[top], s[top]
    from search.orders.moves import local_search

    found = local_search(ens.score, starts, k=k)
    return np.array([p for p, _ in found], dtype=np.int64), np.array([v for _, v in found])


def zero_shot_pick(
    g: nx.DiGraph,
    strategy: str | None = None,
    fitted: ModelParams | None = None,
    k: int = 3,
    draws: int = DRAWS,
    seed: int = 0,
) -> ZeroShot:
    """The consensus pick of the graph ``g`` (``strategy`` defaults to the graph's own), its
    runners-up, and its stability under the pair evidence's noise. ``fitted``: the graph model's
    parameters fitted to a study's trials, which then rank alone."""
    strategy = strategy or g.graph.get("strategy")
    arrays = PairArrays.from_graph(g)
    n = len(arrays.tasks)
    if n == 0:
        raise ValueError("an empty graph has no ordering")
    ens = Ensemble.build(arrays, strategy, fitted)
    rng = np.random.default_rng(seed)
    starts = list(ens.ref_perms[:4]) + [rng.permutation(n) for _ in range(4)]
    best, _ = _best(ens, n, max(1, k), starts)
    pick = best[0]
    ref_params = fitted or replace(default_params(strategy), alpha=1.0)
    reference = arrays.model(ref_params)
    predicted = float(reference.predict_perms(pick[None])[0])
    held, preds = 0, []
    cut = max(1, round(TOP_SHARE * len(ens.ref_perms)))
    for _ in range(draws):
        noisy = arrays.perturbed(rng)
        e2 = Ensemble.build(noisy, strategy, fitted, ens.ref_perms)
        s_ref = e2.score(ens.ref_perms)
        threshold = np.sort(s_ref)[::-1][cut - 1]
        held += int(e2.score(pick[None])[0] >= threshold)
        preds.append(float(noisy.model(ref_params).predict_perms(pick[None])[0]))
    lo, hi = np.percentile(preds, [5, 95]) if preds else (predicted, predicted)
    names = list(arrays.tasks)
    runners = [([names[i] for i in p], float(reference.predict_perms(p[None])[0])) for p in best[1:]]
    how = (
        f"graph model fitted to the study's trials ({ref_params.describe()})"
        if fitted is not None
        else f"consensus of {len(ens.models)} graph models"
        + (" and the pair precedence" if ens.precedence is not None else "")
        + (f", every ordering of {n} tasks scored" if n <= ENUMERATE_MAX else ", local search (heuristic)")
    )
    return ZeroShot(
        order=[names[i] for i in pick],
        predicted=predicted,
        interval=(float(lo), float(hi)),
        stability=held / draws if draws else 1.0,
        noise=arrays.noise_level(),
        noise_measured=arrays.seeds >= 2 and math.isfinite(arrays.noise),
        seeds=arrays.seeds,
        runners_up=runners,
        how=how,
        params=ref_params,
    )
