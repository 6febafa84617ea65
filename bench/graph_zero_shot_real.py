"""The zero-shot pick on pools without a ground truth: permuted-mnist-10 and rotated-mnist-10.

For each pool: measure the affinity graph as `lll affinity` does (T² task-trainings on Ray, seed
0, naive, 2 workers), take the zero-shot pick (search/graph/zero_shot.py, with the "too noisy"
verdict `lll affinity --recommend` prints), and train on fresh seeds (never used to choose it) the
pick, the pool's own order and ``--randoms`` random orderings (numpy seed 0); report the pick's
fresh-seed ACC against the pool's order and the random ones (median, quartiles, the pick's rank),
and the cost in task-trainings of the graph against that of the fresh-seed evaluation.
The published rules' orderings (search/graph/rules.py) are judged beside them; the JSON keeps the
graph's pair arrays, Spearman's ρ of the zero-shot scores against the fresh-seed ACC over every
judged ordering, and what random search would spend to reach the pick's fresh ACC.
The fresh-seed trainings run in this process through ``pipeline.runner.run_seeds`` with one
intra-op thread — the path of `lll run --seeds 100,101` — sharing prefixes in a memory cache.

Full run: 2 pools × (100 + 22 orderings × 10 tasks × 2 seeds) task-trainings at the pools'
defaults (1,000/500 images per task, 10 epochs): 13.5 min wall under ``nice -n 10`` on a shared
2-core machine (2026-12-04), so nothing is reduced. ``--quick``: the first 4 tasks, 60/40 images,
1 epoch, 3 random orderings, 1 fresh seed (a smoke test; writes nothing unless ``--out``).

    python bench/graph_zero_shot_real.py --quick   # smoke test (also: python bench/graph_zero_shot.py --real --quick)
    nice -n 10 python bench/graph_zero_shot_real.py   # both pools at their defaults; writes key "real"
    python bench/graph_zero_shot_real.py --strategy ewc   # the same with EWC (default λ); key "real_ewc"
    python bench/graph_zero_shot_real.py --seeds 102,103 --out bench/out/graph_zero_shot_real_seeds102-103.json

Writes the key ``real`` of bench/out/graph_zero_shot.json (every other key kept).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # a shared machine: numpy's pick math on one core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import common
import numpy as np

POOLS = ("permuted-mnist-10", "rotated-mnist-10")
FRESH_SEEDS = (100, 101)
RANDOMS = 20
GRAPH_SEED = 0
WORKERS = 2


def _pool(name: str, quick: bool):
    from tasks.pool import PoolSpec
    from tasks.registry import resolve_pool_spec

    spec = resolve_pool_spec(name, None, 60 if quick else None, 40 if quick else None)
    if quick:
        d = spec.model_dump(mode="json")
        d["tasks"] = d["tasks"][:4]
        spec = PoolSpec.model_validate(d)
    return spec


def fresh_acc(pool, order: list[str], strategy, train, seeds: list[int], cache) -> tuple[dict[str, float], int]:
    """ACC of ``order`` on each fresh seed (and their mean) and the task-trainings it took, as
    `lll run --seeds` trains it: every seed side by side with one intra-op thread."""
    import torch

    from pipeline.runner import run_seeds
    from pipeline.workers import WORKER_THREADS

    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    try:
        results = run_seeds(pool, list(order), strategy, train, list(seeds), cache)
    finally:
        torch.set_num_threads(threads)
    acc = {str(s): float(r.rmatrix.acc()) for s, r in zip(seeds, results, strict=True)}
    acc["mean"] = float(np.mean([acc[str(s)] for s in seeds]))
    return acc, sum(r.trained for r in results)


def rank_among(value: float, others: list[float]) -> int:
    """1-based rank of ``value`` among ``others`` plus itself (1 = best; ties count in its favour)."""
    return int(sum(o > value for o in others)) + 1


def measure_and_pick(name: str, quick: bool, strategy_name: str = "naive") -> tuple:
    """`lll affinity --recommend` on one pool: the T² trainings on Ray and the zero-shot pick."""
    from pipeline.config import StrategyConfig, TrainConfig
    from search.graph.affinity import build_graph
    from search.graph.zero_shot import zero_shot_pick
    from search.study.affinity_runs import measure_affinity

    spec = _pool(name, quick)
    names = [t.name for t in spec.tasks]
    train = TrainConfig(**{**spec.train, **({"epochs": 1} if quick else {}), "device": "cpu"})
    strategy = StrategyConfig(name=strategy_name)
    meas = measure_affinity(spec.model_dump_json(), names, strategy, train, [GRAPH_SEED], workers=WORKERS)
    print(f"{name}: graph measured, {meas.trained} task-trainings in {meas.seconds:.0f} s", flush=True)
    graph = build_graph(names, meas.evidence(), meta={"strategy": strategy_name})
    return spec, names, train, strategy, meas, graph, zero_shot_pick(graph, strategy_name)


def graph_arrays(graph) -> dict:
    """The pair evidence the pick came from (search/graph/zero_shot.py PairArrays), kept so the
    zero-shot scores of any ordering can be recomputed from the JSON alone."""
    from search.graph.zero_shot import PairArrays

    a = PairArrays.from_graph(graph)
    arr = {k: np.round(getattr(a, k), 6).tolist() for k in ("init", "base", "pair", "learned")}
    return {"tasks": list(a.tasks), **arr, "seeds": a.seeds}


def zero_shot_fit(graph, orders: dict[str, list[str]], fresh: dict[str, float], strategy: str = "naive") -> dict:
    """How the zero-shot scores rank the orderings that were trained on fresh seeds: Spearman's ρ
    of the consensus score (what the pick maximises) and of the reference graph model's predicted
    ACC against the fresh-seed mean ACC, over every ordering judged (pick, pool order, rules,
    randoms)."""
    import common

    from search.graph.model import GraphModel
    from search.graph.zero_shot import Ensemble, PairArrays

    arrays = PairArrays.from_graph(graph)
    keys = list(orders)
    perms = GraphModel.from_graph(graph).index(orders[k] for k in keys)
    score = Ensemble.build(arrays, strategy).score(perms)
    predicted = GraphModel.from_graph(graph, strategy=strategy).predict_perms(perms)
    y = [fresh[k] for k in keys]
    return {"orderings": len(keys), "spearman_consensus": common.spearman(score, y),
            "spearman_graph_model": common.spearman(predicted, y)}  # fmt: skip


def random_search_cost(pick: float, randoms: list[float], per_ordering: int) -> dict:
    """What random search spends to train an ordering at least as good as the pick on the same
    fresh seeds, read off the judged random orderings: drawing them without replacement, the
    expected draws until the first of the k at least as good is (N + 1) / (k + 1) (with k = 0: more
    than N, reported as N + 1) — a lower bound for a real search, which sees its own seeds' noisy
    values, not the fresh ones."""
    k, n = sum(v >= pick for v in randoms), len(randoms)
    draws = (n + 1) / (k + 1)
    return {"at_least_as_good": k, "of": n, "expected_draws": draws,
            "expected_task_trainings": draws * per_ordering}  # fmt: skip


def real_search(
    name: str, quick: bool = False, randoms: int = RANDOMS, seeds: tuple[int, ...] = FRESH_SEEDS, strategy_name="naive"
) -> dict:
    """One pool: the graph, the pick and its verdict, fresh-seed ACC of the pick, the pool's order
    and ``randoms`` random orderings, and the cost of each part in task-trainings."""
    from pipeline.runner import MemoryPrefixCache
    from search.graph.rules import dissimilarity_from_graph, rule_orderings
    from search.graph.zero_shot import AGREEMENT_MIN, TRUST_RATIO
    from tasks.pool import build_pool

    t0 = time.perf_counter()
    spec, names, train, strategy, meas, graph, pick = measure_and_pick(name, quick, strategy_name)
    t_pick = time.perf_counter()
    rng = np.random.default_rng(0)
    randoms = min(randoms, 3) if quick else randoms
    others = [[str(a) for a in rng.permutation(names)] for _ in range(randoms)]
    pool = build_pool(spec)
    seeds = list(seeds[:1] if quick else seeds)
    cache = MemoryPrefixCache()
    pick_acc, n_pick = fresh_acc(pool, pick.order, strategy, train, seeds, cache)
    pool_acc, n_pool = fresh_acc(pool, names, strategy, train, seeds, cache)
    print(f"{name}: pick {pick_acc}, pool order {pool_acc} [{time.perf_counter() - t0:.0f} s]", flush=True)
    rules = {r: o for r, (o, _) in rule_orderings(names, dissimilarity_from_graph(graph)).items()}
    rule_runs = {r: fresh_acc(pool, o, strategy, train, seeds, cache) for r, o in rules.items()}
    print(f"{name}: rules { ({r: a['mean'] for r, (a, _) in rule_runs.items()}) }", flush=True)
    runs = []
    for i, o in enumerate(others):
        runs.append(fresh_acc(pool, o, strategy, train, seeds, cache))
        print(f"{name}: random {i + 1}/{len(others)} {runs[-1][0]} [{time.perf_counter() - t0:.0f} s]", flush=True)
    random_acc = [a["mean"] for a, _ in runs]
    q25, q50, q75 = (float(v) for v in np.percentile(random_acc, [25, 50, 75]))
    if pick.trusted:
        verdict = "trusted"
    elif pick.noise_ratio > TRUST_RATIO:
        verdict = f"too noisy (ratio {pick.noise_ratio:.2f} > {TRUST_RATIO:.2f})"
    else:
        verdict = f"readings disagree (agreement {pick.agreement:.2f} < {AGREEMENT_MIN:.2f})"
    judged = {"pick": pick.order, "pool order": names, **{f"rule {r}": o for r, o in rules.items()},
              **{f"random {i}": o for i, o in enumerate(others)}}  # fmt: skip
    fresh_means = {"pick": pick_acc["mean"], "pool order": pool_acc["mean"],
                   **{f"rule {r}": a["mean"] for r, (a, _) in rule_runs.items()},
                   **{f"random {i}": a["mean"] for i, (a, _) in enumerate(runs)}}  # fmt: skip
    return {
        "tasks": names,
        "pick": pick.order,
        "pick_acc": pick_acc,
        "pool_order_acc": pool_acc,
        "random_acc": {"median": q50, "q25": q25, "q75": q75, "min": min(random_acc), "max": max(random_acc),
                       "n": len(random_acc), "each_mean": random_acc},
        "random_orders": others,
        "random_acc_by_seed": [{s: v for s, v in a.items() if s != "mean"} for a, _ in runs],
        "rules": {r: {"order": rules[r], "acc": a, "rank_among_randoms": rank_among(a["mean"], random_acc)}
                  for r, (a, _) in rule_runs.items()},
        "pick_rank_among_randoms": rank_among(pick_acc["mean"], random_acc),
        "pool_order_rank_among_randoms": rank_among(pool_acc["mean"], random_acc),
        "rank_of": len(random_acc) + 1,
        "pick_minus_pool_order": pick_acc["mean"] - pool_acc["mean"],
        "pick_minus_random_median": pick_acc["mean"] - q50,
        "predicted_acc": pick.predicted,
        "predicted_interval": list(pick.interval),
        "noise_ratio": pick.noise_ratio,
        "agreement": pick.agreement,
        "trusted": pick.trusted,
        "zero_shot_fit": zero_shot_fit(graph, judged, fresh_means, strategy_name),
        "random_search_cost_to_pick": random_search_cost(pick_acc["mean"], random_acc, len(names) * len(seeds)),
        "graph": graph_arrays(graph),
        "recommend_says": verdict,
        "stability": pick.stability,
        "how": pick.how,
        "cost_task_trainings": {"graph": meas.trained, "graph_rebuilt": meas.rebuilt,
                                "fresh_evaluation": n_pick + n_pool + sum(n for _, n in [*runs, *rule_runs.values()]),
                                "fresh_per_ordering": len(names) * len(seeds)},
        "seconds": {"graph": meas.seconds, "ray_start_and_pick": t_pick - t0 - meas.seconds,
                    "fresh": time.perf_counter() - t_pick},
        "fresh_seeds": seeds,
        "train": train.model_dump(mode="json"),
        "train_per_task": spec.train_per_task,
        "test_per_task": spec.test_per_task,
    }  # fmt: skip


def line(name: str, r: dict) -> str:
    """One pool's result in one line."""
    return (
        f"{name}: pick {','.join(r['pick'])} ACC {r['pick_acc']['mean']:.4f} ({r['recommend_says']}); "
        f"pool order {r['pool_order_acc']['mean']:.4f}; randoms median {r['random_acc']['median']:.4f} "
        f"[{r['random_acc']['q25']:.4f}, {r['random_acc']['q75']:.4f}]; pick rank "
        f"{r['pick_rank_among_randoms']} of {r['rank_of']}; "
        f"zero-shot ρ {r['zero_shot_fit']['spearman_consensus']:+.2f} "
        f"over {r['zero_shot_fit']['orderings']} orderings; random search to the pick's ACC "
        f"{r['random_search_cost_to_pick']['expected_draws']:.1f} orderings; cost {r['cost_task_trainings']}; "
        f"{sum(r['seconds'].values()):.0f} s"
    )


def real_searches(
    quick: bool = False,
    randoms: int = RANDOMS,
    seeds: tuple[int, ...] = FRESH_SEEDS,
    pools: tuple[str, ...] = POOLS,
    done: Callable[[str, dict], None] | None = None,
    strategy: str = "naive",
) -> dict:
    """Every pool of ``pools`` (``done(name, result)`` after each), then the embedded Ray stopped
    (the affinity runs started it)."""
    from search.study.cluster import shutdown

    out = {}
    try:
        for name in pools:
            out[name] = real_search(name, quick, randoms, seeds, strategy)
            print(line(name, out[name]), flush=True)
            if done is not None:
                done(name, out[name])
    finally:
        shutdown()
    return out


def write_real(path: Path, name: str, result: dict, key: str = "real") -> None:
    """Set ``key.pools[name]`` of the JSON at ``path``, keeping every other key and pool."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.setdefault(key, {}).setdefault("pools", {})[name] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def reduced(quick: bool, randoms: int, seeds: tuple[int, ...]) -> str:
    """What this run left out against the full protocol (2 fresh seeds, 20 random orderings)."""
    if quick:
        return "quick smoke test: 4 tasks, 60/40 images, 1 epoch, 3 random orderings, 1 fresh seed"
    cut = [f"{randoms} random orderings instead of {RANDOMS}"] if randoms < RANDOMS else []
    cut += [f"{len(seeds)} fresh seed(s) instead of {len(FRESH_SEEDS)}"] if len(seeds) < len(FRESH_SEEDS) else []
    return "; ".join(cut) or "none: the pools' defaults, every ordering on every fresh seed"


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="4 tasks, tiny data: a smoke test")
    ap.add_argument("--randoms", type=int, default=RANDOMS, help="random orderings (numpy seed 0)")
    ap.add_argument("--seeds", default=",".join(map(str, FRESH_SEEDS)), help="fresh seeds, comma-separated")
    ap.add_argument("--pools", default=",".join(POOLS), help=f"comma-separated, of {', '.join(POOLS)}")
    ap.add_argument("--strategy", default="naive", help="what the graph and every ordering train with")
    ap.add_argument("--out", type=Path, default=None, help="JSON whose key 'real' is written (default: "
                    "bench/out/graph_zero_shot.json; --quick writes nothing without it)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 100,101")
    from pipeline.strategies import STRATEGIES

    if args.strategy not in STRATEGIES:
        ap.error(f"--strategy {args.strategy!r}: one of {', '.join(sorted(STRATEGIES))}")
    pools = tuple(p for p in args.pools.split(",") if p.strip())
    if not seeds or args.randoms < 1 or not pools or set(pools) - set(POOLS):
        ap.error(f"--seeds and --pools (of {', '.join(POOLS)}) need at least one each, --randoms at least 1")
    out = args.out or (None if args.quick else common.OUT / "graph_zero_shot.json")
    argv_text = " ".join(sys.argv if argv is None else [sys.argv[0], *argv])
    run = {
        "command": (f"nice -n {os.nice(0)} " if os.nice(0) else "") + f"python {argv_text}",
        "config": {"strategy": args.strategy, "graph_seeds": [GRAPH_SEED], "affinity_workers": WORKERS,
                   "fresh_seeds": list(seeds[:1] if args.quick else seeds), "randoms": args.randoms,
                   "random_orderings_rng": "numpy default_rng(0).permutation", "quick": args.quick,
                   "fresh_path": "pipeline.runner.run_seeds, one intra-op thread (as `lll run --seeds`)"},
        "reduced": reduced(args.quick, args.randoms, seeds),
    }  # fmt: skip

    def done(name: str, result: dict) -> None:
        if out is not None:
            when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            write_real(out, name, {**run, "date": when, **result}, key)
            print(f"wrote {key}.pools[{name!r}] of {out}", flush=True)

    key = "real" if args.strategy == "naive" else f"real_{args.strategy}"
    real_searches(args.quick, args.randoms, seeds, pools, done, args.strategy)


if __name__ == "__main__":
    main()
