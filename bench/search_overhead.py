"""Orderings per second: `lll search` end to end (2 Ray workers, Optuna, MLflow logging, checkpoints)
vs the plain training loop training the same kind of orderings one after another in one process.

Three measurements in one run, on the default pool with the naive strategy and default training:
  plain        run_ordering() in this process, no cache, on --plain distinct orderings
  search       `lll search --trials N --cache-mb 0` (cache off), whole command wall time
  exhaustive   `lll search --exhaustive` (all T! orderings through the prefix cache)
Targets: search/plain ≥ 0.8 and exhaustive/plain > 1.5. The whole command is timed, Ray start-up,
pool loading and MLflow store creation included. The plain loop is deliberately ``run_ordering``
one ordering after another in this process (no scheduler, no cache): it is the baseline the search
is measured against; the search itself runs as the real `lll search` command.

    python bench/search_overhead.py [--trials 24] [--plain 12] [--pool mixed-mnist]
    python bench/search_overhead.py --quick     # 3 epochs, 8 trials, 4 plain orderings, no exhaustive
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time

import common

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from tasks.registry import load_pool


def plain_rate(pool_name: str, n: int, epochs: int | None) -> float:
    pool = load_pool(pool_name)
    orders = common.all_orderings(pool.names)
    random.Random(0).shuffle(orders)
    train = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    t0 = time.perf_counter()
    for order in orders[:n]:
        run_ordering(pool, list(order), StrategyConfig(name="naive"), train, 0)
    return n / (time.perf_counter() - t0)


def search_rate(args: list[str], trials: int) -> float:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "search.cli.app", "search", *args, "--validate", "0"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        dt = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"lll search failed:\n{res.stderr[-3000:]}")
        summary = [ln for ln in res.stdout.splitlines() if ln.startswith(("study", "task-trainings"))]
        print("   " + "\n   ".join(summary))
    return trials / dt


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--plain", type=int, default=12, help="orderings timed for the plain loop")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="3 epochs, 8 trials, 4 plain orderings, no exhaustive")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.trials, args.plain = 3, 8, 4
    # --max-seeds 1: no re-evaluation, the configuration every recorded run of this benchmark measured.
    base = ["--pool", args.pool, "--strategies", "naive", "--seeds", "1", "--max-seeds", "1", "--no-prune"]
    base += ["--workers", "2"]
    if args.epochs:
        base += ["--epochs", str(args.epochs)]

    print(f"plain loop, one process: {args.plain} orderings ...")
    plain = plain_rate(args.pool, args.plain, args.epochs)
    print(f"   {plain:.3f} orderings/s")
    print(f"lll search, 2 workers, cache off: {args.trials} trials ...")
    search = search_rate([*base, "--trials", str(args.trials), "--cache-mb", "0", "--study", "overhead"], args.trials)
    print(f"   {search:.3f} orderings/s")
    print(f"search / plain = {search / plain:.2f}  (target ≥ 0.8)")
    if not args.quick:
        n = len(common.all_orderings(load_pool(args.pool).names))
        print(f"lll search --exhaustive, 2 workers, prefix cache on: {n} orderings ...")
        exh = search_rate([*base, "--exhaustive", "--study", "exhaustive"], n)
        print(f"   {exh:.3f} orderings/s")
        print(f"exhaustive / plain = {exh / plain:.2f}  (target > 1.5)")


if __name__ == "__main__":
    main()
