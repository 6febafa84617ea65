"""How many trials does the search need to find a near-best ordering, Optuna's TPE vs random?

Ground truth: the final ACC of every ordering of the default pool (exhaustive enumeration through the
prefix cache, averaged over seeds), read from bench/order_effect.py's JSON or computed here through
the scheduler (common.train_every_ordering, as order_effect.py's default).
Then each sampler proposes orderings one trial at a time through lll's own search space (Lehmer code,
`search.study.storage.make_sampler`), and each proposed ordering is *looked up* in the ground-truth table —
the measured ACC of that ordering, not a model of it — until one within --within points of the best
is proposed. Median over --reps sampler seeds, for naive and EWC. Target: TPE needs at most half the trials of random.

    python bench/order_effect.py --out /tmp/lllbench/order_effect.json     # the ground truth (~30 min)
    python bench/search_efficiency.py --truth /tmp/lllbench/order_effect.json
    python bench/search_efficiency.py --quick --reps 5    # smoke test: 4-task truth computed here, 2 epochs
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import common
import optuna

from search.orders.space import SearchSpace
from search.study.storage import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def exhaustive_truth(
    pool_name: str, strategy: str, seeds: list[int], epochs: int | None, tasks: int | None = None
) -> dict[tuple, float]:
    """Seed-mean ACC of every ordering of the pool's (first ``tasks``) tasks, trained here."""
    from pipeline.config import StrategyConfig, TrainConfig
    from pipeline.rmatrix import RMatrix
    from tasks.registry import load_pool

    pool = load_pool(pool_name)
    train = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    acc: dict[tuple, list[float]] = {}
    for seed in seeds:
        sj, tj = StrategyConfig(name=strategy).model_dump_json(), train.model_dump_json()
        rows, _ = common.train_every_ordering(pool.spec.model_dump_json(), pool.names[:tasks], sj, tj, seed, 2, 1)
        for order, got in rows.items():
            acc.setdefault(order, []).append(RMatrix.from_rows(order, got).acc())
    return {k: statistics.mean(v) for k, v in acc.items()}


def load_truth(path: Path, strategy: str, pool: str) -> dict[tuple, float] | None:
    """Read bench/order_effect.py's --out JSON: the seed-mean ACC of every ordering of (pool, strategy)."""
    runs = common.enumeration_runs(common.load_truth(path), pool, strategy) if path.exists() else None
    if not runs:
        return None
    per: dict[tuple, list[float]] = {}
    for seed in sorted(runs):
        for order, run in runs[seed].items():
            per.setdefault(order, []).append(run["acc"])
    return {k: statistics.mean(v) for k, v in per.items()}


def trials_to_hit(
    truth: dict[tuple, float],
    sampler: optuna.samplers.BaseSampler,
    within: float,
    cap: int,
    prefix_first: bool = False,
) -> tuple[int, int]:
    """Trials (and distinct orderings among them) until one within ``within`` of the best is proposed.

    Distinct orderings are what a search really trains: a repeated ordering is answered from the
    prefix cache of the worker that ran it. ``prefix_first`` reads the code the other way round
    (c_0 = the first task), lll's encoding before it was turned suffix first, for comparison."""
    tasks = sorted(next(iter(truth)))
    space = SearchSpace(tasks, ["naive"], fixed_lambda=None)
    best = max(truth.values())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen: set[tuple] = set()
    for n in range(1, cap + 1):
        trial = study.ask()
        order = tuple(space.suggest(trial).order)
        if prefix_first:
            order = order[::-1]
        seen.add(order)
        value = truth[order]
        study.tell(trial, value)
        if value >= best - within:
            return n, len(seen)
    return cap, len(seen)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--truth", type=Path, default=Path("/tmp/lllbench/order_effect.json"))
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--strategies", default="naive,ewc", help="one study per strategy's ground truth")
    ap.add_argument("--within", type=float, default=0.5, help="ACC points from the best that count as a hit")
    ap.add_argument("--reps", type=int, default=51, help="sampler seeds (median reported)")
    ap.add_argument("--cap", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="compute a 4-task truth table with 2 epochs")
    args = ap.parse_args()
    for strategy in args.strategies.split(","):
        compare(args, strategy)


def compare(args: argparse.Namespace, strategy: str) -> None:
    t0 = time.perf_counter()
    truth = None if args.quick else load_truth(args.truth, strategy, args.pool)
    source = f"{args.truth}"
    if truth is None:
        if args.quick:
            print(f"--quick: every ordering of the first 4 tasks of {args.pool}, 2 epochs, seed 0 (not the results)")
            truth = exhaustive_truth(args.pool, strategy, [0], 2, tasks=4)
        else:
            truth = exhaustive_truth(args.pool, strategy, [0, 1], None)
        source = "computed here"
    best_order, best = max(truth.items(), key=lambda kv: kv[1])
    within = args.within / 100
    hits = sum(v >= best - within for v in truth.values())
    print(
        f"\nground truth: {len(truth)} orderings of {args.pool} ({strategy}; {source}); "
        f"best ACC {best * 100:.2f} {list(best_order)}; {hits} within {args.within} points"
    )
    rows = {
        "TPE, lll's search space": [trials_to_hit(truth, make_sampler(s), within, args.cap) for s in range(args.reps)],
        "TPE, code read prefix first, 10 start-up trials": [
            trials_to_hit(
                truth,
                optuna.samplers.TPESampler(seed=s, constant_liar=True, multivariate=True, n_startup_trials=10),
                within,
                args.cap,
                prefix_first=True,
            )
            for s in range(args.reps)
        ],
        "random orderings": [
            trials_to_hit(truth, optuna.samplers.RandomSampler(seed=s), within, args.cap) for s in range(args.reps)
        ],
    }
    print(f"trials to reach within {args.within} ACC points of the best (median over {args.reps} sampler seeds):")
    medians = {}
    for label, res in rows.items():
        trials, distinct = [r[0] for r in res], [r[1] for r in res]
        medians[label] = (statistics.median(trials), statistics.median(distinct))
        print(f"  {label:<48s} {medians[label][0]:6.1f} trials, {medians[label][1]:6.1f} distinct orderings")
    (t_lll, d_lll), (t_rnd, d_rnd) = medians["TPE, lll's search space"], medians["random orderings"]
    print(
        f"ratio TPE/random = {t_lll / t_rnd:.2f} in trials, {d_lll / d_rnd:.2f} in distinct orderings "
        f"(target ≤ 0.5)   [{time.perf_counter() - t0:.0f} s]"
    )


if __name__ == "__main__":
    main()
