"""Where the graph model's prediction error comes from, checked on the 7-task ground truth's prefix
tree, and the previous vs the current model side by side.

The ground truth (bench/ground_truth.py) holds the accuracy row after *every* prefix of every
ordering, so each assumption of a model built from the T² single-task and pair trainings can be
checked directly:

1. what the ACC of an ordering depends on (share of its variance explained by the last / first
   tasks), and whether a task trained late is learned as well as alone (pre-training effect);
2. whether the pairs compose: the accuracy row after every prefix of 3–7 tasks, predicted from the
   pairs alone (default parameters), against the measured row — previous vs current model;
3. seed noise (when the ground truth holds 2 seeds): pair-row entries seed 0 vs 1, and the ACC
   correlation between the seeds — the ceiling for any model scored against one seed;
4. the benchmark's two numbers (bench/search_at_scale.py: rank of the top pick with default
   parameters; out-of-sample Spearman ρ after fitting to 30 orderings, median of 20 draws), for
   the truth of each seed and the seed mean, previous vs current model. Evidence: seed 0's pairs.

"Previous model" = search/graph_model.py (its path then) at commit :data:`LEGACY` (``git show``).

    python bench/graph_model_probe.py            # ≈ 1 min; writes bench/out/graph_model_probe.{txt,json}
    python bench/graph_model_probe.py --extra-parts bench/out/ground_truth_parts   # + finished, unmerged seeds
    python bench/graph_model_probe.py --truth defaults --out /tmp/probe.txt   # the pool-defaults truth
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import types
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import common
import numpy as np
from search_at_scale import evidence_from_tree, graph_picks, spearman_oos, truth_for

from search.graph.affinity import build_graph
from search.graph.model import GraphModel

ROOT = Path(__file__).resolve().parent.parent
OUT = common.OUT
LEGACY = "1ae3d70"  # the previous graph model (erosion from solo towards the last task's transfer)
LEGACY_PATH = "search/graph_model.py"  # where it lived at that commit (now search/graph/model.py)
# Its imports, renamed to where those modules live now (search/ was regrouped by job since).
LEGACY_IMPORTS = {
    "from search.affinity import": "from search.graph.affinity import",
    "from search.perm_moves import": "from search.orders.moves import",
    "from search.order_rules import": "from search.graph.rules import",
}


def legacy_model_of():
    """``from_graph`` of the previous model, loaded from git (None when git cannot show it)."""
    res = subprocess.run(
        ["git", "show", f"{LEGACY}:{LEGACY_PATH}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        return None
    source = res.stdout
    for old, new in LEGACY_IMPORTS.items():
        source = source.replace(old, new)
    mod = types.ModuleType("legacy_graph_model")
    sys.modules[mod.__name__] = mod
    exec(compile(source, f"{LEGACY}:{LEGACY_PATH}", "exec"), mod.__dict__)
    return mod.GraphModel.from_graph


sp = common.spearman


def r2_of_groups(y: np.ndarray, keys: list) -> float:
    groups: dict = {}
    for k, v in zip(keys, y, strict=True):
        groups.setdefault(k, []).append(v)
    fitted = np.array([np.mean(groups[k]) for k in keys])
    return float(1 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def structure(tasks: list[str], perms: np.ndarray, acc: np.ndarray, rows: dict) -> dict:
    """1: what ACC depends on; how well a task is learned when trained at position p."""
    out = {}
    for k in (1, 2, 3):
        out[f"R2_last{k}"] = r2_of_groups(acc, [tuple(p[-k:]) for p in perms])
    for k in (1, 2):
        out[f"R2_first{k}"] = r2_of_groups(acc, [tuple(p[:k]) for p in perms])
    n = len(tasks)
    learned = np.zeros((n, n))  # learned[j, p]: accuracy on j right after training j at position p
    for j in range(n):
        vals = [[] for _ in range(n)]
        for p in perms:
            pos = int(np.where(p == j)[0][0])
            vals[pos].append(rows[",".join(tasks[i] for i in p[: pos + 1])][j])
        learned[j] = [np.mean(v) for v in vals]
    out["learned_by_position"] = {tasks[j]: [round(float(v), 3) for v in learned[j]] for j in range(n)}
    final = np.array([rows[",".join(tasks[i] for i in p)] for p in perms])
    out["final_by_position"] = {
        tasks[j]: [round(float(final[np.argmax(perms == j, axis=1) == q, j].mean()), 3) for q in range(n)]
        for j in range(n)
    }
    return out


def composition(tasks: list[str], rows: dict, models: dict) -> dict:
    """2: every prefix of 3..T tasks, the mean accuracy over its trained tasks predicted from the
    pairs (default parameters) vs measured: Spearman and RMSE per depth."""
    pos = {a: i for i, a in enumerate(tasks)}
    out = {}
    for depth in range(3, len(tasks) + 1):
        keys = [k for k in rows if k and k.count(",") == depth - 1]
        perms = np.array([[pos[a] for a in k.split(",")] for k in keys])
        y = np.array([np.mean([rows[k][i] for i in p]) for k, p in zip(keys, perms, strict=True)])
        out[depth] = {}
        for name, m in models.items():
            pred = m.mean_final(perms)
            out[depth][name] = {"spearman": sp(pred, y), "rmse": float(np.sqrt(((pred - y) ** 2).mean()))}
    return out


def erosion(tasks: list[str], rows: dict) -> dict:
    """2b: does erosion compose from the pairs? The accuracy on the *first* task j after [j, k1, ...,
    km] (m = 2..T−1 later tasks), measured vs composed from the pairs by the previous model
    (multiplicative shares of j's solo excess over the last task's transfer) and the current one
    (affine maps from the init). RMSE over all such prefixes, and the correlation of the measured
    retention with the composed one."""
    n = len(tasks)

    def row(p) -> list[float]:
        return rows[",".join(tasks[i] for i in p)]

    init = np.array(rows[""])
    solo = np.array([row([j])[j] for j in range(n)])
    base = np.array([[row([k])[j] for k in range(n)] for j in range(n)])  # base[j, k]: j after k alone
    pair = np.array([[row([j, k])[j] if j != k else solo[j] for k in range(n)] for j in range(n)])
    out = {}
    for depth in range(3, n + 1):
        obs, old, new = [], [], []
        for p in itertools.permutations(range(n), depth):
            j, later = p[0], p[1:]
            obs.append(row(p)[j])
            ex = solo[j] - base[j, later[-1]]
            share = np.prod([np.clip((pair[j, k] - base[j, k]) / ex, 0, 1.2) if ex > 1e-9 else 1.0 for k in later])
            old.append(base[j, later[-1]] + max(ex, 0.0) * share)
            a = solo[j]
            for k in later:
                r = np.clip((pair[j, k] - base[j, k]) / (solo[j] - init[j]), 0, 1) if solo[j] > init[j] else 1.0
                a = base[j, k] + r * (a - init[j])
            new.append(a)
        obs, old, new = np.array(obs), np.array(old), np.array(new)
        out[depth] = {
            name: {"rmse": float(np.sqrt(((v - obs) ** 2).mean())), "pearson": float(np.corrcoef(v, obs)[0, 1])}
            for name, v in (("previous", old), ("current", new))
        }
    return out


def seed_noise(doc: dict, strategy: str) -> dict | None:
    """3: pair-row entries and ACC, seed 0 vs seed 1."""
    runs = {r["seed"]: r for r in doc["runs"].values() if r["strategy"] == strategy}
    if 0 not in runs or 1 not in runs:
        return None
    r0, r1 = runs[0]["rows"], runs[1]["rows"]
    pair_keys = [k for k in r0 if k.count(",") == 1]
    e0 = np.concatenate([r0[k] for k in pair_keys])
    e1 = np.concatenate([r1[k] for k in pair_keys])
    a0, a1 = np.array(runs[0]["acc"]), np.array(runs[1]["acc"])
    return {
        "pair_entries_sd_of_difference": float(np.std(e1 - e0)),
        "pair_entries_pearson": float(np.corrcoef(e0, e1)[0, 1]),
        "acc_spearman_seed0_seed1": sp(a0, a1),
        "acc_pearson_seed0_seed1": float(np.corrcoef(a0, a1)[0, 1]),
        # the top-pick ceiling: where one seed's best ordering ranks in the other seed
        "rank_in_seed1_of_seed0_best": common.rank_of(a1, int(np.argmax(a0))),
        "rank_in_seed0_of_seed1_best": common.rank_of(a0, int(np.argmax(a1))),
        "median_rank_in_seed1_of_seed0_top10": float(np.median([common.rank_of(a1, i) for i in np.argsort(-a0)[:10]])),
    }


def scores(
    doc: dict, strategy: str, truth_seed: int | None, model_of, draws: int, evidence_seed: int = 0
) -> dict | None:
    """4: rank of the default top pick, ρ over all with default parameters, out-of-sample ρ after 30."""
    got = truth_for(doc, strategy, truth_seed)
    base = truth_for(doc, strategy, evidence_seed)
    if got is None or base is None:
        return None
    acc, seeds, _ = got
    evidence = evidence_from_tree(list(doc["tasks"]), base[2])  # one seed's pairs (the benchmark: seed 0)
    picks = graph_picks(acc, list(doc["tasks"]), evidence, model_of)
    oos = spearman_oos(acc, list(doc["tasks"]), evidence, 30, draws, model_of)
    return {
        "seeds": seeds,
        "rank_of_pick": picks["ranks"]["graph"],
        "spearman_default_all": picks["spearman_default_all"],
        "spearman_oos_30": oos["median"],
        "top_pick_rank_after_fit_median": statistics.median(oos["top_pick_rank_after_fit"]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--truth", default="cheap", help=f"a ground truth ({', '.join(common.TRUTHS)}) or its path")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--out", type=Path, default=OUT / "graph_model_probe.txt")
    ap.add_argument(
        "--extra-parts",
        type=Path,
        default=None,
        help="also use the (strategy, seed) runs finished in this ground_truth_parts folder (not yet merged; "
        "bench/ground_truth.py's layout: <folder>/<config>/<strategy>_s<seed>.jsonl)",
    )
    args = ap.parse_args(argv)
    doc = common.load_truth(args.truth)
    if args.extra_parts is not None:
        import ground_truth

        config = doc["config"].get("name", "cheap")  # the cheap truth was written before configs had names
        extra = ground_truth.merge(config, args.extra_parts / config)["runs"]
        doc["runs"].update({k: v for k, v in extra.items() if k not in doc["runs"]})
    tasks = list(doc["tasks"])
    pos = {a: i for i, a in enumerate(tasks)}
    perms = np.array([[pos[a] for a in o.split(",")] for o in doc["orderings"]])
    makers = {"current": GraphModel.from_graph}
    legacy = legacy_model_of()
    if legacy is not None:
        makers = {"previous": legacy, **makers}
    lines, result = [], {"legacy_commit": LEGACY, "strategies": {}}

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    say(f"graph model probe on {Path(common.TRUTHS.get(args.truth, args.truth)).name}; runs {sorted(doc['runs'])}")
    if args.extra_parts is not None:
        say(f"  (runs not in that file merged from the finished parts in {args.extra_parts})")
    for strategy in ("naive", "ewc"):
        base = truth_for(doc, strategy, 0)
        if base is None:
            continue
        acc0, _, rows0 = base
        acc0 = np.array([acc0[tuple(o.split(","))] for o in doc["orderings"]])
        res: dict = {}
        say(f"\n== {strategy} ==")
        st = structure(tasks, perms, acc0, rows0)
        res["structure_seed0"] = st
        say(
            "1. share of ACC variance (seed 0) explained by the last task {:.2f}, last two {:.2f}, last three {:.2f}; "
            "by the first task {:.2f}, first two {:.2f}".format(
                st["R2_last1"], st["R2_last2"], st["R2_last3"], st["R2_first1"], st["R2_first2"]
            )
        )
        say("   accuracy on j right after training j at position 0..6 (position 0 = alone = solo):")
        for a, v in st["learned_by_position"].items():
            say(f"     {a:<11s} {v}")
        say("   final accuracy on j when j is at position 0..6:")
        for a, v in st["final_by_position"].items():
            say(f"     {a:<11s} {v}")
        g = build_graph(tasks, evidence_from_tree(tasks, rows0))
        models = {name: make(g) for name, make in makers.items()}
        comp = composition(tasks, rows0, models)
        res["composition_seed0"] = comp
        say("2. prefixes of 3..7 tasks: mean accuracy over the trained tasks predicted from seed 0's pairs (default")
        say("   parameters) vs measured (seed 0) — Spearman / RMSE:")
        for depth, v in comp.items():
            say(
                f"     depth {depth}: "
                + "   ".join(f"{m} {x['spearman']:+.3f} / {x['rmse']:.3f}" for m, x in v.items())
            )
        ero = erosion(tasks, rows0)
        res["erosion_seed0"] = ero
        say("   2b. accuracy on the first task j after j and 2..6 later tasks, composed from the pairs vs measured")
        say("       (RMSE / Pearson over all such prefixes):")
        for depth, v in ero.items():
            say(
                f"     {depth - 1} later: "
                + "   ".join(f"{m} {x['rmse']:.3f} / {x['pearson']:+.3f}" for m, x in v.items())
            )
        noise = seed_noise(doc, strategy)
        res["seed_noise"] = noise
        if noise:
            say(
                "3. seed noise: pair-row entries seed 0 vs 1: SD of the difference {:.3f} (Pearson {:.3f}); "
                "ACC seed 0 vs seed 1: Spearman {:.3f}, Pearson {:.3f} (the ceiling for a model scored on one "
                "seed)".format(
                    noise["pair_entries_sd_of_difference"],
                    noise["pair_entries_pearson"],
                    noise["acc_spearman_seed0_seed1"],
                    noise["acc_pearson_seed0_seed1"],
                )
            )
            say(
                "   seed 0's best ordering ranks {} of 5,040 in seed 1, seed 1's best ranks {} in seed 0; seed 0's "
                "10 best: median rank {:.0f} in seed 1 (a perfect one-seed oracle's top pick)".format(
                    noise["rank_in_seed1_of_seed0_best"],
                    noise["rank_in_seed0_of_seed1_best"],
                    noise["median_rank_in_seed1_of_seed0_top10"],
                )
            )
        else:
            say("3. seed noise: the ground truth holds one seed of this strategy")
        say(
            "4. pairs of  truth       model      rank of top pick (default)  ρ default, all  "
            "ρ out-of-sample after 30  top pick rank after fit (median)"
        )
        res["scores"] = {}
        for ev in (0, 1):
            for label, ts in (("seed 0", 0), ("seed 1", 1), ("seed mean", None)):
                for name, make in makers.items():
                    s = scores(doc, strategy, ts, make, args.draws, ev)
                    if s is None or (ts is None and len(s["seeds"]) < 2):
                        continue
                    res["scores"][f"pairs seed {ev}/truth {label}/{name}"] = s
                    say(
                        f"   seed {ev}     {label:<11s} {name:<10s} {s['rank_of_pick']:>6d} of 5,040              "
                        f"{s['spearman_default_all']:+.3f}          {s['spearman_oos_30']:+.3f}"
                        f"                    {s['top_pick_rank_after_fit_median']:.0f}"
                    )
        result["strategies"][strategy] = res
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
