"""Issue 19, 6(b): does lll's recommended order beat random search's when retrained on fresh seeds?

Per repeat r (the sampler and training base seed, so both searches train on the same seeds r, r+1):

* **the new default** — `lll search` with its default sampler, --seeds / --max-seeds / --validate /
  held-out seeds (naive, --workers 2), then `lll export`: the recommendation is the best held-out
  mean of the validated top K; its estimate is ``validation.estimate.acc``, the recommendation's
  held-out mean (the pessimistic cross-fitted estimate and the search's own seed mean are kept
  beside it). Its cost = the search's task-trainings (the CLI's
  "task-trainings: N run", checked against the MLflow parent run's ``search_trained``) plus
  validation's (the CLI's "validation trained ... (N task-trainings)": the top K, the pool's given
  order and 2 random orderings).
* **random search** — `lll search --sampler random --validate 0 --seeds 2 --max-seeds 2` (each
  ordering's value the mean of 2 seeds, no re-evaluation: the baseline of every earlier run), cut
  at the first n trials whose distinct (prefix, seed) task-trainings reach the default's total; the
  recommendation is the best observed seed mean among them (what a random search given that budget
  reports). The count is checked against the CLI's for the whole run.
* **fresh seeds** — both recommendations retrained with `lll run --seeds` (the same training config)
  on seeds no search and no validation used, their own per repeat (--fresh-seeds + 10 × repeat);
  gain = default − random, paired by repeat and seed.

The 95% CI of the gain is a t-interval over the per-repeat mean differences (repeats are the
independent unit); the pooled one (all repeat × seed differences) is given beside it. Bias = the
export's estimate − the fresh-seed mean of the same ordering. Writes the ``--key`` key of
bench/out/fresh_seed.json (other keys kept) and bench/out/fresh_seed_<key>_details.json after
every step; a rerun with the same arguments skips finished steps.

    python bench/fresh_seed_real.py                      # the pool's training defaults, 150 trials, 4 repeats
    python bench/fresh_seed_real.py --repeats 8 --epochs 3 --train-per-task 400 --test-per-task 200 --key real10_cheap
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path

import common
from search_real_10 import lll, recheck, stores, train_flags

OUT = common.OUT
POOL = "mixed-mnist-10"


def count(pattern: str, text: str, default: int | None = None) -> int:
    """An integer from the CLI's printout (Rich wraps lines, so whitespace is normalised first)."""
    m = re.search(pattern, " ".join(text.split()))
    if m is None:
        if default is not None:
            return default
        raise SystemExit(f"cannot find {pattern!r} in the printout:\n{text[-3000:]}")
    return int(m.group(1))


def parent_metric(work: Path, study, name: str) -> float | None:
    from pipeline import tracking

    run = tracking.client(f"sqlite:///{work}/mlflow.db").get_run(study.user_attrs["mlflow_parent_run_id"])
    return run.data.metrics.get(name)


def load(work: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{work}/optuna.db")


def default_search(repeat: int, args, work: Path) -> dict:
    """The new default: `lll search` at its defaults (naive, cheap training config), then `lll export`."""
    name = f"default-{repeat}"
    cmd = ["search", "--pool", POOL, "--strategies", "naive", "--trials", str(args.trials), "--seed", str(repeat)]
    cmd += ["--workers", "2", "--study", name, *train_flags(args), *stores(work)]
    t0 = time.perf_counter()
    printed = lll(cmd, work, name)
    wall = time.perf_counter() - t0
    out = work / f"{name}.export.json"
    lll(["export", "--study", name, "--storage", f"sqlite:///{work}/optuna.db", "--out", str(out)], work, "export")
    exp = json.loads(out.read_text())
    val = exp["validation"]
    study = load(work, name)
    search_run = count(r"task-trainings: (\d+) run", printed)
    rebuilt = count(r"(\d+) more rebuilt", printed, 0)
    validation = count(r"validation trained \d+ \(ordering, seed\) paths \((\d+) task-trainings\)", printed)
    seeds = sorted({int(s) for t in study.trials for s in t.user_attrs.get("seeds") or []})
    return {
        "study": name,
        "command": "lll " + " ".join(cmd),
        "export_command": f"lll export --study {name} --storage sqlite:///WORK/optuna.db --out {out.name}",
        "settings": {k: study.user_attrs.get(k) for k in ("sampler", "seeds", "prune", "trials", "population")},
        "trials_complete": exp["trials_complete"],
        "search_seeds": seeds,
        "heldout_seeds": val["heldout_seeds"],
        "order": exp["order"],
        "export_estimate": val["estimate"]["acc"]["mean"],
        "export_ci95": val["estimate"]["acc"]["ci95"],
        "export_cross_fitted": val["estimate"]["cross_fitted"]["acc"]["mean"],
        "search_estimate": exp["acc"],
        "ranked_by": val["ranked_by"],
        "export_gain": {
            k: {"mean": g["mean"], "ci95": g["ci95"], "verdict": g["verdict"]} for k, g in val["gain"].items()
        },
        "task_trainings": {
            "search": search_run,
            "search_mlflow": parent_metric(work, study, "search_trained"),
            "validation": validation,
            "total": search_run + validation,
            "rebuilt_extra": rebuilt,
        },
        "printout": printed.splitlines()[:12],
        "wall_s": wall,
    }


def distinct_units(trials) -> list[int]:
    """Cumulative distinct (prefix, seed) task-trainings after each trial, in trial-number order:
    what a search of the first n trials trains with a shared prefix trained once."""
    seen: set[tuple[tuple[str, ...], int]] = set()
    cum = []
    for t in trials:
        order = tuple(t.user_attrs["order"])
        for s in t.user_attrs["seeds"]:
            seen.update((order[: i + 1], int(s)) for i in range(len(order)))
        cum.append(len(seen))
    return cum


def random_search(repeat: int, budget: int, args, work: Path) -> dict:
    """Random search cut at the first n trials that reach ``budget`` task-trainings; best observed."""
    import optuna

    name = f"random-{repeat}"
    trials = math.ceil(budget / args.random_per_trial) + 4
    cmd = ["search", "--pool", POOL, "--strategies", "naive", "--trials", str(trials), "--seed", str(repeat)]
    cmd += ["--workers", "2", "--study", name, "--sampler", "random", "--validate", "0", *train_flags(args)]
    cmd += ["--seeds", "2", "--max-seeds", "2"]  # as in every earlier run: seed means of 2, no re-evaluation
    cmd += stores(work)
    t0 = time.perf_counter()
    printed = lll(cmd, work, name)
    commands = ["lll " + " ".join(cmd)]
    done = sorted(load(work, name).get_trials(states=[optuna.trial.TrialState.COMPLETE]), key=lambda t: t.number)
    while distinct_units(done)[-1] < budget:  # short: extend the same study
        trials += math.ceil((budget - distinct_units(done)[-1]) / args.random_per_trial) + 2
        more = [
            "search",
            "--study",
            name,
            "--storage",
            f"sqlite:///{work}/optuna.db",
            "--resume",
            "--trials",
            str(trials),
        ]
        printed += lll([*more, "--tracking-uri", f"sqlite:///{work}/mlflow.db"], work, name)
        commands.append("lll " + " ".join(more))
        done = sorted(load(work, name).get_trials(states=[optuna.trial.TrialState.COMPLETE]), key=lambda t: t.number)
    wall = time.perf_counter() - t0
    cum = distinct_units(done)
    n = next(i + 1 for i, c in enumerate(cum) if c >= budget)
    best = max(done[:n], key=lambda t: (t.value, -t.number))
    runs = [int(m) for m in re.findall(r"task-trainings: (\d+) run", " ".join(printed.split()))]
    return {
        "study": name,
        "commands": commands,
        "trials_run": len(done),
        "trials_used": n,
        "recommendation": "best observed seed mean among the first trials_used trials (by trial number)",
        "order": best.user_attrs["order"],
        "best_trial": best.number,
        "search_estimate": best.value,
        "task_trainings": {
            "used": cum[n - 1],
            "whole_run_counted": cum[-1],
            "whole_run_cli": sum(runs),
            "whole_run_mlflow": parent_metric(work, load(work, name), "search_trained"),
            "rebuilt_extra": sum(int(m) for m in re.findall(r"(\d+) more rebuilt", " ".join(printed.split()))),
        },
        "wall_s_whole_run": wall,
    }


def t_interval(xs: list[float]) -> list[float]:
    from scipy.stats import t

    m, half = statistics.mean(xs), t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return [m - half, m + half]


def summarise(reps: list[dict], args, started: float) -> dict:
    """The ``real10`` block (points): the gain CIs and the export's bias."""
    done = [r for r in reps if "fresh_random" in r]
    if not done:
        return {}
    per_rep = [100 * (r["fresh_default"]["acc_mean"] - r["fresh_random"]["acc_mean"]) for r in done]
    pooled = [
        100 * (a - b)
        for r in done
        for a, b in zip(r["fresh_default"]["acc_per_seed"], r["fresh_random"]["acc_per_seed"], strict=True)
    ]
    bias = [100 * (r["default"]["export_estimate"] - r["fresh_default"]["acc_mean"]) for r in done]
    crossed = [r["default"]["export_cross_fitted"] for r in done]
    crossed_bias = [100 * (c - r["fresh_default"]["acc_mean"]) for c, r in zip(crossed, done, strict=True)]
    fresh = [r["fresh_default"]["acc_mean"] for r in done]
    covered = [lo <= f <= hi for f, (lo, hi) in zip(fresh, (r["default"]["export_ci95"] for r in done), strict=True)]
    search_bias = [100 * (r["default"]["search_estimate"] - r["fresh_default"]["acc_mean"]) for r in done]
    random_bias = [100 * (r["random"]["search_estimate"] - r["fresh_random"]["acc_mean"]) for r in done]
    gain_ci = t_interval(per_rep) if len(per_rep) > 1 else None
    return {
        "repeats": len(done),
        "fresh_seeds": {str(r["repeat"]): r["fresh_default"]["seeds"] for r in done},
        "fresh_acc_default": [100 * r["fresh_default"]["acc_mean"] for r in done],
        "fresh_acc_random": [100 * r["fresh_random"]["acc_mean"] for r in done],
        "gain_per_repeat": per_rep,
        "gain_mean": statistics.mean(per_rep),
        "gain_ci": gain_ci,
        "gain_ci_how": "t-interval (df = repeats - 1) over the per-repeat mean differences, points",
        "gain_ci_pooled": t_interval(pooled) if len(pooled) > 1 else None,
        "gain_ci_pooled_how": "t-interval over all repeat x fresh-seed paired differences (df = n - 1)",
        "bias_per_repeat": bias,
        "bias_abs_mean": statistics.mean(abs(b) for b in bias),
        "bias_mean": statistics.mean(bias),
        "bias_how": (
            "the export's estimate (validation.estimate.acc: the recommendation's held-out mean) - its "
            "fresh-seed mean, points"
        ),
        "export_ci_covers_fresh_mean": covered,
        "cross_fitted_bias_per_repeat": crossed_bias,
        "cross_fitted_bias_mean": statistics.mean(crossed_bias),
        "cross_fitted_bias_abs_mean": statistics.mean(abs(b) for b in crossed_bias),
        "search_estimate_bias_per_repeat": search_bias,
        "random_best_observed_bias_per_repeat": random_bias,
        "task_trainings_default": [r["default"]["task_trainings"]["total"] for r in done],
        "task_trainings_random": [r["random"]["task_trainings"]["used"] for r in done],
        "targets": {
            "gain_ci_above_0": bool(gain_ci and gain_ci[0] > 0),
            "bias_abs_mean_le_1": statistics.mean(abs(b) for b in bias) <= 1.0,
        },
        "config": {
            "pool": POOL,
            "strategy": "naive",
            "trials_default": args.trials,
            "train_per_task": args.train_per_task or "the pool's default",
            "test_per_task": args.test_per_task if args.train_per_task else "the pool's default",
            "epochs": args.epochs,
            "workers": 2,
        },
        "wall_s_total": sum(r.get("wall_s", 0.0) for r in done),
        "details": f"fresh_seed_{args.key}_details.json",
    }


def write(reps: list[dict], args, started: float) -> None:
    block = summarise(reps, args, started)
    (args.out_dir / f"fresh_seed_{args.key}_details.json").write_text(
        json.dumps({"config": vars(args) | {"work": str(args.work)}, "repeats": reps}, indent=2, default=str) + "\n"
    )
    if block:
        path = args.out_dir / "fresh_seed.json"
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc[args.key] = block
        path.write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--trials", type=int, default=150, help="the default search's trials")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10, help="10: the pool's default")
    ap.add_argument("--train-per-task", type=int, default=0, help="0: the pool's own sizes")
    ap.add_argument("--test-per-task", type=int, default=200, help="with --train-per-task")
    ap.add_argument("--fresh-seeds", default="100,101,102,103,104", help="repeat r adds 10 r to each")
    ap.add_argument(
        "--random-per-trial",
        type=float,
        default=17.5,
        help="task-trainings a random trial adds (a guess: short runs are extended)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/fresh_seed_real10"), help="studies and MLflow store")
    ap.add_argument("--out-dir", type=Path, default=OUT, help="where the two JSON files go")
    ap.add_argument("--key", default="real10", help="the key in fresh_seed.json (and the details file's name)")
    args = ap.parse_args()
    args.recheck_seeds = args.fresh_seeds  # search_real_10.recheck's name for them
    args.work.mkdir(parents=True, exist_ok=True)
    details = args.out_dir / f"fresh_seed_{args.key}_details.json"
    reps = json.loads(details.read_text())["repeats"] if details.exists() else []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for repeat in range(args.repeats):
        # Each repeat's own fresh seeds (and, by its base seed, its own held-out seeds): the repeats
        # judge on independent seeds, so one lucky seed set cannot bias every repeat alike.
        fresh = {int(s) + 10 * repeat for s in args.fresh_seeds.split(",")}
        rargs = argparse.Namespace(**{**vars(args), "recheck_seeds": ",".join(map(str, sorted(fresh)))})
        if repeat >= len(reps):
            reps.append({"repeat": repeat})
        r = reps[repeat]
        t0 = time.perf_counter()
        if "default" not in r:
            r["default"] = default_search(repeat, args, args.work)
            write(reps, args, started)
        used = set(r["default"]["search_seeds"]) | set(r["default"]["heldout_seeds"])
        if used & fresh:
            raise SystemExit(f"fresh seeds {sorted(used & fresh)} were used by the search or validation")
        if "random" not in r:
            r["random"] = random_search(repeat, r["default"]["task_trainings"]["total"], args, args.work)
            write(reps, args, started)
        for who in ("default", "random"):
            if f"fresh_{who}" not in r:
                r[f"fresh_{who}"] = recheck(POOL, r[who]["order"], rargs, args.work)
                write(reps, args, started)
        r["wall_s"] = r.get("wall_s", 0.0) + time.perf_counter() - t0
        write(reps, args, started)
        print(json.dumps({k: r[k] for k in ("repeat", "fresh_default", "fresh_random")}), flush=True)
    print(json.dumps(summarise(reps, args, started), indent=2))


if __name__ == "__main__":
    main()
