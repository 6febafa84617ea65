"""The T² pair trainings of mixed-mnist-7 on fresh seeds, cached for bench/graph_zero_shot.py.

`lll affinity` trains every task alone and every ordered pair (7 + 42 task-trainings per seed). The
zero-shot benchmark needs those trainings at each ground truth's own config (bench/ground_truth.py
CONFIGS: ``cheap`` and ``defaults``) on seeds that none of the truths uses, so that the pick is
judged on seeds it never saw. Each pair [a, b] is trained through :func:`common.train_orderings`
(Ray workers, the scheduler, the prefix cache: the code `lll affinity` and the ground truth run), and
its accuracy rows after [], [a] and [a, b] are kept as a prefix tree, the same shape as a truth's.

    python bench/graph_pairs.py                                  # both configs, naive + EWC, seeds 100-102
    python bench/graph_pairs.py --config defaults --strategy naive --seeds 100,101,102

Writes bench/out/graph_pairs_<config>.json: {"config", "seeds": {strategy: {seed: {prefix: row}}},
"cost": ...}; seeds already there are skipped, so it resumes.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import common
from ground_truth import CONFIGS, configs_json, load_pool

SEEDS = (100, 101, 102)


def out_path(config: str) -> Path:
    return common.OUT / f"graph_pairs_{config}.json"


def load_pairs(config: str) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """strategy → seed → prefix ("", "a", "a,b") → accuracy on every task; empty when not trained."""
    path = out_path(config)
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return {s: {int(k): v for k, v in seeds.items()} for s, seeds in doc["seeds"].items()}


def train_pairs(config: str, strategy: str, seed: int, workers: int = 2) -> tuple[dict, dict]:
    """One seed's prefix tree of the 42 pair orderings (which hold the 7 single ones)."""
    cfg = CONFIGS[config]
    spec = load_pool(cfg)
    names = [t.name for t in spec.tasks]
    sj, tj = configs_json(cfg, strategy, False)
    tree: dict[str, dict[str, float]] = {}

    def on_done(order, res) -> None:
        for i in range(3):
            tree.setdefault(",".join(order[:i]), {k: round(v, 5) for k, v in res["rows"][i].items()})

    orders = list(itertools.permutations(names, 2))
    stats = common.train_orderings(
        spec.model_dump_json(), orders, sj, tj, seed, on_done, workers=workers, population=cfg["population"]
    )
    return tree, {"trained": stats["trained"], "wall_s": round(stats["wall_s"], 1)}


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--config", choices=sorted(CONFIGS), action="append")
    ap.add_argument("--strategy", choices=["naive", "ewc"], action="append")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    for config in args.config or sorted(CONFIGS):
        path = out_path(config)
        doc = json.loads(path.read_text()) if path.exists() else {"config": config, "seeds": {}, "cost": {}}
        for strategy in args.strategy or ["naive", "ewc"]:
            for seed in seeds:
                if str(seed) in doc["seeds"].get(strategy, {}):
                    continue
                t0 = time.perf_counter()
                tree, cost = train_pairs(config, strategy, seed, args.workers)
                doc["seeds"].setdefault(strategy, {})[str(seed)] = tree
                doc["cost"][f"{strategy}/{seed}"] = cost
                path.write_text(json.dumps(doc) + "\n")
                print(f"{config} {strategy} seed {seed}: {cost} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("done")


if __name__ == "__main__":
    main()
