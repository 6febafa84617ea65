"""The accuracy matrix R and the metrics computed from it. One implementation, used everywhere.

R has T+1 rows and T columns: row 0 is the random initialisation, row i is after training the
i-th task of the ordering, column j is the test accuracy on the j-th task of the ordering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RMatrix:
    tasks: tuple[str, ...]
    values: np.ndarray  # shape (T+1, T), accuracies in [0, 1]

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64)
        t = len(self.tasks)
        if v.shape != (t + 1, t):
            raise ValueError(f"R must be {(t + 1, t)} for {t} tasks, got {v.shape}")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "tasks", tuple(self.tasks))

    @classmethod
    def from_rows(cls, order: tuple[str, ...] | list[str], rows: list[dict[str, float]]) -> RMatrix:
        """R of the first ``len(rows) - 1`` tasks of ``order`` from accuracy rows (row i = accuracy on
        every pool task after i tasks, as workers return them). The one place R is built from rows."""
        names = tuple(order[: len(rows) - 1])
        return cls(names, [[row[n] for n in names] for row in rows])

    @classmethod
    def mean(cls, rmats: list[RMatrix]) -> RMatrix:
        """The entry-wise mean of R matrices of the same ordering (e.g. over seeds)."""
        return cls(rmats[0].tasks, np.mean([r.values for r in rmats], axis=0))

    @property
    def T(self) -> int:
        return len(self.tasks)

    def acc(self) -> float:
        """Average accuracy over all tasks after the last one: mean_j R[T][j]."""
        return float(self.values[self.T].mean())

    def bwt(self) -> float:
        """Backward transfer: mean_{j<T} (R[T][j] − R[j][j]); negative means forgetting."""
        if self.T < 2:
            return 0.0
        j = np.arange(self.T - 1)
        return float((self.values[self.T, j] - self.values[j + 1, j]).mean())

    def fwt(self) -> float:
        """Forward transfer: mean_{j≥2} (R[j−1][j] − R[0][j]) — accuracy on a task before training
        it, relative to the random initialisation."""
        if self.T < 2:
            return 0.0
        j = np.arange(1, self.T)
        return float((self.values[j, j] - self.values[0, j]).mean())

    def forgetting(self) -> float:
        """Mean over j<T of the best accuracy ever reached on task j minus its final accuracy."""
        if self.T < 2:
            return 0.0
        drops = [self.values[j + 1 : self.T, j].max() - self.values[self.T, j] for j in range(self.T - 1)]
        return float(np.mean(drops))

    def metrics(self) -> dict[str, float]:
        return {"acc": self.acc(), "bwt": self.bwt(), "fwt": self.fwt(), "forgetting": self.forgetting()}

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"tasks": list(self.tasks), "R": self.values.tolist(), **self.metrics()}

    @classmethod
    def from_dict(cls, d: dict) -> RMatrix:
        return cls(tuple(d["tasks"]), np.asarray(d["R"], dtype=np.float64))

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> RMatrix:
        p = Path(text_or_path)
        text = p.read_text() if not str(text_or_path).lstrip().startswith("{") else str(text_or_path)
        return cls.from_dict(json.loads(text))

    # ---- display -----------------------------------------------------------------------------
    def row_labels(self) -> list[str]:
        return ["init", *[f"after {t}" for t in self.tasks]]

    def title(self) -> str:
        m = self.metrics()
        return f"ACC {m['acc'] * 100:.1f}  BWT {m['bwt'] * 100:+.1f}  FWT {m['fwt'] * 100:+.1f}"

    def heatmap_fast(self, path: str | Path, title: str | None = None) -> Path:
        """The same heatmap drawn with Pillow in milliseconds (pipeline/heatmap.py): every recorded run's R.png."""
        Path(path).write_bytes(self.heatmap_bytes(title))
        return Path(path)

    def heatmap_bytes(self, title: str | None = None) -> bytes:
        """:meth:`heatmap_fast`'s PNG in memory (what a recorded run's R.png holds)."""
        from pipeline.heatmap import heatmap_png

        return heatmap_png(self.values, self.row_labels(), [f"test {n}" for n in self.tasks], title or self.title())

    def heatmap(self, path: str | Path, title: str | None = None) -> Path:
        """Write R as an annotated heatmap PNG (matplotlib: reports).

        Drawn on a bare ``Figure`` (no pyplot state) with fixed margins instead of tight_layout:
        a search draws one per trial in its driver loop, and the layout pass was half the cost."""
        from matplotlib.figure import Figure

        t = self.T
        labels = self.row_labels()
        left = 0.4 + 0.075 * max(len(label) for label in labels)  # inches: ~0.075 per 10-pt character
        bottom = 0.45 + 0.04 * max(len(f"test {n}") for n in self.tasks)  # column labels turned 30°
        width, height = left + 1.7 + 1.0 * t, bottom + 0.6 + 0.8 * (t + 1)
        fig = Figure(figsize=(width, height))
        # Room in inches for the row labels (left), the rotated column labels (bottom), the title
        # (top) and the colour bar (right), whatever the size of the matrix.
        fig.subplots_adjust(left=left / width, right=1 - 0.6 / width, bottom=bottom / height, top=1 - 0.45 / height)
        ax = fig.add_subplot()
        im = ax.imshow(self.values * 100, vmin=0, vmax=100, cmap="viridis")
        ax.set_xticks(range(t), [f"test {n}" for n in self.tasks], rotation=30, ha="right")
        ax.set_yticks(range(t + 1), labels)
        for i in range(t + 1):
            for j in range(t):
                v = self.values[i, j] * 100
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black")
        ax.set_title(title or self.title())
        fig.colorbar(im, ax=ax, label="accuracy (%)")
        fig.savefig(path, dpi=100)
        return Path(path)
