"""The zero-shot pick: one ordering from the T² single-task and pair trainings alone, chosen to be
robust to the graph model's errors, with a predicted ACC, an interval and a verdict on the noise.

The graph model (``search/graph/model.py``) ranks orderings with real signal, but its top ordering
sits where it extrapolates furthest. Two choices make the pick robust (bench/graph_zero_shot.py
measured the alternatives on every ground truth, on pair trainings of seeds no truth uses):

* the score is the consensus — the mean of standardised scores — of an ensemble of scorers, each a
  reading of the same pair evidence: the graph model at α ∈ {0.5, 1, 2} and κ from the strategy's
  family (0 without a penalty; 0.5 and 1 for quadratic-penalty strategies, whose later trainings
  move the network less) and, for penalty strategies, the pair *precedence* score (every pair
  training says which of "a then b" and "b then a" ends better for the two tasks; an ordering
  scores the sum over the pairs it puts in that order — it carries EWC's first-task effect);
* the pick is built **position by position** (:func:`prefix_greedy`): the first task is the one
  whose orderings score best *on average*, then the second given the first, and so on. An average
  over every completion leans on the model's broad effects (which task comes first or last) and
  not on the one extreme ordering where its errors add up; the plain argmax ranked 195–3,412 of
  5,040 on fresh pair seeds, this 195–2,737 with 8 of 15 cases inside the top 10 % (against 1).

With a study's finished trials (≥ 6), the graph model fitted to them replaces the ensemble.

Noise: each pair value is a draw. With two or more seeds the graph knows the per-seed spread
(``pair_noise``); with one, :data:`DEFAULT_PAIR_NOISE`. The evidence is resampled :data:`DRAWS`
times (each value plus Gaussian noise of the seed mean's standard error). The **interval** is the
5th–95th percentile of every ensemble model's prediction of the pick over those copies: the pair
noise *and* the modelling choice (α, κ). From the noise alone it held the truth's ACC of the pick in
7 of 20 fresh-pair cases on the four 7-task truths (median width 5.6 points); with the models' spread,
in 20 of 20 (width 20 points) — wide, because the readings disagree that much. The spread of the
reference model's prediction over the copies, *relative to the spread of its predictions across all
orderings*, is the **noise ratio**: when the pair noise alone
moves the pick's prediction by more than :data:`TRUST_RATIO` of what separates orderings, the
ranking at the top is a lottery and a short search is the better use of the budget. Measured: ratio
0.13–0.33 at mixed-mnist-7's defaults (picks ranked 402–911, 5 of 6 in the top 10 %), 0.40–1.30 on
the cheap truths (picks 195–2,737, 5 of 16). The share of copies whose top 10 % still holds the
pick (*stability*) is reported too, but it was 0.75–1.0 for good and bad picks alike.

Model error: the noise ratio sees only the evidence's noise. On the EWC defaults truth the pairs
agreed across seeds (ratio 0.15–0.18) and the pick still ranked 1,085: the readings disagreed — two
of the ensemble's scorers ranked the 5,040 orderings at Spearman ρ −0.09 to 0.08. The **agreement**
(the least ρ between two scorers) is the second condition: below :data:`AGREEMENT_MIN` the answer
depends on a modelling choice the evidence cannot settle, and the pick is not trusted. Measured
(fresh pair seeds): 0.82–0.86 where the pick was in the top 10 % (naive defaults), −0.09–0.08 on EWC
defaults, 0.21–0.63 on EWC cheap, 0.66–0.79 on naive cheap (both already "too noisy").
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
TRUST_RATIO = 1 / 3  # pick's prediction SD over noisy copies / prediction SD across orderings
AGREEMENT_MIN = 0.5  # the least Spearman ρ between two scorers' rankings that still trusts the pick
TOP_SHARE = 0.10
ENUMERATE_MAX = 8  # up to this many tasks every ordering is scored; beyond, sampled (runners-up: local search)
REFERENCE_SAMPLE = 4096  # orderings that set each scorer's mean and spread beyond ENUMERATE_MAX
COMPLETIONS = 256  # random completions per candidate task in prefix_greedy beyond ENUMERATE_MAX


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

    def agreement(self) -> float:
        """The least Spearman ρ between two scorers' rankings of the reference orderings (1.0 with
        one scorer): how far equally plausible readings of the same evidence disagree."""
        from scipy.stats import spearmanr

        raw = [r for r in self.raw(self.ref_perms) if np.ptp(r) > 0]  # a constant scorer ranks nothing
        if len(raw) < 2:
            return 1.0 if raw else math.nan
        return float(min(spearmanr(a, b)[0] for a, b in itertools.combinations(raw, 2)))

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
    interval: tuple[float, float]  # 5th–95th percentile of every ensemble model's prediction over the copies
    stability: float  # share of perturbed copies whose top 10 % holds the pick
    noise_ratio: float  # SD of the pick's prediction over the copies / SD of predictions across orderings
    agreement: float  # least Spearman ρ between two scorers of the ensemble (Ensemble.agreement)
    noise: float  # per-seed SD of one pair value used (measured, or the default with one seed)
    noise_measured: bool
    seeds: int
    runners_up: list[tuple[list[str], float]]  # next best by consensus (order, reference prediction)
    how: str
    params: ModelParams  # the reference model's parameters

    @property
    def trusted(self) -> bool:
        """Neither the pair noise (noise ratio) nor the model (its readings' agreement) unsettles it."""
        return self.noise_ratio <= TRUST_RATIO and self.agreement >= AGREEMENT_MIN


def prefix_greedy(
    score, n: int, ref_perms: np.ndarray, rng: np.random.Generator, samples: int = COMPLETIONS
) -> np.ndarray:
    """The ordering built position by position: at each position the task whose orderings (with the
    prefix fixed so far) have the highest *mean* ``score``. Up to :data:`ENUMERATE_MAX` tasks the
    mean is over every completion (``ref_perms`` holds every ordering); beyond, over ``samples``
    random completions per candidate task. Ties go to the lower task index."""
    if n <= ENUMERATE_MAX:
        s = score(ref_perms)
        mask = np.ones(len(ref_perms), dtype=bool)
        for pos in range(n):
            col = ref_perms[:, pos]
            means = [(s[mask & (col == k)].mean(), -k) for k in np.unique(col[mask])]
            k = -max(means)[1]
            mask &= col == k
        return ref_perms[np.flatnonzero(mask)[0]].copy()
    prefix: list[int] = []
    for _ in range(n):
        left = np.array([k for k in range(n) if k not in prefix], dtype=np.int64)
        shuffles = np.array([rng.permutation(left) for _ in range(samples)], dtype=np.int64)
        best, best_v = int(left[0]), -math.inf
        for k in left:  # common random completions: each candidate's tails are the same shuffles without it
            tails = shuffles[shuffles != k].reshape(samples, -1)
            perms = np.hstack([np.tile([*prefix, int(k)], (samples, 1)), tails])
            v = float(score(perms).mean())
            if v > best_v:
                best, best_v = int(k), v
        prefix.append(best)
    return np.array(prefix, dtype=np.int64)


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
    """The pick of the graph ``g`` (``strategy`` defaults to the graph's own): the consensus built
    position by position, its runners-up (next best by consensus), and what the pair evidence's
    noise does to it. ``fitted``: the graph model's parameters fitted to a study's trials, which
    then rank alone and the pick is that model's best ordering."""
    strategy = strategy or g.graph.get("strategy")
    arrays = PairArrays.from_graph(g)
    n = len(arrays.tasks)
    if n == 0:
        raise ValueError("an empty graph has no ordering")
    ens = Ensemble.build(arrays, strategy, fitted)
    rng = np.random.default_rng(seed)
    built = prefix_greedy(ens.score, n, ens.ref_perms, rng) if fitted is None else None
    starts = ([] if built is None else [built]) + list(ens.ref_perms[:3]) + [rng.permutation(n) for _ in range(4)]
    best, _ = _best(ens, n, max(1, k) + 1, starts)
    pick = best[0] if built is None else built
    best = np.array([p for p in best if not np.array_equal(p, pick)][: max(0, k - 1)], dtype=np.int64)
    ref_params = fitted or replace(default_params(strategy), alpha=1.0)
    reference = arrays.model(ref_params)
    predicted = float(reference.predict_perms(pick[None])[0])
    spread = float(reference.predict_perms(ens.ref_perms).std())
    held, preds = 0, []
    spread_of_models = [float(m.predict_perms(pick[None])[0]) for m in ens.models]  # the modelling choice
    cut = max(1, round(TOP_SHARE * len(ens.ref_perms)))
    for _ in range(draws):
        noisy = arrays.perturbed(rng)
        e2 = Ensemble.build(noisy, strategy, fitted, ens.ref_perms)
        s_ref = e2.score(ens.ref_perms)
        threshold = np.sort(s_ref)[::-1][cut - 1]
        held += int(e2.score(pick[None])[0] >= threshold)
        preds.append(float(noisy.model(ref_params).predict_perms(pick[None])[0]))
        spread_of_models += [float(m.predict_perms(pick[None])[0]) for m in e2.models]
    lo, hi = np.percentile([predicted, *spread_of_models], [5, 95])
    ratio = float(np.std(preds)) / max(spread, 1e-12) if preds else 0.0  # no copies: not measured
    names = list(arrays.tasks)
    runners = [([names[i] for i in p], float(reference.predict_perms(p[None])[0])) for p in best]
    how = (
        f"graph model fitted to the study's trials ({ref_params.describe()})"
        if fitted is not None
        else f"consensus of {len(ens.models)} graph models"
        + (" and the pair precedence" if ens.precedence is not None else "")
        + ", built position by position (best mean over completions"
        + (f", every ordering of {n} tasks scored)" if n <= ENUMERATE_MAX else f", {COMPLETIONS} sampled per step)")
    )
    return ZeroShot(
        order=[names[i] for i in pick],
        predicted=predicted,
        interval=(float(lo), float(hi)),
        stability=held / draws if draws else 1.0,
        noise_ratio=ratio,
        agreement=ens.agreement(),
        noise=arrays.noise_level(),
        noise_measured=arrays.seeds >= 2 and math.isfinite(arrays.noise),
        seeds=arrays.seeds,
        runners_up=runners,
        how=how,
        params=ref_params,
    )
