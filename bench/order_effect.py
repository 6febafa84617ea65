"""Does the training order matter? Final ACC and BWT over every ordering of a pool's tasks.

All T! orderings (120 for 5 tasks) are trained per (pool, strategy, seed) through
:func:`common.train_orderings` — Ray workers, lll's scheduler, each worker's prefix cache — so each
distinct prefix is trained about once (T + T(T-1) + ... = 325 task-trainings for 5 tasks instead of
600). ``--population`` only changes speed: naive and EWC on the MLP train in lockstep at any K
(``1``, the default, is stacks of one; ``auto`` is faster), bit for bit what ``lll run`` gives.
Reported per strategy and seed: best / worst / median ACC and BWT with the orderings that reach
them and the spread; across seeds: the Spearman rank correlation of the 120 ACC (and BWT) values
between seeds (is the ranking of orderings a property of the orderings or seed noise?) and the
median seed-to-seed difference for the same ordering.

    python bench/order_effect.py --out order_effect.json            # ~20 min of one core per worker
    python bench/order_effect.py --report order_effect.json          # re-print a saved run, no training
    python bench/order_effect.py --quick    # < 60 s smoke test: 3 tasks, small data (numbers not meaningful)
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from pathlib import Path

import common
import numpy as np

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.rmatrix import RMatrix
from pipeline.strategies import make_strategy
from tasks.pool import TaskPool
from tasks.registry import load_pool

spearman = common.spearman


def enumerate_orderings(
    pool: TaskPool,
    names: list[str],
    strategy: StrategyConfig,
    cfg: TrainConfig,
    seed: int,
    workers: int = 2,
    population: int | str = 1,
) -> dict:
    """Every ordering of ``names`` through the scheduler (:func:`common.train_every_ordering`);
    per-ordering metrics in lexicographic order. ``reused``: task-trainings answered from a cache."""
    rows, stats = common.train_every_ordering(
        pool.spec.model_dump_json(), names, strategy.model_dump_json(), cfg.model_dump_json(), seed, workers, population
    )
    runs = []
    for order, got in rows.items():
        r = RMatrix.from_rows(order, got)
        runs.append({"order": list(order), "acc": r.acc(), "bwt": r.bwt(), "fwt": r.fwt(), "R": r.values.tolist()})
    uncached = len(runs) * len(names)
    return {
        "seed": seed,
        "runs": runs,
        "trained": stats["trained"],
        "reused": uncached - stats["trained"],
        "uncached": uncached,
        "seconds": stats["wall_s"],
        "workers": len(stats["workers"]),
        "population": [w.get("population") for w in stats["workers"]],
    }


def fmt_order(order: list[str]) -> str:
    return ">".join(order)


def summarise_seed(res: dict) -> dict:
    runs = res["runs"]
    out = {}
    for metric in ("acc", "bwt"):
        best = max(runs, key=lambda r: r[metric])
        worst = min(runs, key=lambda r: r[metric])
        out[metric] = {
            "best": best[metric],
            "best_order": best["order"],
            "worst": worst[metric],
            "worst_order": worst["order"],
            "median": statistics.median(r[metric] for r in runs),
            "spread": best[metric] - worst[metric],
        }
    return out


def report(label: str, per_seed: list[dict]) -> dict:
    """Print the per-seed and across-seed numbers for one (pool, strategy); return them for the JSON."""
    print(f"\n== {label} ==", flush=True)
    summary: dict = {"per_seed": []}
    for res in per_seed:
        s = summarise_seed(res)
        summary["per_seed"].append({"seed": res["seed"], **s})
        print(
            f"seed {res['seed']}: {len(res['runs'])} orderings, {res['trained']} task-trainings run "
            f"(uncached enumeration: {res['uncached']}), {res['seconds']:.0f} s wall"
            + (f", {res['cpu_seconds']:.0f} s CPU" if "cpu_seconds" in res else "")
        )
        for metric in ("acc", "bwt"):
            m = s[metric]
            print(
                f"  {metric.upper()}  median {m['median']:.4f}  spread {m['spread']:.4f}  "
                f"best {m['best']:.4f} ({fmt_order(m['best_order'])})  "
                f"worst {m['worst']:.4f} ({fmt_order(m['worst_order'])})"
            )
    if len(per_seed) >= 2:
        a, b = per_seed[0]["runs"], per_seed[1]["runs"]
        assert [r["order"] for r in a] == [r["order"] for r in b]
        rho_acc = spearman([r["acc"] for r in a], [r["acc"] for r in b])
        rho_bwt = spearman([r["bwt"] for r in a], [r["bwt"] for r in b])
        noise = statistics.median(abs(x["acc"] - y["acc"]) for x, y in zip(a, b, strict=True))
        print(
            f"  seeds {per_seed[0]['seed']} vs {per_seed[1]['seed']}: Spearman rho ACC {rho_acc:.3f}, "
            f"BWT {rho_bwt:.3f}; "
            f"median |ACC difference| for the same ordering {noise:.4f}"
        )
        # One run's ACC = the ordering's own value + seed noise. The seed-to-seed difference of the same
        # ordering has variance 2σ², so σ estimates the noise; the rest of the variance across orderings
        # is what the ordering itself does.
        sigma = float(np.std([x["acc"] - y["acc"] for x, y in zip(a, b, strict=True)]) / np.sqrt(2))
        sd = statistics.mean(float(np.std([r["acc"] for r in res["runs"]])) for res in per_seed[:2])
        systematic = max(0.0, 1 - sigma**2 / sd**2)
        print(
            f"  ACC seed noise SD {sigma:.4f} vs SD across orderings {sd:.4f}: {systematic:.0%} of the variance across "
            f"orderings is the ordering itself, not seed noise"
        )
        summary.update(
            spearman_acc=rho_acc,
            spearman_bwt=rho_bwt,
            median_seed_acc_diff=noise,
            acc_seed_noise_sd=sigma,
            acc_sd_across_orderings=sd,
            acc_systematic_share=systematic,
        )
    # Seed-averaged view: which orderings are reliably good, and what drives it.
    mean_acc: dict[tuple, float] = defaultdict(float)
    for res in per_seed:
        for r in res["runs"]:
            mean_acc[tuple(r["order"])] += r["acc"] / len(per_seed)
    best = max(mean_acc, key=mean_acc.get)
    worst = min(mean_acc, key=mean_acc.get)
    print(
        f"  seed-mean ACC: best {mean_acc[best]:.4f} ({fmt_order(list(best))}), "
        f"worst {mean_acc[worst]:.4f} ({fmt_order(list(worst))}), spread {mean_acc[best] - mean_acc[worst]:.4f}"
    )
    by_last: dict[str, list[float]] = defaultdict(list)
    for order, acc in mean_acc.items():
        by_last[order[-1]].append(acc)
    cells = ", ".join(
        f"{n} {statistics.mean(v):.3f}" for n, v in sorted(by_last.items(), key=lambda kv: -statistics.mean(kv[1]))
    )
    print(f"  seed-mean ACC by last task: {cells}")
    summary["seed_mean_acc"] = {
        "best": mean_acc[best],
        "best_order": list(best),
        "worst": mean_acc[worst],
        "worst_order": list(worst),
    }
    summary["seed_mean_acc_by_last_task"] = {n: statistics.mean(v) for n, v in by_last.items()}
    return summary


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--strategies", default="naive,ewc", help="strategies for --pool (default λ each)")
    ap.add_argument("--exchangeable-pool", default="permuted-mnist", help="control pool, naive only ('' to skip)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--ewc-seeds", default=None, help="fewer seeds for the costlier non-naive strategies")
    ap.add_argument("--tasks", type=int, default=None, help="use only the pool's first N tasks")
    ap.add_argument("--train-per-task", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="override TrainConfig.epochs (default 10)")
    ap.add_argument("--workers", type=int, default=2, help="Ray worker processes (one thread each)")
    ap.add_argument(
        "--population", default="1", help="K per worker (1: stacks of one); speed only, K never changes a result"
    )
    ap.add_argument("--out", default=None, help="also write every ordering's R and metrics as JSON here")
    ap.add_argument("--quick", action="store_true", help="smoke test, 3 tasks, 300 samples per task, 5 epochs")
    ap.add_argument(
        "--report", default=None, metavar="JSON", help="re-print the report of a saved --out file; no training"
    )
    args = ap.parse_args()
    if args.report:
        print_report(json.loads(Path(args.report).read_text()))
        return
    if args.quick:
        args.tasks = args.tasks or 3
        args.train_per_task = args.train_per_task or 300
        args.epochs = args.epochs or 5

    population = int(args.population) if args.population.isdigit() else args.population
    cfg = TrainConfig(device="cpu", **({"epochs": args.epochs} if args.epochs else {}))
    seeds = [int(s) for s in args.seeds.split(",")]
    other_seeds = [int(s) for s in args.ewc_seeds.split(",")] if args.ewc_seeds else seeds
    jobs = [(args.pool, s.strip()) for s in args.strategies.split(",")]
    if args.exchangeable_pool:
        jobs.append((args.exchangeable_pool, "naive"))
    print(
        f"{args.workers} Ray workers, one thread each, population {population}; "
        f"TrainConfig {cfg.model_dump(exclude={'device'})}; "
        f"train_per_task {args.train_per_task or 'pool default'}; seeds {seeds}",
        flush=True,
    )

    results: dict = {
        "config": {
            "train": cfg.model_dump(mode="json"),
            "train_per_task": args.train_per_task,
            "tasks": args.tasks,
            "seeds": seeds,
            "workers": args.workers,
            "population": population,
        },
        "jobs": [],
    }
    for pool_name, strategy_name in jobs:
        pool = load_pool(pool_name, train_per_task=args.train_per_task)
        names = pool.names[: args.tasks] if args.tasks else pool.names
        strategy = StrategyConfig(name=strategy_name)
        per_seed = []
        for seed in seeds if strategy_name == "naive" else other_seeds:
            res = enumerate_orderings(pool, names, strategy, cfg, seed, args.workers, population)
            print(f"  [{pool_name} / {strategy_name} / seed {seed}: {res['seconds']:.0f} s]", flush=True)
            per_seed.append(res)
        results["jobs"].append(
            {
                "pool": pool_name,
                "pool_fingerprint": pool.fingerprint(),
                "strategy": strategy_name,
                "lam": make_strategy(strategy).lam,
                "tasks": names,
                "seeds": per_seed,
            }
        )
    print_report(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")


def print_report(results: dict) -> None:
    """Print every job's numbers (and store its summary in ``results``); also used by --report."""
    for job in results["jobs"]:
        names = job.get("tasks") or job["seeds"][0]["runs"][0]["order"]
        lam = f"λ={job['lam']:g}" if job.get("lam") is not None else "no λ" if "lam" in job else "default λ"
        label = f"{job['pool']} / {job['strategy']} ({lam}), tasks {', '.join(names)}"
        job["summary"] = report(label, job["seeds"])
    first_pool = results["jobs"][0]["pool"]
    main_jobs = [j for j in results["jobs"] if j["pool"] == first_pool]
    print()
    for a, b in itertools.combinations(main_jobs, 2):
        for ra in a["seeds"]:
            rb = next((r for r in b["seeds"] if r["seed"] == ra["seed"]), None)
            if rb is not None:
                rho = spearman([r["acc"] for r in ra["runs"]], [r["acc"] for r in rb["runs"]])
                print(f"Spearman rho of ACC, {a['strategy']} vs {b['strategy']}, seed {ra['seed']}: {rho:.3f}")
    trained = sum(r["trained"] for j in results["jobs"] for r in j["seeds"])
    uncached = sum(r["uncached"] for j in results["jobs"] for r in j["seeds"])
    cpu = sum(r.get("cpu_seconds", 0.0) for j in results["jobs"] for r in j["seeds"])
    print(f"total task-trainings run: {trained} (an uncached enumeration would need {uncached})")
    if cpu:
        print(f"total CPU time of the enumerations: {cpu / 60:.1f} min")


if __name__ == "__main__":
    main()
