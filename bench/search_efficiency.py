"""How many trials does the search need to find a near-best ordering, Optuna's TPE vs random?

Ground truth: the final ACC of every ordering of the default pool (exhaustive enumeration through the
prefix cache, averaged over seeds), read from bench/order_effect.py's JSON or computed here.
Then each sampler proposes orderings one trial at a time through lll's own search space (Lehmer code,
`search.study.make_sampler`), and each proposed ordering is *looked up* in the ground-truth table —
the measured ACC of that ordering, not a model of it — until one within --within points of the best
is proposed. Median over --reps sampler seeds. Target: TPE needs at most half the trials of random.

    python bench/search_efficiency.py --truth /tmp/lllbench/order_effect.json --strategy naive
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna

from search.space import SearchSpace
from search.study import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def exhaustive_truth(pool_name: str, strategy: str, seeds: list[int], epochs: int | None) -> dict[tuple, float]:
    from pipeline.config import StrategyConfig, TrainConfig
    from pipeline.runner import MemoryPrefixCache, run_ordering
    from search.ordering import all_orderings
    from tasks.registry import load_pool

    pool = load_pool(pool_name)
    train = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    acc: dict[tuple, list[float]] = {}
    for seed in seeds:
        cache = MemoryPrefixCache()
        for order in all_orderings(pool.names):
            r = run_ordering(pool, order, StrategyConfig(name=strategy), train, seed, cache=cache)
            acc.setdefault(tuple(order), []).append(r.rmatrix.acc())
    return {k: statistics.mean(v) for k, v in acc.items()}


def load_truth(path: Path, strategy: str, pool: str) -> dict[tuple, float] | None:
    """Read bench/order_effect.py's JSON: per (pool, strategy, seed) the ACC of every ordering."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    per: dict[tuple, list[float]] = {}
    for entry in data.get("runs", []):
        if entry.get("pool") != pool or entry.get("strategy") != strategy:
            continue
        for o in entry["orderings"]:
            per.setdefault(tuple(o["order"]), []).append(o["acc"])
    return {k: statistics.mean(v) for k, v in per.items()} or None


def trials_to_hit(truth: dict[tuple, float], sampler: optuna.samplers.BaseSampler, within: float, cap: int) -> int:
    tasks = list(next(iter(truth)))
    tasks.sort()
    space = SearchSpace(tasks, ["naive"], fixed_lambda=None)
    best = max(truth.values())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for n in range(1, cap + 1):
        trial = study.ask()
        order = space.suggest(trial).order
        value = truth[tuple(order)]
        study.tell(trial, value)
        if value >= best - within:
            return n
    return cap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--truth", type=Path, default=Path("/tmp/lllbench/order_effect.json"))
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--strategy", default="naive")
    ap.add_argument("--within", type=float, default=0.5, help="ACC points from the best that count as a hit")
    ap.add_argument("--reps", type=int, default=21, help="sampler seeds (median reported)")
    ap.add_argument("--cap", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="compute a 4-task truth table with 2 epochs")
    args = ap.parse_args()

    t0 = time.perf_counter()
    truth = None if args.quick else load_truth(args.truth, args.strategy, args.pool)
    source = f"{args.truth}"
    if truth is None:
        if args.quick:
            from tasks.registry import load_pool

            names = load_pool(args.pool).names[:4]
            print(f"--quick: exhaustive over 4 tasks {names}, 2 epochs, seed 0 (not the README numbers)")
            full = exhaustive_truth(args.pool, args.strategy, [0], 2)
            truth = {}
            for k, v in full.items():
                sub = tuple(t for t in k if t in names)
                truth.setdefault(sub, v)
        else:
            truth = exhaustive_truth(args.pool, args.strategy, [0, 1], None)
        source = "computed here"
    best_order, best = max(truth.items(), key=lambda kv: kv[1])
    hits = sum(v >= best - args.within / 100 for v in truth.values())
    within = args.within / 100
    print(
        f"ground truth: {len(truth)} orderings of {args.pool} ({args.strategy}; {source}); "
        f"best ACC {best * 100:.2f} {list(best_order)}; {hits} within {args.within} points"
    )
    tpe = [trials_to_hit(truth, make_sampler(s), within, args.cap) for s in range(args.reps)]
    rnd = [trials_to_hit(truth, optuna.samplers.RandomSampler(seed=s), within, args.cap) for s in range(args.reps)]
    m_tpe, m_rnd = statistics.median(tpe), statistics.median(rnd)
    print(f"trials to reach within {args.within} ACC points of the best (median over {args.reps} seeds):")
    print(f"  TPE (lll's sampler)  {m_tpe:6.1f}   all: {sorted(tpe)}")
    print(f"  random orderings     {m_rnd:6.1f}   all: {sorted(rnd)}")
    print(f"ratio TPE/random = {m_tpe / m_rnd:.2f} (target ≤ 0.5)   [{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()
