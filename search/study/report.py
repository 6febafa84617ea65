"""Study plots: the ACC/BWT Pareto front, the distribution of ACC over orderings, the search
history, and the recommended ordering's R matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna

from pipeline.rmatrix import RMatrix
from search.study.recommend import complete_trials, pareto_front, recommendation


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    trials = complete_trials(study)
    front = pareto_front(trials)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    strategies = sorted({t.user_attrs["strategy"] for t in trials})
    for s in strategies:
        ts = [t for t in trials if t.user_attrs["strategy"] == s]
        ax.scatter([t.user_attrs["bwt"] * 100 for t in ts], [t.user_attrs["acc"] * 100 for t in ts], label=s, alpha=0.6)
    fx = [t.user_attrs["bwt"] * 100 for t in sorted(front, key=lambda t: t.user_attrs["bwt"])]
    fy = [t.user_attrs["acc"] * 100 for t in sorted(front, key=lambda t: t.user_attrs["bwt"])]
    ax.plot(fx, fy, "k--", lw=1, label="Pareto front")
    ax.set_xlabel("BWT (points; higher = less forgetting)")
    ax.set_ylabel("final ACC (%)")
    ax.set_title(f"{study.study_name}: {len(trials)} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def acc_distribution_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    trials = complete_trials(study)
    fig, ax = plt.subplots(figsize=(6, 4))
    strategies = sorted({t.user_attrs["strategy"] for t in trials})
    data = [[t.user_attrs["acc"] * 100 for t in trials if t.user_attrs["strategy"] == s] for s in strategies]
    ax.hist(data, bins=20, label=strategies, stacked=True)
    ax.set_xlabel("final ACC (%) of an ordering")
    ax.set_ylabel("orderings")
    ax.set_title("How much the order matters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def history_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    trials = sorted(complete_trials(study), key=lambda t: t.number)
    acc = np.array([t.user_attrs["acc"] * 100 for t in trials])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([t.number for t in trials], acc, ".", alpha=0.5, label="trial ACC")
    ax.plot([t.number for t in trials], np.maximum.accumulate(acc), "r-", label="best so far")
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
    """All plots of a study into ``out_dir``; returns the files written."""
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
    return files
