"""Study plots: the ACC/BWT Pareto front, the distribution of ACC over orderings, the search
history, and the recommended ordering's R matrix. Each plot is drawn from a plain-data function
(``*_data``), and `lll report` writes that data too (report.json), so what a plot shows can be
checked and re-plotted.

A point is an ordering (with its strategy and λ) at its latest record (search/study/records.py):
a re-evaluated ordering is shown once, with the mean over all its seeds and its seed count, at the
trial that recorded it; its superseded fewer-seed records are not shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from pipeline.rmatrix import RMatrix
from search.study.recommend import complete_trials, pareto_front, recommendation
from search.study.records import latest_trials, n_seeds, record_key, reevaluated
from search.study.storage import study_settings


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shown_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The points of every plot: each ordering's latest complete record."""
    return latest_trials(complete_trials(study))


def records_data(study: optuna.Study) -> dict[str, Any]:
    """What the points stand for: orderings shown, complete records, how many orderings were
    re-evaluated (more seeds than the search starts with) and the most seeds any has."""
    every = complete_trials(study)
    shown = latest_trials(every)
    start = study_settings(study).seeds
    return {
        "orderings": len(shown),
        "records": len(every),
        "start_seeds": start,
        "reevaluated": reevaluated(shown, start),
        "max_seeds": max((n_seeds(t) for t in shown), default=0),
    }


def records_line(data: dict[str, Any]) -> str:
    """One line saying what the plots' points are."""
    line = f"{data['orderings']} orderings from {data['records']} complete trials"
    if data["reevaluated"]:
        line += (
            f"; {data['reevaluated']} re-evaluated (up to {data['max_seeds']} seeds): "
            "each shown once, at its latest record (mean over all its seeds)"
        )
    return line


def _point(t: FrozenTrial) -> list:
    return [t.number, t.user_attrs["bwt"] * 100, t.user_attrs["acc"] * 100, n_seeds(t)]


def pareto_data(study: optuna.Study) -> dict[str, Any]:
    """Per strategy, each ordering's (trial number, BWT, ACC in points, seeds) at its latest record;
    the front's points by BWT."""
    trials = shown_trials(study)
    points = {
        s: [_point(t) for t in trials if t.user_attrs["strategy"] == s]
        for s in sorted({t.user_attrs["strategy"] for t in trials})
    }
    front = sorted(pareto_front(trials), key=lambda t: t.user_attrs["bwt"])
    return {"points": points, "front": [_point(t) for t in front]}


def pareto_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    data = pareto_data(study)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for s, pts in data["points"].items():
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], label=s, alpha=0.6)
    ax.plot([p[1] for p in data["front"]], [p[2] for p in data["front"]], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("BWT (points; higher = less forgetting)")
    ax.set_ylabel("final ACC (%)")
    ax.set_title(f"{study.study_name}: {_count(study)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _count(study: optuna.Study) -> str:
    data = records_data(study)
    again = f", {data['reevaluated']} re-evaluated" if data["reevaluated"] else ""
    return f"{data['orderings']} orderings{again}"


def acc_distribution_data(study: optuna.Study, bins: int = 20) -> dict[str, Any]:
    """The histogram of ACC (points) over orderings (latest records): 20 shared bins, the count
    per strategy."""
    trials = shown_trials(study)
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
    """Orderings by the trial of their latest record: each one's ACC (points), its seeds, and the
    best so far."""
    trials = sorted(shown_trials(study), key=lambda t: t.number)
    acc = np.array([t.user_attrs["acc"] * 100 for t in trials])
    best = np.maximum.accumulate(acc) if len(acc) else acc
    return {
        "trials": [t.number for t in trials],
        "acc": acc.tolist(),
        "n_seeds": [n_seeds(t) for t in trials],
        "best": best.tolist(),
    }


def history_plot(study: optuna.Study, path: Path) -> Path:
    plt = _plt()
    data = history_data(study)
    fig, ax = plt.subplots(figsize=(6, 4))
    start = records_data(study)["start_seeds"]
    again = [i for i, n in enumerate(data["n_seeds"]) if n > start]
    ax.plot(data["trials"], data["acc"], ".", alpha=0.5, label="ordering ACC (latest record)")
    if again:
        x, y = [data["trials"][i] for i in again], [data["acc"][i] for i in again]
        ax.plot(x, y, "o", mfc="none", color="tab:green", label="re-evaluated (more seeds)")
    ax.plot(data["trials"], data["best"], "r-", label="best so far")
    ax.set_xlabel("trial (of each ordering's latest record)")
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
    best = _recommended_trial(study, rec)
    if rec.get("validation"):
        files.append(validation_plot(rec["validation"], out / "validation.png"))
    r = RMatrix(tuple(rec["order"]), best.user_attrs["R"])
    files.append(r.heatmap(out / "recommended_R.png", title=f"recommended: {rec['strategy']} (mean over seeds)"))
    data = {
        "records": records_data(study),
        "pareto": pareto_data(study),
        "acc_distribution": acc_distribution_data(study),
        "history": history_data(study),
        "recommended_R": {
            "trial": best.number,
            "order": rec["order"],
            "strategy": rec["strategy"],
            "n_seeds": n_seeds(best),
            "R": r.values.tolist(),
        },
    }
    (out / "report.json").write_text(json.dumps(data, indent=1))
    return [*files, out / "report.json"]


def _recommended_trial(study: optuna.Study, rec: dict[str, Any]) -> FrozenTrial:
    """The record the recommendation quotes: its MLflow run, else its ordering's latest record."""
    shown = shown_trials(study)
    run = rec.get("mlflow_run_id")
    same = [t for t in shown if run is not None and t.user_attrs.get("mlflow_run_id") == run]
    key = (tuple(rec["order"]), rec["strategy"], rec["params"]["lambda"])
    return (same or [t for t in shown if record_key(t) == key])[0]
