"""The recommended task order of a study, and how sure we are of it."""

from __future__ import annotations

import math
import shlex
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study.records import latest_trials, record_key
from search.study.settings import StudySettings
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
        "cpu_kernels": a.get("cpu_kernels"),  # torch's CPU kernels it trained with (None: not recorded)
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


RERUN_FLAGS = {
    "epochs": "--epochs",
    "optimizer": "--optimizer",
    "lr": "--lr",
    "momentum": "--momentum",
    "batch_size": "--batch-size",
    "init": "--init",
    "heads": "--heads",
    "model": "--model",
}


def run_command(settings: StudySettings, best: dict[str, Any], seeds: list[int]) -> str:
    """The `lll run` command line that re-trains the recommended order on the study's seeds: it
    prints the exported seed-mean ACC/BWT exactly (per-seed R are the same bit for bit). When the
    trial trained with other CPU kernels than this process uses (a choice of ATEN_CPU_CAPABILITY,
    or another kind of CPU: pipeline/cpu_kernels.py), the command asks for those."""
    from pipeline.cpu_kernels import capability

    kernels = best.get("cpu_kernels")
    args = [f"ATEN_CPU_CAPABILITY={kernels.lower()}"] if kernels and kernels != capability() else []
    args += ["lll", "run", "--pool", settings.pool, "--order", ",".join(best["order"])]
    args += ["--strategy", best["strategy"], "--seeds", ",".join(map(str, seeds))]
    if best.get("lambda") is not None:
        args += ["--lambda", repr(float(best["lambda"]))]
    for k, v in settings.strategy_options(best["strategy"]).items():
        args += ["--option", f"{k}={v}"]
    train = settings.train
    for key, flag in RERUN_FLAGS.items():
        if getattr(train, key) is not None:
            args += [flag, str(getattr(train, key))]
    if train.hidden is not None:
        args += ["--hidden", ",".join(map(str, train.hidden))]
    args += ["--clip", str(train.clip or 0)]
    for value, flag in (
        (settings.train_per_task, "--train-per-task"),
        (settings.test_per_task, "--test-per-task"),
        (settings.data_dir, "--data-dir"),
    ):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


def recommendation(study: optuna.Study) -> dict[str, Any]:
    """Best ordering (highest ACC; on the ACC/BWT Pareto front for a two-objective study), with
    the alternatives on the front and a plain statement of how certain the choice is."""
    settings = study_settings(study)
    every = complete_trials(study)
    if not every:
        raise LLLError(f"study {study.study_name!r} has no finished trial yet; run or resume the search first")
    trials = latest_trials(every)
    objective = settings.objective
    key = "bwt" if objective == "bwt" else "acc"
    front = pareto_front(trials)
    pool = front if objective == "both" else trials
    ranked = sorted(pool, key=lambda t: -t.user_attrs[key])
    best_t = ranked[0]
    best = _row(best_t)
    seeds = best_t.user_attrs.get("seeds") or settings.seed_list  # a re-evaluated ordering: all its seeds
    n_seeds = len(seeds)

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
    out = {
        "order": best["order"],
        "strategy": best["strategy"],
        "params": {
            "lambda": best["lambda"],
            "seeds": seeds,
            "options": settings.strategy_options(best["strategy"]),
            "train": settings.train.model_dump(mode="json"),
        },
        "acc": best["acc"],
        "bwt": best["bwt"],
        "fwt": best["fwt"],
        "acc_std": best["acc_std"],
        "bwt_std": best["bwt_std"],
        "mlflow_run_id": best["mlflow_run_id"],
        "cpu_kernels": best["cpu_kernels"],
        "pareto": [_row(t) for t in front],
        "confidence": {"seeds": n_seeds, "runner_up": runner_up, "margin": margin, "note": note},
        "study": study.study_name,
        "objective": objective,
        "pool": settings.pool,
        "pool_fingerprint": settings.pool_fingerprint,
        "trials_complete": len(every),
        "rerun": run_command(settings, best, seeds),
    }
    return with_validation(study, out, trials)


def with_validation(study: optuna.Study, rec: dict[str, Any], trials: list[FrozenTrial]) -> dict[str, Any]:
    """A study validated on held-out seeds recommends the best held-out ordering: its order,
    strategy and the search's own estimate for it at the top level, the held-out numbers under
    ``validation``, and a rerun command that reproduces them (search/study/validation.py)."""
    block = study.user_attrs.get("validation")
    if not block:
        return rec
    best = block["orderings"][block["recommended"]]
    key = (tuple(best["order"]), best["strategy"], best["lambda"])
    same = [t for t in trials if record_key(t) == key]
    if same:
        chosen = max(same, key=lambda t: t.user_attrs["acc"])
        row = _row(chosen)
        rec.update({k: row[k] for k in ("order", "strategy", "acc", "bwt", "fwt", "acc_std", "bwt_std")})
        rec["mlflow_run_id"] = row["mlflow_run_id"]
        seeds = chosen.user_attrs.get("seeds") or rec["params"]["seeds"]
        rec["params"] = {**rec["params"], "lambda": row["lambda"], "seeds": seeds}
        k = sum(o["role"] == "top" for o in block["orderings"])
        # The search's margin note was about its own best; this ordering was chosen by validation.
        rec["confidence"] = {
            "seeds": len(seeds),
            "runner_up": None,
            "margin": None,
            "note": (
                f"the search measured it on {len(seeds)} seed{'s' if len(seeds) != 1 else ''}; chosen among the "
                f"top {k} by its mean on {len(block['heldout_seeds'])} held-out seeds (below)"
            ),
        }
    rec["validation"] = block
    rec["rerun"] = block["rerun"]
    return rec
