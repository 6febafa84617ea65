"""Where does each strategy's default λ sit? ACC and BWT over a log grid of λ on the default pool.

A regulariser with too small a λ forgets like naive; with too large a λ it cannot learn the next
task. Each strategy's ``default_lam`` should sit where ACC is best while BWT still beats naive, and
its ``lam_range`` (what `lll search` samples log-uniformly) should bracket that region. For every
strategy this trains the pool's own order and its reverse on each seed (through ``run_ordering``,
the code path of a real run) at ``--points`` λ values spread log-evenly over the strategy's range,
plus its default, and prints mean ACC / BWT per λ; ``*`` marks the default.

    python bench/lambda_sweep.py                        # all λ strategies, 5 points each (~30 min)
    python bench/lambda_sweep.py --points 0             # defaults only (docs/results.md's table, ~6 min)
    python bench/lambda_sweep.py --strategies ewc,si --points 7
"""

from __future__ import annotations

import math
import statistics
import time

import common
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from pipeline.strategies import strategy_class
from tasks.registry import load_pool

CLASSIC = "naive,joint,l2,ewc,online-ewc,si,mas,gem,agem,lwf,replay"


def grid(lo: float, hi: float, points: int) -> list[float]:
    """``points`` values spread log-evenly over [lo, hi] (both ends included)."""
    if points <= 0:
        return []
    if points == 1:
        return [math.sqrt(lo * hi)]
    step = (math.log(hi) - math.log(lo)) / (points - 1)
    return [float(f"{math.exp(math.log(lo) + i * step):.3g}") for i in range(points)]


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--strategies", default=CLASSIC)
    ap.add_argument("--points", type=int, default=5, help="λ values per strategy besides the default (0: default)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    pool = load_pool(args.pool)
    seeds = [int(s) for s in args.seeds.split(",")]
    orders = [list(pool.names), list(reversed(pool.names))]
    train = TrainConfig(device="cpu")
    print(f"pool {pool.name}; orders {[','.join(o) for o in orders]}; seeds {seeds}; mean ACC / BWT (points)")

    start = time.perf_counter()
    for name in args.strategies.split(","):
        cls = strategy_class(name)
        default = cls.default_lam
        lams: list[float | None] = [None]
        if default is not None and cls.lam_range is not None:
            lams = sorted({default, *grid(*cls.lam_range, args.points)})
        cells = []
        for lam in lams:
            acc, bwt = [], []
            for seed in seeds:
                for order in orders:
                    r = run_ordering(pool, order, StrategyConfig(name=name, lam=lam), train, seed).rmatrix
                    acc.append(100 * r.acc())
                    bwt.append(100 * r.bwt())
            mark = "*" if lam == default and len(lams) > 1 else ""
            label = "" if lam is None else f"λ={lam:g}{mark} "
            cells.append(f"{label}{statistics.mean(acc):.1f} / {statistics.mean(bwt):+.1f}")
        print(f"{name:12s} " + "   ".join(cells), flush=True)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
