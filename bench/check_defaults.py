"""Are the training defaults sane? Every pool task trained ALONE from scratch, under the defaults and
under one change at a time.

If a task cannot be learned on its own, no ordering can help it and the curriculum search would
only be measuring noise; if a setting barely matters, it is not what makes a task learnable. Each
task is run with ``run_ordering`` on a one-task order (so exactly the code path of a real run),
and its test accuracy is reported for: the defaults (10 epochs, He init, gradient clipping at 1.0,
SGD lr 0.01 momentum 0.9), 2 epochs, torch's default init instead of He, and no clipping. Mean over
seeds; tasks under 20% (chance is 10%) are flagged.

    python bench/check_defaults.py            # ~40 trainings, under a minute on one core
    python bench/check_defaults.py --quick    # one seed
"""

from __future__ import annotations

import statistics
import time

import common
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from tasks.registry import load_pool

NEAR_CHANCE = 0.20


def settings(base: TrainConfig) -> dict[str, TrainConfig]:
    """The defaults and one change at a time."""
    return {
        "defaults": base,
        "2 epochs": base.model_copy(update={"epochs": 2}),
        "torch init": base.model_copy(update={"init": "torch"}),
        "no clip": base.model_copy(update={"clip": None}),
    }


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--train-per-task", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one seed")
    args = ap.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]

    torch.set_num_threads(args.threads)
    pool = load_pool(args.pool, train_per_task=args.train_per_task)
    base = TrainConfig(device="cpu")
    configs = settings(base)
    n_train = len(next(iter(pool.tasks.values())).y_train)
    print(
        f"pool {pool.name}: each task trained alone from scratch, naive, {n_train} training images, "
        f"test accuracy, mean of seeds {seeds}; torch.set_num_threads({args.threads})"
    )
    print(f"defaults: {base.model_dump(exclude={'device'})}")

    start = time.perf_counter()
    acc: dict[tuple[str, str], list[float]] = {}
    for name in pool.names:
        for label, cfg in configs.items():
            for seed in seeds:
                result = run_ordering(pool, [name], StrategyConfig(name="naive"), cfg, seed)
                acc.setdefault((name, label), []).append(result.rows[-1][name])

    width = max(len(n) for n in pool.names) + 2
    print(f"\n{'task':{width}s}" + "".join(f"{label:>12s}" for label in configs))
    flagged = []
    for name in pool.names:
        cells = []
        for label in configs:
            mean = statistics.mean(acc[(name, label)])
            mark = "*" if mean < NEAR_CHANCE else " "
            if mean < NEAR_CHANCE:
                flagged.append(f"{name} ({label}: {mean:.1%})")
            cells.append(f"{mean:11.1%}{mark}")
        print(f"{name:{width}s}" + "".join(cells))
    means = [statistics.mean(statistics.mean(acc[(n, label)]) for n in pool.names) for label in configs]
    print(f"{'mean':{width}s}" + "".join(f"{m:11.1%} " for m in means))
    if len(seeds) > 1:
        (task, label), values = max(acc.items(), key=lambda kv: max(kv[1]) - min(kv[1]))
        print(
            f"largest seed-to-seed range in a cell: {max(values) - min(values):.1%} ({task}, {label}: "
            f"{', '.join(f'{v:.1%}' for v in values)})"
        )
    print(f"* near chance (< {NEAR_CHANCE:.0%}): {', '.join(flagged) if flagged else 'none'}")
    print(f"{len(acc) * len(seeds)} single-task trainings in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
