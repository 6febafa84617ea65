"""How CPG's accuracy goal and pruning tolerance trade accuracy against size (docs/strategies.md, CPG).

CPG grows when a task's training accuracy stays below ``accuracy_goal`` and compacts a task as long
as its training accuracy stays within ``prune_tolerance`` of the unpruned model's. This runs the
strategy-table setting (permuted-mnist, 1,000 / 500 images per task, 10 epochs, MLP 50-50-50) over a
small grid of both and prints ACC, final parameters, parameters grown and the free share left.

    python bench/cpg_thresholds.py [--seeds 1]   > bench/out/cpg_thresholds.txt

One process, one thread; a few minutes per seed on a shared 2-core machine.
"""

from __future__ import annotations

import statistics
import sys

import common
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from tasks.registry import load_pool

GOALS = (0.9, 0.95, 0.99)
TOLERANCES = (0.0, 0.01, 0.03)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--pool", default="permuted-mnist")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pool = load_pool(args.pool, train_per_task=1000, test_per_task=500)
    print(f"{args.pool}, 1000/500 images per task, 10 epochs, hidden 50-50-50, seeds {args.seeds}; ACC in points")
    print(f"{'goal':>5} {'tolerance':>9} {'ACC':>6} {'params':>8} {'grown':>7} {'free':>5} {'pruned':>6} {'s':>5}")
    for goal in GOALS:
        for tol in TOLERANCES:
            runs = []
            for seed in range(args.seeds):
                c = StrategyConfig(name="cpg", options={"accuracy_goal": goal, "prune_tolerance": tol})
                r = run_ordering(pool, pool.names, c, TrainConfig(), seed=seed)
                pruned = statistics.fmean(x["pruned"] for x in r.strategy.compacting)
                runs.append((r.rmatrix.acc(), r.sizes[-1], pruned, r.seconds))
            acc = statistics.fmean(a for a, *_ in runs) * 100
            params = statistics.fmean(s["params"] for _, s, *_ in runs)
            grown = statistics.fmean(s["params_grown"] for _, s, *_ in runs)
            free = statistics.fmean(s["free_share"] for _, s, *_ in runs) * 100
            pruned = statistics.fmean(p for *_, p, _ in runs) * 100
            secs = statistics.fmean(t for *_, t in runs)
            row = f"{goal:>5} {tol:>9} {acc:>6.1f} {params:>8,.0f} {grown:>7,.0f}"
            print(f"{row} {free:>4.0f}% {pruned:>5.0f}% {secs:>5.0f}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
