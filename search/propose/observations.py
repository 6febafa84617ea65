"""An ordering's value is a distribution over seeds: per-seed results → seed-adjusted means.

A training seed moves every ordering together (the same initialisation and data order for every
prefix: on the cheap 7-task truth seed 1 is 2 points below seed 0 for all 5,040 orderings), and
strategies differ by several points. So the value of ordering o on block b (a strategy and seed) is
modelled as y[o, b] = m[o] + c[b] + ε, fitted by alternating least squares. An ordering evaluated
only on a bad seed is then not mistaken for a bad ordering, and its seed mean compares fairly with
one seen on other seeds. With one block the means are the raw values, untouched. Blocks that share
no ordering cannot be compared: each keeps its own centring (its mean, as before issue 19).

The residual sum of squares estimates one seed's noise (ε), the paired evidence the racing test
(``search/propose/intensify.py``) and the GP's noise term (``search/propose/gp.py``) use.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

Order = tuple[str, ...]


@dataclass
class Observations:
    """Seed-adjusted values of every ordering."""

    orders: list[Order]
    mean: np.ndarray  # m[o]: seed-adjusted mean
    count: np.ndarray  # number of blocks (seeds) behind it
    offsets: dict[Hashable, float]  # c[b]
    ss_within: float  # residual sum of squares of the additive fit
    dof_within: int  # its degrees of freedom

    @property
    def noise_sd(self) -> float | None:
        """One seed's noise standard deviation, or None when no ordering has a second seed."""
        return float(np.sqrt(self.ss_within / self.dof_within)) if self.dof_within > 0 else None

    def as_dict(self) -> dict[Order, float]:
        return {o: float(v) for o, v in zip(self.orders, self.mean, strict=True)}


def fit_additive(values: Mapping[Order, Mapping[Hashable, float]], iters: int = 200) -> Observations:
    """y[o, b] = m[o] + c[b] by alternating least squares; c is centred to count-weighted mean 0."""
    orders = [o for o in values if values[o]]
    blocks = sorted({b for o in orders for b in values[o]}, key=repr)
    bi = {b: j for j, b in enumerate(blocks)}
    rows = np.array([i for i, o in enumerate(orders) for _ in values[o]], dtype=np.int64)
    cols = np.array([bi[b] for o in orders for b in values[o]], dtype=np.int64)
    y = np.array([float(v) for o in orders for v in values[o].values()], dtype=np.float64)
    n_o = np.bincount(rows, minlength=len(orders)).astype(np.float64)
    n_b = np.bincount(cols, minlength=len(blocks)).astype(np.float64)
    if len(blocks) <= 1:
        c = np.zeros(len(blocks))
    else:  # start from each block's own centring (what disconnected blocks keep)
        c = np.bincount(cols, y, len(blocks)) / n_b
        c -= (c * n_b).sum() / n_b.sum()
    m = np.bincount(rows, y - c[cols], len(orders)) / n_o
    for _ in range(iters if len(blocks) > 1 else 0):
        c_new = np.bincount(cols, y - m[rows], len(blocks)) / n_b
        c_new -= (c_new * n_b).sum() / n_b.sum()
        m = np.bincount(rows, y - c_new[cols], len(orders)) / n_o
        done = np.abs(c_new - c).max() < 1e-12
        c = c_new
        if done:
            break
    resid = y - m[rows] - c[cols]
    dof = max(len(y) - len(orders) - max(len(blocks) - 1, 0), 0)
    return Observations(orders, m, n_o, {b: float(c[bi[b]]) for b in blocks}, float(resid @ resid), dof)
