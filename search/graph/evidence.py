"""Evidence for the task-affinity graph: sums, counts and sums of squares per task and ordered pair.

Two kinds, kept apart because they answer slightly different questions:

* **measured** — controlled runs from the same random initialisation (``search/study/affinity_runs.py``):
  the single-task ordering ``[a]`` gives ``transfer(a→b) = R(after a, on b) − R(init, on b)`` for
  every other pool task b; the pair ``[a, b]`` gives ``interference(a, b) = R(after a, on a) −
  R(after a then b, on a)``, the drop on a caused by training b next, and ``learned(a, b) =
  R(after a then b, on b)``, how well b is learned right after a.
* **harvested** — what a study's finished trials saw anyway (each ordering once, at its latest
  record when re-evaluation recorded it several times): the forward-transfer entry
  ``R[i−1][i] − R[0][i]`` and the forgetting entry ``R[i][i] − R[i+1][i]`` of every consecutive pair
  of its orderings. Free, but observational (the model had been trained on a whole prefix).

Each seed adds one observation per key, so a :class:`Tally` knows the per-seed spread as well as
the mean; tallies merge exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, float]
PAIR_KINDS = ("transfer", "interference", "learned")
TASK_KINDS = ("solo", "init")


@dataclass
class Tally:
    """A running mean kept as sum, count and sum of squares, so tallies merge exactly and know
    their spread."""

    total: float = 0.0
    n: int = 0
    sq: float = 0.0

    def add(self, value: float, count: int = 1) -> None:
        self.total += float(value) * count
        self.sq += float(value) ** 2 * count
        self.n += count

    def merge(self, other: Tally) -> None:
        self.total += other.total
        self.n += other.n
        self.sq += other.sq

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation of the observations (NaN below two)."""
        if self.n < 2:
            return math.nan
        var = (self.sq - self.total**2 / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))


@dataclass
class Evidence:
    """Observations of one kind (measured or harvested), per task and per ordered pair."""

    transfer: dict[tuple[str, str], Tally] = field(default_factory=dict)
    interference: dict[tuple[str, str], Tally] = field(default_factory=dict)
    learned: dict[tuple[str, str], Tally] = field(default_factory=dict)  # R(after a then b, on b)
    solo: dict[str, Tally] = field(default_factory=dict)  # R(after a, on a)
    init: dict[str, Tally] = field(default_factory=dict)  # R(random init, on a)

    def add(self, kind: str, key: Any, value: float, count: int = 1) -> None:
        if not math.isfinite(value):
            return
        getattr(self, kind).setdefault(key, Tally()).add(value, count)

    def update(self, other: Evidence) -> None:
        """Add ``other``'s sums and counts to this one (in place)."""
        for kind in PAIR_KINDS + TASK_KINDS:
            for key, t in getattr(other, kind).items():
                getattr(self, kind).setdefault(key, Tally()).merge(t)

    def merge(self, other: Evidence) -> Evidence:
        """A new Evidence holding both (sums and counts added)."""
        out = Evidence()
        out.update(self)
        out.update(other)
        return out

    def tasks(self) -> set[str]:
        names = set(self.solo) | set(self.init)
        for kind in PAIR_KINDS:
            for a, b in getattr(self, kind):
                names.update((a, b))
        return names

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for kind in PAIR_KINDS:
            out[kind] = [[a, b, t.total, t.n, t.sq] for (a, b), t in sorted(getattr(self, kind).items())]
        for kind in TASK_KINDS:
            out[kind] = [[a, t.total, t.n, t.sq] for a, t in sorted(getattr(self, kind).items())]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> Evidence:
        """Inverse of :meth:`to_dict`; entries written before the sum of squares was kept read as
        sq = n·mean² (no spread)."""

        def tally(total: float, n: int, *sq: float) -> Tally:
            total, n = float(total), int(n)
            return Tally(total, n, float(sq[0]) if sq else (total * total / n if n else 0.0))

        ev = cls()
        for kind in PAIR_KINDS:
            for a, b, *rest in d.get(kind, []):
                getattr(ev, kind)[(a, b)] = tally(*rest)
        for kind in TASK_KINDS:
            for a, *rest in d.get(kind, []):
                getattr(ev, kind)[a] = tally(*rest)
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
        if b in row:
            ev.add("learned", (a, b), row[b])
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
    """The complete trials (of ``strategy``) with an R, each ordering once at its latest record
    (search/study/records.py): a re-evaluated ordering has one record per seed count, and only the
    one with the most seeds is its value. Without re-evaluation: every complete trial."""
    from optuna.trial import TrialState

    from search.study.records import latest_trials

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if strategy is not None:
        complete = [t for t in complete if t.user_attrs.get("strategy") == strategy]
    return [t for t in latest_trials(complete) if "R" in t.user_attrs and "order" in t.user_attrs]


def harvest_trials(trials: Iterable[Any], strategy: str | None = None) -> Evidence:
    """Evidence from a study's complete trials (FrozenTrials with user attrs ``order`` and ``R``),
    each ordering once, at its latest record (the mean R over its most seeds). ``strategy``: only
    trials of this strategy — interference depends on it, so a graph describes one (pool,
    strategy); None takes every trial."""
    ev = Evidence()
    for t in _complete(trials, strategy):
        ev.update(evidence_from_r(t.user_attrs["order"], t.user_attrs["R"]))
    return ev


def trial_outcomes(
    trials: Iterable[Any], strategy: str | None = None, metric: str = "acc"
) -> list[tuple[list[str], float]]:
    """(ordering, metric) of the complete trials (of ``strategy``), each ordering once at its latest
    record: what the graph model is fitted to."""
    return [
        (list(t.user_attrs["order"]), float(t.user_attrs[metric]))
        for t in _complete(trials, strategy)
        if metric in t.user_attrs
    ]
