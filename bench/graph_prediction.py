"""Does the task-affinity graph predict which orderings are good?

On the default pool (mixed-mnist, 5 tasks, 120 orderings):

1. The graph is *measured* the way `lll affinity` does it — single-task and pair orderings on Ray
   TrialWorker actors through the prefix cache (T² = 25 task-trainings per seed) — with the same
   training config as the ground truth.
2. Ground truth: the final ACC of every ordering from an exhaustive enumeration, read from
   bench/order_effect.py's JSON (--truth; all 120 orderings for naive and ewc on seeds 0 and 1),
   or (--quick) enumerated here through the scheduler (common.train_every_ordering, as
   order_effect.py's default).
3. Rank correlation (Spearman) between the graph's path score of every ordering (default weights,
   no fitting) and the measured ACC — on the seed the graph was measured with, on a held-out seed,
   and on the seed mean; then with weights fitted on 24 random orderings (a default study's budget)
   and scored on the other 96 (out of sample), median over 20 draws.
4. Trials-to-best with and without --seed-from-graph: an Optuna study with the search's own
   sampler (search.study.storage.make_sampler) and search space, whose objective LOOKS UP the seed-mean ACC
   of the suggested ordering in the ground-truth table (no training: a simulated search). Seeded
   studies get the graph's top-k orderings enqueued first, exactly as `lll search
   --seed-from-graph` does. Median over several sampler seeds; a study that never suggests the
   best ordering within --max-trials counts as --max-trials (censored, reported).

    python bench/graph_prediction.py --truth /tmp/lllbench/order_effect.json --out graph_prediction.json
    python bench/graph_prediction.py --quick     # smoke test: 3 tasks, small data, own ground truth
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import common
import numpy as np
import optuna

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.rmatrix import RMatrix
from pipeline.strategies import strategy_class
from search.graph.affinity import build_graph
from search.graph.evidence import evidence_from_rows
from search.graph.paths import FEATURES, all_scores, best_orderings, fit_weights, path_features
from search.orders.space import SearchSpace
from search.study.affinity_runs import AffinityMeasurement, measure_affinity
from search.study.graph_seed import enqueue_orderings
from search.study.storage import make_sampler
from tasks.registry import load_pool

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def load_truth(path: Path, pool: str, strategy: str) -> tuple[dict[int, dict[tuple, dict]], dict]:
    """{seed: {order: run}} for (pool, strategy) from bench/order_effect.py's JSON, and its config."""
    doc = common.load_truth(path)
    runs = common.enumeration_runs(doc, pool, strategy)
    if runs is None:
        raise SystemExit(f"{path} has no job for pool {pool} / strategy {strategy}")
    return runs, doc["config"]


def enumerate_truth(pool, names: list[str], strategy: str, cfg: TrainConfig, seeds: list[int], workers: int) -> dict:
    """Every ordering's R per seed through the scheduler (population 1, as order_effect.py)."""
    out = {}
    for seed in seeds:
        sj, tj = StrategyConfig(name=strategy).model_dump_json(), cfg.model_dump_json()
        rows, _ = common.train_every_ordering(pool.spec.model_dump_json(), names, sj, tj, seed, workers, 1)
        out[seed] = {}
        for order, got in rows.items():
            r = RMatrix.from_rows(order, got)
            out[seed][order] = {"order": list(order), "acc": r.acc(), "R": r.values.tolist()}
    return out


rho = common.spearman


def truth_rows(runs: dict[tuple, dict]) -> dict:
    """The single/pair rows the graph needs, read off the exhaustive runs: row 0 is the init, row
    1 of an ordering starting with a is "after a" on every task, row 2 of one starting a, b is
    "after a then b" — the very states `lll affinity` trains (same prefix → same state)."""
    out: dict = {"init": None, "single": {}, "pair": {}}
    for order, run in runs.items():
        row = [{n: run["R"][i][j] for j, n in enumerate(order)} for i in range(3)]
        out["init"] = row[0]
        out["single"][order[0]] = row[1]
        out["pair"][(order[0], order[1])] = row[2]
    return out


def differing_entries(meas: AffinityMeasurement, rows: dict, seed: int) -> dict:
    """Where the Ray-measured single rows differ from the exhaustive runs' (none: bit-identical),
    and the task(s) every differing entry involves (a task whose data changed in between)."""
    single = meas.rows[seed]["single"]
    pairs = [(a, b) for a, row in rows["single"].items() for b, v in row.items() if single[a][b] != v]
    common = set.intersection(*({a, b} for a, b in pairs)) if pairs else set()
    return {"entries": len(pairs), "of": sum(len(r) for r in rows["single"].values()), "all_involve": sorted(common)}


def simulate(
    table: dict[tuple, float],
    graph,
    tasks: list[str],
    strategy: str,
    lam: float | None,
    seed: int,
    seeded: list[list[str]] | None,
    refit_at: int | None,
    k: int,
    max_trials: int,
    random: bool = False,
) -> dict[str, float]:
    """One simulated search: Optuna with the search's sampler and space; the objective is the
    ordering's ACC LOOKED UP in ``table`` (no training). ``seeded``: enqueued first (as
    --seed-from-graph). ``refit_at``: after that many trials, fit the path-score weights to them
    and enqueue the ``k`` best untried orderings by the fitted score (a simulation only)."""
    best = max(table, key=table.get)
    good = set(sorted(table, key=table.get, reverse=True)[: max(1, round(0.05 * len(table)))])
    sampler = optuna.samplers.RandomSampler(seed=seed) if random else make_sampler(seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = SearchSpace(tasks, [strategy], lam)
    if seeded:
        enqueue_orderings(study, space, seeded)
    out: dict[str, float] = {"best": max_trials, "top5pct": max_trials, "found_best": 0}
    seen, tried = -1.0, []
    for t in range(1, max_trials + 1):
        trial = study.ask()
        order = space.suggest(trial).order
        study.tell(trial, table[order])
        tried.append((list(order), table[order]))
        seen = max(seen, table[order])
        if t in (10, 24):
            out[f"best_acc_after_{t}"] = seen
        if order in good and out["top5pct"] == max_trials:
            out["top5pct"] = t
        if order == best and not out["found_best"]:
            out["best"], out["found_best"] = t, 1
        if refit_at is not None and t == refit_at:
            weights = fit_weights(graph, tried)
            done = {tuple(o) for o, _ in tried}
            ranked = sorted(table, key=lambda o: -all_scores(graph, [o], weights)[0])
            enqueue_orderings(study, space, [list(o) for o in ranked if o not in done][:k])
        if out["found_best"] and t >= 24:
            break
    return out


def correlations(graph, orders: list[tuple], acc: dict[int, list[float]], mean_acc: list[float]) -> dict[str, float]:
    """Spearman of the default-weight path score with ACC on each truth seed and the seed mean."""
    scores = all_scores(graph, orders)
    c = {f"seed{s}": rho(scores, a) for s, a in acc.items()}
    c["seed_mean"] = rho(scores, mean_acc)
    return c


def summarise(runs: list[dict]) -> dict:
    return {
        "trials_to_best": [r["best"] for r in runs],
        "median_trials_to_best": statistics.median(r["best"] for r in runs),
        "never_found": sum(1 - r["found_best"] for r in runs),
        "median_trials_to_top5pct": statistics.median(r["top5pct"] for r in runs),
        "median_best_acc_after_10": statistics.median(r["best_acc_after_10"] for r in runs),
        "median_best_acc_after_24": statistics.median(r["best_acc_after_24"] for r in runs),
    }


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--truth", default="/tmp/lllbench/order_effect.json", help="bench/order_effect.py --out JSON")
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--strategies", default="naive,ewc")
    ap.add_argument("--graph-seed", type=int, default=0, help="seed the graph is measured with")
    ap.add_argument("--study-seeds", type=int, default=10, help="sampler seeds of the simulated searches")
    ap.add_argument("--k", type=int, default=3, help="graph orderings enqueued first (as --seed-from-graph)")
    ap.add_argument("--refit-at", type=int, default=12, help="trials before the refit variant fits the weights")
    ap.add_argument("--max-trials", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 tasks, 300 images, 5 epochs, own ground truth")
    ap.add_argument("--out", default=None)
    ap.add_argument("--measurement", default=None, help="keep/reuse the Ray-measured rows in PREFIX.STRATEGY.json")
    ap.add_argument("--measure-only", action="store_true", help="measure the graphs (with --measurement), stop")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    results: dict = {"config": vars(args).copy(), "strategies": {}}
    for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        t0 = time.perf_counter()
        if args.quick:
            cfg = {"train": TrainConfig(device="cpu", epochs=5).model_dump(mode="json"), "train_per_task": 300}
            cfg["tasks"] = 3
        elif args.measure_only:  # bench/order_effect.py's defaults, checked against its JSON later
            cfg = {"train": TrainConfig(device="cpu").model_dump(mode="json"), "train_per_task": None, "tasks": None}
        else:
            truth, cfg = load_truth(Path(args.truth), args.pool, strategy)
            source = args.truth
        train_cfg = TrainConfig(**cfg["train"])
        pool = load_pool(args.pool, train_per_task=cfg.get("train_per_task"))
        names = pool.names[: cfg["tasks"]] if cfg.get("tasks") else pool.names
        if args.quick:
            truth = enumerate_truth(pool, names, strategy, train_cfg, [0, 1], args.workers)
            source = "enumerated here (--quick)"

        # 1. the graph measured on Ray workers like `lll affinity` (or its rows kept from an earlier run)
        saved = Path(f"{args.measurement}.{strategy}.json") if args.measurement else None
        if saved is not None and saved.exists():
            meas = AffinityMeasurement.from_dict(json.loads(saved.read_text()))
            want = (names, train_cfg.model_dump(mode="json"), [args.graph_seed])
            if (meas.tasks, meas.train, meas.seeds) != want:
                raise SystemExit(f"{saved} was measured with other tasks/training/seeds; delete it")
        else:
            meas = measure_affinity(
                pool.spec.model_dump_json(),
                names,
                StrategyConfig(name=strategy),
                train_cfg,
                [args.graph_seed],
                workers=args.workers,
            )
            if saved is not None:
                saved.write_text(json.dumps(meas.to_dict()))
        if args.measure_only:
            print(f"{strategy}: measured {meas.trained} task-trainings in {meas.seconds:.0f} s -> {saved}")
            continue
        seeds = sorted(truth)
        orders = sorted(truth[seeds[0]])
        acc = {s: [truth[s][o]["acc"] for o in orders] for s in seeds}
        mean_acc = [float(np.mean([truth[s][o]["acc"] for s in seeds])) for o in orders]
        table = dict(zip(orders, mean_acc, strict=True))
        meta = {"pool": args.pool, "strategy": strategy}
        graph_ray = build_graph(names, meas.evidence(), meta=meta)
        # 1b. the same measurement read off the exhaustive runs (same code version as the truth)
        rows = truth_rows(truth[args.graph_seed])
        graph = build_graph(names, evidence_from_rows(rows["init"], rows["single"], rows["pair"]), meta=meta)
        differ = differing_entries(meas, rows, args.graph_seed)

        # 2. rank correlation, default weights
        between_seeds = rho(acc[seeds[0]], acc[seeds[1]]) if len(seeds) > 1 else None
        single_features = {
            f: rho([float(path_features(graph, o)[i]) for o in orders], mean_acc) for i, f in enumerate(FEATURES)
        }

        # 3. fitted weights, out of sample
        rng = np.random.default_rng(0)
        n_fit = min(24, len(orders) - 3)
        oos, fitted_on = [], []
        for _ in range(20):
            idx = rng.permutation(len(orders))
            fit_idx, test_idx = idx[:n_fit], idx[n_fit:]
            w = fit_weights(graph, [(list(orders[i]), mean_acc[i]) for i in fit_idx])
            fitted_on.append(w.fitted_on)
            pred = all_scores(graph, [orders[i] for i in test_idx], w)
            oos.append(rho(pred, [mean_acc[i] for i in test_idx]))
        w_all = fit_weights(graph, [(list(o), a) for o, a in table.items()])

        # 4. trials-to-best, simulated searches with ACC looked up in the ground truth
        lam = strategy_class(strategy).default_lam
        top, _ = best_orderings(graph, k=args.k)
        seeded = [o for o, _ in top]
        variants = {
            "random": (None, None, True),
            "unseeded": (None, None, False),
            "seed_from_graph": (seeded, None, False),
            "refit": (None, args.refit_at, False),
        }
        sims = {
            name: summarise(
                [
                    simulate(table, graph, names, strategy, lam, s, sd, rf, args.k, args.max_trials, rnd)
                    for s in range(args.study_seeds)
                ]
            )
            for name, (sd, rf, rnd) in variants.items()
        }
        best = max(table, key=table.get)
        rank_of = common.rank_table(table)
        res = {
            "truth": source,
            "tasks": names,
            "orderings": len(orders),
            "graph_seed": args.graph_seed,
            "ray_measurement": {
                "trained": meas.trained,
                "reused": meas.reused,
                "seconds": meas.seconds,
                "differs_from_truth_rows": differ,
                "spearman_default_weights": correlations(graph_ray, orders, acc, mean_acc),
            },
            "spearman_default_weights": correlations(graph, orders, acc, mean_acc),
            "spearman_single_feature": single_features,
            "spearman_between_truth_seeds": between_seeds,
            "spearman_fitted_out_of_sample": {
                "fit_on": n_fit,
                "median": statistics.median(oos),
                "min": min(oos),
                "max": max(oos),
                "fitted_draws": sum(1 for f in fitted_on if f),
            },
            "weights_fitted_on_all": w_all.__dict__,
            "graph_top": [{"order": o, "score": s, "acc": table[tuple(o)], "rank": rank_of[tuple(o)]} for o, s in top],
            "best": {"order": list(best), "acc": table[best]},
            "simulated_search": sims,
            "seconds": time.perf_counter() - t0,
        }
        results["strategies"][strategy] = res
        report(strategy, res, args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {args.out}")


def report(strategy: str, r: dict, args) -> None:
    c, f = r["spearman_default_weights"], r["spearman_fitted_out_of_sample"]
    ray = r["ray_measurement"]
    print(f"\n== {args.pool} / {strategy}: {r['orderings']} orderings, ground truth {r['truth']} ==")
    d = ray["differs_from_truth_rows"]
    diff = "none (bit-identical)" if not d["entries"] else f"{d['entries']} of {d['of']}"
    if d["all_involve"]:
        diff += f", every one involving {', '.join(d['all_involve'])} (its data changed since the truth run?)"
    print(
        f"graph measured on Ray (seed {r['graph_seed']}): {ray['trained']} task-trainings, {ray['reused']} prefixes "
        f"reused, {ray['seconds']:.0f} s; entries differing from the exhaustive runs' rows: {diff}"
    )
    cells = ", ".join(f"{k} {v:+.3f}" for k, v in ray["spearman_default_weights"].items())
    print(f"  Spearman(path score of the Ray-measured graph, default weights; ACC): {cells}")
    cells = ", ".join(f"{k} {v:+.3f}" for k, v in c.items())
    print(f"graph read off the exhaustive runs' first rows (same code as the truth), seed {r['graph_seed']}:")
    print(f"  Spearman(path score with default weights, ACC): {cells}")
    if r["spearman_between_truth_seeds"] is not None:
        print(f"  (for scale: Spearman of ACC between the two truth seeds {r['spearman_between_truth_seeds']:+.3f})")
    cells = ", ".join(f"{k} {v:+.3f}" for k, v in r["spearman_single_feature"].items())
    print(f"  Spearman of each path feature alone with seed-mean ACC: {cells}")
    print(
        f"  weights fitted on {f['fit_on']} random orderings, scored on the rest: median Spearman {f['median']:+.3f} "
        f"(range {f['min']:+.3f}..{f['max']:+.3f}, {f['fitted_draws']}/20 draws had enough trials to fit)"
    )
    w = r["weights_fitted_on_all"]
    if w["fitted_on"]:
        print(
            f"  weights fitted on all orderings: transfer {w['transfer']:+.3f}, interference "
            f"{w['interference']:+.3f}, dissimilarity {w['dissimilarity']:+.3f} (in-sample R² {w['r2']:.3f})"
        )
    else:
        print("  too few orderings to fit weights (needs ≥ 9): default weights only")
    print(f"best ordering by seed-mean ACC: {'>'.join(r['best']['order'])} ({r['best']['acc'] * 100:.2f})")
    for g in r["graph_top"]:
        print(f"  graph top: {'>'.join(g['order'])}  ACC {g['acc'] * 100:.2f}, rank {g['rank']}/{r['orderings']}")
    print(
        f"simulated searches (Optuna TPE + the search space; objective = ACC LOOKED UP in the ground truth, "
        f"no training; {args.study_seeds} sampler seeds, cap {args.max_trials} trials):"
    )
    labels = {
        "random": "random sampler (baseline)",
        "unseeded": "plain search (TPE)",
        "seed_from_graph": f"--seed-from-graph (graph top {args.k} first)",
        "refit": f"refit after {args.refit_at} trials (simulation only)",
    }
    for name, s in r["simulated_search"].items():
        print(
            f"  {labels[name]:<44} trials-to-best median {s['median_trials_to_best']:>5} "
            f"(never found {s['never_found']}), to a top-5% ordering {s['median_trials_to_top5pct']:>5}; "
            f"best ACC within 10 / 24 trials {s['median_best_acc_after_10'] * 100:.2f} / "
            f"{s['median_best_acc_after_24'] * 100:.2f}"
        )
        print(f"      trials-to-best per seed: {s['trials_to_best']}")


if __name__ == "__main__":
    main()
