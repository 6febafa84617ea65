"""The zero-shot pick on pools without a ground truth: permuted-mnist-10 and rotated-mnist-10.

For each pool: measure the affinity graph as `lll affinity` does (T² task-trainings on Ray, seed
0, naive), take the zero-shot pick, and train on fresh seeds (never used to choose it) the pick, the
pool's own order and ``randoms`` random orderings; report the pick's fresh-seed ACC against the
pool's order and the median of the random ones, and what the graph cost in task-trainings.
The fresh-seed trainings run in this process through ``pipeline.runner.run_ordering`` (the path of
`lll run`), sharing prefixes in a memory cache.

Full run (not run by the issue's author; the lead decides): 2 pools × (100 + 22 orderings × 10 tasks
× 2 seeds) task-trainings at the pools' defaults. ``quick``: the first 4 tasks, 60/40 images,
1 epoch, 3 random orderings, 1 fresh seed (a smoke test).

    python bench/graph_zero_shot_real.py --quick   # smoke test (also: python bench/graph_zero_shot.py --real)
    python bench/graph_zero_shot_real.py           # both pools at their defaults (hours of CPU)
"""

from __future__ import annotations

import statistics
import time

import common
import numpy as np

POOLS = ("permuted-mnist-10", "rotated-mnist-10")
FRESH_SEEDS = (100, 101)


def _pool(name: str, quick: bool):
    from tasks.pool import PoolSpec
    from tasks.registry import resolve_pool_spec

    spec = resolve_pool_spec(name, None, 60 if quick else None, 40 if quick else None)
    if quick:
        d = spec.model_dump(mode="json")
        d["tasks"] = d["tasks"][:4]
        spec = PoolSpec.model_validate(d)
    return spec


def real_search(name: str, quick: bool = False, randoms: int = 20) -> dict:
    """One pool: the graph, the pick, and fresh-seed ACC of the pick, the pool's order and random ones."""
    from pipeline.config import StrategyConfig, TrainConfig
    from pipeline.runner import MemoryPrefixCache, run_ordering
    from search.graph.affinity import build_graph
    from search.graph.zero_shot import zero_shot_pick
    from search.study.affinity_runs import measure_affinity
    from tasks.pool import build_pool

    t0 = time.perf_counter()
    spec = _pool(name, quick)
    names = [t.name for t in spec.tasks]
    train = TrainConfig(**{**spec.train, **({"epochs": 1} if quick else {}), "device": "cpu"})
    strategy = StrategyConfig(name="naive")
    meas = measure_affinity(spec.model_dump_json(), names, strategy, train, [0], workers=2)
    graph = build_graph(names, meas.evidence(), meta={"strategy": "naive"})
    pick = zero_shot_pick(graph, "naive")
    rng = np.random.default_rng(0)
    randoms = min(randoms, 3) if quick else randoms
    others = [list(rng.permutation(names)) for _ in range(randoms)]
    pool = build_pool(spec)
    seeds = FRESH_SEEDS[:1] if quick else FRESH_SEEDS
    cache = MemoryPrefixCache()

    def fresh(order: list[str]) -> float:
        return float(np.mean([run_ordering(pool, order, strategy, train, s, cache).rmatrix.acc() for s in seeds]))

    pick_acc, pool_acc = fresh(pick.order), fresh(names)
    random_acc = [fresh(o) for o in others]
    summary = {
        "pick_fresh_acc": pick_acc,
        "pool_order_acc": pool_acc,
        "random_median_acc": statistics.median(random_acc),
        "pick_beats_random_share": float(np.mean([pick_acc > r for r in random_acc])),
        "graph_task_trainings": meas.trained,
    }
    return {"summary": summary, "pick": pick.order, "predicted": pick.predicted, "stability": pick.stability,
            "random_acc": random_acc, "fresh_seeds": list(seeds), "seconds": time.perf_counter() - t0}  # fmt: skip


def real_searches(quick: bool = False) -> dict:
    out = {}
    for name in POOLS:
        out[name] = real_search(name, quick)
        print(f"{name}: {out[name]['summary']}", flush=True)
    return out


if __name__ == "__main__":
    ap = common.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="4 tasks, tiny data: a smoke test")
    real_searches(quick=ap.parse_args().quick)
