"""A Gaussian process over task orderings (BOPS-style, Deshwal et al., AAAI 2022) and its
expected improvement.

Kernel, on orderings a and b of T tasks (P = T(T−1)/2 pairs):

    k(a, b) = (1 − w) · exp(−ℓ · n_d(a, b) / P) + w · (½[first_a = first_b] + ½ Σ_p v_p [a_p = b_p])
              + g · z(a) z(b)

``n_d`` is the number of discordant pairs (Kendall distance, from the ±1 precedence features:
n_d = (P − x_a·x_b)/2), so the first term is the Mallows kernel; the second lets the first task and
the tail matter on their own — v_p weights position p by 2^−(T−p), normalised, so the last task
counts half, the one before it a quarter, ... (a continual learner's final accuracy depends most on
what comes last; this tail term beat first/last-only, 24 vs 31 median trials on 15 seeds of
bench/search_at_scale.py);
the third, present when an affinity graph exists, is a linear kernel on the graph model's
standardised prediction z (``search/graph/model.py``), so the GP learns how far to trust it.
Hyper-parameters (ℓ, w, g, noise) maximise the log marginal likelihood over a small grid; targets
are standardised. Deterministic: no randomness anywhere.

Noise (issue 19): an ordering's value is a seed mean, and ``noise`` is the variance of ONE seed's
value (standardised units), so an ordering seen on n seeds enters with variance noise/n — one seed is
not trusted like four. When orderings have several seeds, their spread about their own mean (the
within-ordering sum of squares, after per-seed offsets: ``search/propose/observations.py``) is
evidence about the noise too and enters the likelihood, exactly as fitting every seed's value would.
Predictions are of the latent seed-mean value f (no noise added), so the incumbent is the best
posterior mean rather than the luckiest observation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import ndtr

from search.orders.moves import precedence

LENGTHS = (0.5, 2.0, 6.0)
ENDS = (0.0, 0.3)
GRAPH = (0.0, 1.0)
NOISES = (0.01, 0.05, 0.15, 0.3, 0.5, 0.8)  # one seed's noise variance (standardised)
NOISES_BEFORE = (0.01, 0.1, 0.4)  # the grid before issue 19 (``noise_aware=False`` reproduces that sampler)


@dataclass
class Encoded:
    """What the kernel needs of a batch of orderings."""

    prec: np.ndarray  # (m, P) ±1
    first: np.ndarray  # (m,)
    last: np.ndarray  # (m,)
    graph: np.ndarray  # (m,) standardised graph prediction (zeros without a graph)
    perm: np.ndarray  # (m, T) the orderings themselves


class _TailWeights(dict):
    def __missing__(self, t: int) -> np.ndarray:
        w = 0.5 ** np.arange(t, 0, -1, dtype=np.float64)
        self[t] = w / w.sum()
        return self[t]


TAIL_W = _TailWeights()


def encode(perms: np.ndarray, graph: np.ndarray | None = None) -> Encoded:
    perms = np.atleast_2d(perms)
    g = np.zeros(len(perms)) if graph is None else np.asarray(graph, dtype=np.float64)
    return Encoded(precedence(perms), perms[:, 0].copy(), perms[:, -1].copy(), g, perms.copy())


@dataclass(frozen=True)
class Hyper:
    length: float
    ends: float
    graph: float
    noise: float


def kernel_parts(a: Encoded, b: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the kernel combines, independent of the hyper-parameters: (n_d / P, ends, graph product)."""
    p = a.prec.shape[1]
    nd = (p - a.prec @ b.prec.T) / (2.0 * p) if p else np.zeros((len(a.first), len(b.first)))
    # first task, and the tail: positions weighted 1/2, 1/4, ... from the last one back, as products
    # of one-hot (position, task) codes: [a_p = b_p] summed over p is a matrix product
    t = a.perm.shape[1]
    oa, ob = _onehot(a.perm), _onehot(b.perm)
    first = oa[:, :t] @ ob[:, :t].T
    tail = (oa * np.repeat(TAIL_W[t], t)) @ ob.T
    return nd, 0.5 * first + 0.5 * tail, np.outer(a.graph, b.graph)


def _onehot(perm: np.ndarray) -> np.ndarray:
    """(m, T·T) with a 1 at position·T + task."""
    m, t = perm.shape
    out = np.zeros((m, t * t))
    out[np.arange(m)[:, None], np.arange(t)[None, :] * t + perm] = 1.0
    return out


def combine(parts: tuple[np.ndarray, np.ndarray, np.ndarray], h: Hyper) -> np.ndarray:
    nd, ends, graph = parts
    return (1.0 - h.ends) * np.exp(-h.length * nd) + h.ends * ends + h.graph * graph


def kernel(a: Encoded, b: Encoded, h: Hyper) -> np.ndarray:
    return combine(kernel_parts(a, b), h)


class PermutationGP:
    """Fit on (encoded orderings, seed-mean values); predict the latent mean's posterior mean and
    standard deviation in value units.

    ``counts``: seeds behind each value (default 1); ``within``: (sum of squared deviations of single
    seeds about their ordering's mean, its degrees of freedom), in value units."""

    def __init__(
        self,
        x: Encoded,
        y: np.ndarray,
        hyper: Hyper | None = None,
        use_graph: bool = False,
        counts: np.ndarray | None = None,
        within: tuple[float, int] = (0.0, 0),
        noises: tuple[float, ...] = NOISES,
    ) -> None:
        self.x = x
        y = np.asarray(y, dtype=np.float64)
        self.mu, self.sd = float(y.mean()), float(y.std()) or 1.0
        self.z = (y - self.mu) / self.sd
        self.counts = np.ones(len(y)) if counts is None else np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
        self.within = (float(within[0]) / self.sd**2, int(within[1]))
        grid = [Hyper(*h) for h in itertools.product(LENGTHS, ENDS, GRAPH if use_graph else (0.0,), noises)]
        self._parts = kernel_parts(x, x)  # once per fit: the grid only recombines them
        self.hyper = hyper or max(grid, key=self.log_marginal)
        self._factor()

    @property
    def noise_sd(self) -> float:
        """One seed's noise standard deviation, in value units (what the GP learned)."""
        return float(np.sqrt(self.hyper.noise) * self.sd)

    def log_marginal(self, h: Hyper) -> float:
        k = combine(self._parts, h) + np.diag(h.noise / self.counts)
        try:
            c = cho_factor(k, lower=True)
        except np.linalg.LinAlgError:
            return -np.inf
        alpha = cho_solve(c, self.z)
        ss, dof = self.within  # the seeds' spread about their own means: evidence about the noise alone
        return float(-0.5 * self.z @ alpha - np.log(np.diag(c[0])).sum() - 0.5 * (ss / h.noise + dof * np.log(h.noise)))

    def _factor(self) -> None:
        h = self.hyper
        parts = self._parts
        k = (combine(parts, h) if parts is not None else kernel(self.x, self.x, h)) + np.diag(
            h.noise / self.counts + 1e-9
        )
        c = cho_factor(k, lower=True)
        self._alpha = cho_solve(c, self.z)
        self._kinv = cho_solve(c, np.eye(len(self.z)))  # once per fit: predictions need no solve

    def predict(self, x: Encoded) -> tuple[np.ndarray, np.ndarray]:
        ks = kernel(x, self.x, self.hyper)
        mean = ks @ self._alpha
        prior = 1.0 + self.hyper.graph * x.graph**2
        var = np.maximum(prior - ((ks @ self._kinv) * ks).sum(axis=1), 1e-12)
        return self.mu + self.sd * mean, self.sd * np.sqrt(var)

    def with_data(self, x: Encoded, y: np.ndarray, counts: np.ndarray | None = None) -> PermutationGP:
        """The same hyper-parameters on other data (the constant liar's refit)."""
        gp = PermutationGP.__new__(PermutationGP)
        gp.x, gp.hyper, gp._parts = x, self.hyper, None
        gp.mu, gp.sd, gp.within = self.mu, self.sd, self.within
        gp.z = (np.asarray(y, dtype=np.float64) - self.mu) / self.sd
        gp.counts = np.ones(len(gp.z)) if counts is None else np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
        gp._factor()
        return gp


def concat(a: Encoded, b: Encoded) -> Encoded:
    return Encoded(
        np.concatenate([a.prec, b.prec]),
        np.concatenate([a.first, b.first]),
        np.concatenate([a.last, b.last]),
        np.concatenate([a.graph, b.graph]),
        np.concatenate([a.perm, b.perm]),
    )


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    z = (mean - best - xi) / std
    return (mean - best - xi) * ndtr(z) + std * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
