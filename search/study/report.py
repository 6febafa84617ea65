"""Study plots: the ACC/BWT Pareto front, the distribution of ACC over orderings, the search
history, and the recommended ordering's R matrix. Each plot is drawn from a plain-data function
(``*_data``), and `lll report` writes that data too (report.json), so what a plot shows can be
checked and re-plotted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from pipeline.rmatrix import RMatrix
from search.study.recommend import complete_trials, pareto_front, recommendation


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_data(study: optuna.Study) -> dict[str, Any]:
    """Per strategy, each complete trial's (number, BWT, ACC) in points; the front's trials by BWT."""
    trials = complete_trials(study)
    points = {
        s: [
            [t.number, t.user_attrs["bwt"] * 100, t.user_attrs["acc"] * 100]
            for t in trials
            if t.user_attrs["strategy"] == s
        ]
        for s in sorted({t.user_attrs["strategy"] for t in trials})
    }
    front = sorted(pareto_front(trials), key=lambda t: t.user_attrs["bwt"])
    return {
        "points": points,
        "front": [[t.number, t.user_attrs["bwt"] * 100, t.user_attrs["acc"] * 100] for t in front],
    }


def pareto_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    data = pareto_data(study)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for s, pts in data["points"].items():
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], label=s, alpha=0.6)
    ax.plot([p[1] for p in data["front"]], [p[2] for p in data["front"]], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("BWT (points; higher = less forgetting)")
    ax.set_ylabel("final ACC (%)")
    ax.set_title(f"{study.study_name}: {sum(len(p) for p in data['points'].values())} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def acc_distribution_data(study: optuna.Study, bins: int = 20) -> dict[str, Any]:
    """The histogram of ACC (points) over complete trials: 20 shared bins, the count per strategy."""
    trials = complete_trials(study)
    accs = [t.user_attrs["acc"] * 100 for t in trials]
    edges = np.histogram_bin_edges(accs, bins=bins) if accs else np.linspace(0, 100, bins + 1)
    counts = {
        s: np.histogram([t.user_attrs["acc"] * 100 for t in trials if t.user_attrs["strategy"] == s], edges)[0].tolist()
        for s in sorted({t.user_attrs["strategy"] for t in trials})
    }
    return {"edges": edges.tolist(), "counts": counts}


def acc_distribution_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    data = acc_distribution_data(study)
    fig, ax = plt.subplots(figsize=(6, 4))
    edges, bottom = np.array(data["edges"]), np.zeros(len(data["edges"]) - 1)
    for s, counts in data["counts"].items():  # stacked bars, one colour per strategy
        ax.bar(edges[:-1], counts, np.diff(edges), bottom=bottom, align="edge", label=s)
        bottom += counts
    ax.set_xlabel("final ACC (%) of an ordering")
    ax.set_ylabel("orderings")
    ax.set_title("How much the order matters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def history_data(study: optuna.Study) -> dict[str, Any]:
    """Complete trials by number: each one's ACC (points) and the best so far."""
    trials = sorted(complete_trials(study), key=lambda t: t.number)
    acc = np.array([t.user_attrs["acc"] * 100 for t in trials])
    best = np.maximum.accumulate(acc) if len(acc) else acc
    return {"trials": [t.number for t in trials], "acc": acc.tolist(), "best": best.tolist()}


def history_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    data = history_data(study)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(data["trials"], data["acc"], ".", alpha=0.5, label="trial ACC")
    ax.plot(data["trials"], data["best"], "r-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("final ACC (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def validation_plot(block: dict, path: Path) -> Path:
    """Held-out ACC of every validated ordering (top K and baselines), mean with its 95% CI."""
    plt = _plt()
    rows = block["orderings"]
    labels = [f"{r['role']}: {','.join(r['order'])}" for r in rows]
    means = [r["heldout_acc"]["mean"] * 100 for r in rows]
    lows = [m - r["heldout_acc"]["ci95"][0] * 100 for m, r in zip(means, rows, strict=True)]
    highs = [r["heldout_acc"]["ci95"][1] * 100 - m for m, r in zip(means, rows, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    colors = ["tab:red" if i == block["recommended"] else "tab:blue" for i in range(len(rows))]
    ax.errorbar(means, y, xerr=[lows, highs], fmt="none", ecolor="gray", capsize=3)
    ax.scatter(means, y, c=colors, zorder=3)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"held-out ACC (%), seeds {','.join(map(str, block['heldout_seeds']))}; bars: 95% CI")
    ax.set_title("validation (red: recommended)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(study: optuna.Study, out_dir: str | Path) -> list[Path]:
    """All plots of a study into ``out_dir``, and the data they show (report.json); returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [
        pareto_plot(study, out / "pareto.png"),
        acc_distribution_plot(study, out / "acc_distribution.png"),
        history_plot(study, out / "history.png"),
    ]
    rec = recommendation(study)
    best = next(
        t
        for t in complete_trials(study)
        if t.user_attrs["order"] == rec["order"] and t.user_attrs["strategy"] == rec["strategy"]
    )
    if rec.get("validation"):
        files.append(validation_plot(rec["validation"], out / "validation.png"))
    r = RMatrix(tuple(rec["order"]), best.user_attrs["R"])
    files.append(r.heatmap(out / "recommended_R.png", title=f"recommended: {rec['strategy']} (mean over seeds)"))
    data = {
        "pareto": pareto_data(study),
        "acc_distribution": acc_distribution_data(study),
        "history": history_data(study),
        "recommended_R": {
            "trial": best.number,
            "order": rec["order"],
            "strategy": rec["strategy"],
            "R": r.values.tolist(),
        },
    }
    (out / "report.json").write_text(json.dumps(data, indent=1))
    return [*files, out / "report.json"]
