"""The recommended task order of a study, and how sure we are of it."""

from __future__ import annotations

import math
import shlex
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study.storage import study_settings
from tasks.errors import LLLError


def _row(t: FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "trial": t.number,
        "order": a.get("order"),
        "strategy": a.get("strategy"),
        "lambda": a.get("lambda"),
        "acc": a.get("acc"),
        "bwt": a.get("bwt"),
        "fwt": a.get("fwt"),
        "acc_std": a.get("acc_std"),
        "bwt_std": a.get("bwt_std"),
        "mlflow_run_id": a.get("mlflow_run_id"),
    }


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "acc" in t.user_attrs]


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials no other trial beats on both ACC and BWT (computed here for every objective)."""
    front = []
    for t in trials:
        a, b = t.user_attrs["acc"], t.user_attrs["bwt"]
        dominated = any(
            (u.user_attrs["acc"] >= a and u.user_attrs["bwt"] >= b)
            and (u.user_attrs["acc"] > a or u.user_attrs["bwt"] > b)
            for u in trials
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: -t.user_attrs["acc"])


def run_command(settings: dict[str, Any], best: dict[str, Any], seeds: list[int]) -> str:
    """The `lll run` command line that re-trains the recommended order on the study's seeds: it
    prints the exported seed-mean ACC/BWT exactly (per-seed R are the same bit for bit)."""
    args = ["lll", "run", "--pool", settings["pool"], "--order", ",".join(best["order"])]
    args += ["--strategy", best["strategy"], "--seeds", ",".join(map(str, seeds))]
    if best.get("lambda") is not None:
        args += ["--lambda", repr(float(best["lambda"]))]
    for k, v in (settings.get("options", {}).get(best["strategy"], {}) or {}).items():
        args += ["--option", f"{k}={v}"]
    train = settings.get("train", {})
    flags = {
        "epochs": "--epochs",
        "optimizer": "--optimizer",
        "lr": "--lr",
        "momentum": "--momentum",
        "batch_size": "--batch-size",
        "init": "--init",
        "heads": "--heads",
        "model": "--model",
    }
    for key, flag in flags.items():
        if train.get(key) is not None:
            args += [flag, str(train[key])]
    if train.get("hidden") is not None:
        args += ["--hidden", ",".join(map(str, train["hidden"]))]
    args += ["--clip", str(train.get("clip") or 0)]
    for key, flag in (
        ("train_per_task", "--train-per-task"),
        ("test_per_task", "--test-per-task"),
        ("data_dir", "--data-dir"),
    ):
        if settings.get(key) is not None:
            args += [flag, str(settings[key])]
    return shlex.join(args)


def recommendation(study: optuna.Study) -> dict[str, Any]:
    """Best ordering (highest ACC; on the ACC/BWT Pareto front for a two-objective study), with
    the alternatives on the front and a plain statement of how certain the choice is."""
    settings = study_settings(study)
    trials = complete_trials(study)
    if not trials:
        raise LLLError(f"study {study.study_name!r} has no finished trial yet; run or resume the search first")
    objective = settings.get("objective", "acc")
    key = "bwt" if objective == "bwt" else "acc"
    front = pareto_front(trials)
    pool = front if objective == "both" else trials
    ranked = sorted(pool, key=lambda t: -t.user_attrs[key])
    best_t = ranked[0]
    best = _row(best_t)
    seeds = [int(s) for s in str(settings.get("seeds_list", settings.get("seed", 0))).split(",")]
    n_seeds = int(settings.get("seeds", 1))

    # How sure: the margin to the best *different ordering*, against the seed-to-seed spread.
    others = sorted((t for t in trials if t.user_attrs["order"] != best["order"]), key=lambda t: -t.user_attrs[key])
    runner_up = others[0].user_attrs[key] if others else None
    std = best.get(f"{key}_std") or 0.0
    margin = None if runner_up is None else best[key] - runner_up
    if n_seeds < 2:
        note = (
            "measured on 1 seed: no estimate of seed noise; orderings within a few points may swap "
            "places on another seed — re-run the search with --seeds 3 to know"
        )
    elif margin is None:
        note = "only one ordering was measured"
    else:
        se = std / math.sqrt(n_seeds) if std else 0.0
        verdict = "clearly ahead" if se and margin > 2 * se else "not clearly separated from the runner-up"
        note = (
            f"{key.upper()} {best[key] * 100:.2f} ± {std * 100:.2f} (std over {n_seeds} seeds); "
            f"margin over the next ordering {margin * 100:.2f} points: {verdict}"
        )
    return {
        "order": best["order"],
        "strategy": best["strategy"],
        "params": {
            "lambda": best["lambda"],
            "seeds": seeds,
            "options": (settings.get("options", {}) or {}).get(best["strategy"], {}),
            "train": settings.get("train", {}),
        },
        "acc": best["acc"],
        "bwt": best["bwt"],
        "fwt": best["fwt"],
        "acc_std": best["acc_std"],
        "bwt_std": best["bwt_std"],
        "mlflow_run_id": best["mlflow_run_id"],
        "pareto": [_row(t) for t in front],
        "confidence": {"seeds": n_seeds, "runner_up": runner_up, "margin": margin, "note": note},
        "study": study.study_name,
        "objective": objective,
        "pool": settings.get("pool"),
        "pool_fingerprint": settings.get("pool_fingerprint"),
        "trials_complete": len(trials),
        "rerun": run_command(settings, best, seeds),
    }
