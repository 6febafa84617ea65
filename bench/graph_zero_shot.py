"""The affinity graph's own answer, on every ground truth: the zero-shot pick from the pair trainings.

For each 7-task ground truth (bench/common.py TRUTHS: ``cheap``; ``defaults`` once merged; or the
finished parts of a running truth with --parts) and strategy, the T² single-task and pair trainings
(what `lll affinity` trains) come from two sources:

* ``fresh`` — bench/graph_pairs.py's trainings at the truth's own config on seeds 100, 101, 102,
  which no truth uses: pairs of one seed (each), of 100+101 and of all three. These are the
  headline numbers: the pick is judged on seeds it never saw.
* ``truth`` — the rows after [a] and [a, b] of the truth's own prefix tree (its seeds 0, 1, 0+1;
  the earlier protocol, kept for comparison: the pairs are then part of the judged trajectories).

Each graph's orderings are ranked among all 5,040 by the truth (seed-mean ACC over all its seeds):

* ``pick``  — ``search/graph/zero_shot.py`` (what `lll affinity --recommend` prints), with its
  noise ratio and the trust verdict;
* ``argmax`` — the consensus score's best ordering (the pick before 2026-12-03);
* ``graph model top`` — the unfitted graph model's best ordering;
* the published rules (``search/graph/rules.py``).

``spearman_zero_shot`` is Spearman's ρ between the consensus score and the truth over all
orderings. ``search_cost_to_pick_rank``: the plain model sampler's median trials and task-trainings
(distinct prefixes) until it proposes an ordering at least as good as the pick, beside the graph's
49 task-trainings per pair seed. ``one_seed_oracle_rank``: the noise floor — per truth seed, the
rank on the other seeds' mean of the ordering best on that seed. ``seeded_vs_model_trials``: a lookup simulation (as
bench/search_at_scale.py): the model sampler (search/propose/sampler.py) seeded from the graph of
fresh seed 100 as `lll search --seed-from-graph` does (the graph feature on; the graph's orderings
enqueued first when the zero-shot pick is trusted) against the plain model sampler; median trials
until an ordering of the truth's top 1 % is proposed, over --reps sampler seeds (default 101).
``--real`` adds searches on permuted-mnist-10 and rotated-mnist-10 (see :mod:`graph_zero_shot_real`).

    python bench/graph_pairs.py                     # first: the fresh pair trainings (cached)
    python bench/graph_zero_shot.py --parts /work/gt/parts/defaults   # all truths + finished seeds of a running truth
    python bench/graph_zero_shot.py --quick         # 3 sampler seeds, cap 60; minutes
    python bench/graph_zero_shot.py --real --quick  # smoke test of the real-search part (tiny data)

Writes bench/out/graph_zero_shot.json (--out to change): per truth the rank of the pick and ρ with
the pairs of one fresh seed (100, `lll affinity`'s default of one seed), ``*_by_pair_seeds`` for
every seed set, and ``seeded_vs_model_trials``; the rest in ``graph_zero_shot_details.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import common
import numpy as np

from search.graph.affinity import build_graph
from search.graph.evidence import Evidence, evidence_from_rows
from search.graph.model import GraphModel
from search.graph.rules import RULES, dissimilarity_from_graph, rule_order
from search.graph.zero_shot import Ensemble, PairArrays, zero_shot_pick

FRESH = (100, 101, 102)


# ---- truths --------------------------------------------------------------------------------------
def truth_from_doc(doc: dict, strategy: str, label: str) -> dict | None:
    """{name, tasks, perms, acc (seed mean, in perms order), trees {seed: rows by prefix}}."""
    runs = {int(r["seed"]): r for r in doc["runs"].values() if r["strategy"] == strategy}
    if not runs:
        return None
    tasks = list(doc["tasks"])
    pos = {a: i for i, a in enumerate(tasks)}
    perms = np.array([[pos[a] for a in o.split(",")] for o in doc["orderings"]], dtype=np.int64)
    acc = common.seed_mean(doc, strategy)
    trees = {s: {k: dict(zip(tasks, v, strict=True)) for k, v in r["rows"].items()} for s, r in runs.items()}
    return {"name": f"mixed-mnist-7/{strategy}/{label}", "strategy": strategy, "tasks": tasks, "perms": perms,
            "acc": acc, "trees": trees, "per_seed": common.seed_runs(doc, strategy)}  # fmt: skip


def one_seed_oracle(truth: dict) -> list[int] | None:
    """The noise floor of any pick made from other seeds: for each truth seed, the rank on the mean
    of the *other* seeds of the ordering that is best on that seed (a perfect predictor of one
    independent seed's complete enumeration). None with fewer than 2 seeds."""
    runs = truth.get("per_seed") or {}
    if len(runs) < 2:
        return None
    out = []
    for s in sorted(runs):
        judge = np.mean([runs[t] for t in runs if t != s], axis=0)
        out.append(common.rank_of(judge, int(np.argmax(runs[s]))))
    return out


def truths_from_parts(folder: Path, label: str) -> list[dict]:
    """Finished strategy-seeds (all 5,040 orderings) of bench/ground_truth.py's part files."""
    from ground_truth import read_part

    by: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*_s*.jsonl")):
        strategy, seed = path.stem.rsplit("_s", 1)
        recs = read_part(path)
        if len(recs) == 5040:
            by.setdefault(strategy, {})[int(seed)] = recs
    out = []
    for strategy, seeds in sorted(by.items()):
        tasks = list(next(iter(next(iter(seeds.values())).values()))["rows"][0])
        orders = common.all_orderings(tasks)
        runs = {}
        for s, recs in seeds.items():
            tree: dict[str, list[float]] = {}
            for o in orders:
                for i in range(3):
                    tree.setdefault(",".join(o[:i]), [recs[o]["rows"][i][t] for t in tasks])
            runs[f"{strategy}/seed{s}"] = {"strategy": strategy, "seed": s, "rows": tree,
                                           "acc": [recs[o]["acc"] for o in orders]}  # fmt: skip
        doc = {"tasks": tasks, "orderings": [",".join(o) for o in orders], "runs": runs}
        out.append(truth_from_doc(doc, strategy, label))
    return out


def load_truths(parts: Path | None) -> list[dict]:
    out = []
    for label, path in common.TRUTHS.items():
        if path.exists():
            doc = common.load_truth(label)
            out += [t for s in ("naive", "ewc") if (t := truth_from_doc(doc, s, label)) is not None]
    if parts is not None:
        have = {t["name"] for t in out}
        out += [t for t in truths_from_parts(parts, parts.name) if t["name"] not in have]
    return out


def pair_evidence(tasks: list[str], tree: dict) -> Evidence:
    """The T² trainings `lll affinity` runs, read from a truth's prefix tree: [a] and [a, b]."""
    single = {a: tree[a] for a in tasks}
    pairs = {(a, b): tree[f"{a},{b}"] for a, b in itertools.permutations(tasks, 2)}
    return evidence_from_rows(tree[""], single, pairs)


def seed_sets(seeds: list[int]) -> list[tuple[int, ...]]:
    """Each seed alone, then the first 2 and the first 3 seeds together."""
    out = [(s,) for s in seeds]
    return out + [tuple(seeds[:k]) for k in (2, 3) if len(seeds) >= k]


# ---- zero-shot ranks -----------------------------------------------------------------------------
def graph_of(truth: dict, trees: list[dict]):
    ev = Evidence()
    for tree in trees:
        ev.update(pair_evidence(truth["tasks"], tree))
    return build_graph(truth["tasks"], ev, meta={"strategy": truth["strategy"]})


def pair_sources(truth: dict) -> dict[str, list[dict]]:
    """label → prefix trees of the seeds whose pairs build the graph (fresh first, then the truth's)."""
    from graph_pairs import load_pairs

    fresh = load_pairs(truth["name"].rsplit("/", 1)[1]).get(truth["strategy"], {})
    out = {f"fresh {'+'.join(map(str, ss))}": [fresh[s] for s in ss] for ss in seed_sets(sorted(fresh))}
    for ss in seed_sets(sorted(truth["trees"])):
        out[f"truth {'+'.join(map(str, ss))}"] = [truth["trees"][s] for s in ss]
    return out


def zero_shot_ranks(truth: dict, trees: list[dict], draws: int) -> dict:
    """Ranks (1 = best of all) of the pick, the consensus argmax, the graph model's top and the
    rules; ρ of the consensus score; the pick's noise verdict."""
    tasks, perms, acc = truth["tasks"], truth["perms"], truth["acc"]
    index = {tuple(p): i for i, p in enumerate(perms.tolist())}
    g = graph_of(truth, trees)

    def rank(order) -> int:
        return common.rank_of(acc, index[tuple(tasks.index(a) if isinstance(a, str) else int(a) for a in order)])

    pick = zero_shot_pick(g, truth["strategy"], draws=draws)
    score = Ensemble.build(PairArrays.from_graph(g), truth["strategy"]).score(perms)
    model = GraphModel.from_graph(g)
    d = dissimilarity_from_graph(g)
    return {
        "pick": rank(pick.order),
        "order": pick.order,
        "noise_ratio": round(pick.noise_ratio, 3),
        "agreement": round(pick.agreement, 3),
        "trusted": pick.trusted,
        "stability": pick.stability,
        "spearman": common.spearman(score, acc),
        "argmax": rank(perms[int(np.argmax(score))]),
        "graph_model_top": rank(model.top(k=1)[0][0][0]),
        "graph_model_spearman": common.spearman(model.predict_perms(perms), acc),
        **{r: rank(rule_order(r, tasks, d)) for r in RULES},
    }


# ---- seeded vs plain model sampler (lookup) ------------------------------------------------------
def lookup_trials(
    truth: dict, seeded: bool, rep: int, cap: int, good: set, graph, units: list | None = None, enqueue=()
) -> int:
    """Trials until the model sampler proposes a ``good`` ordering (censored at ``cap``); ``units``,
    when given, gets the task-trainings those trials cost (distinct prefixes: the prefix cache).
    ``seeded``: the graph's evidence kept as `lll search --seed-from-graph` keeps it, and the
    orderings ``enqueue`` (what it enqueues: :func:`seeding`) first."""
    import optuna

    from search.orders.space import SearchSpace
    from search.propose.sampler import PermutationSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tasks = truth["tasks"]
    space = SearchSpace(tasks, ["naive"])
    study = optuna.create_study(direction="maximize", sampler=PermutationSampler(tasks, seed=rep, use_graph=seeded))
    if seeded:
        measured = Evidence.from_dict(json.loads(graph.graph["measured"]))
        kept = {"strategy": {"name": truth["strategy"]}, "evidence": measured.to_dict()}
        study.set_user_attr("affinity_evidence", kept)
        for o in enqueue:
            study.enqueue_trial(space.trial_params(o, "naive", None))
    value = {tuple(tasks[i] for i in p): float(v) for p, v in zip(truth["perms"], truth["acc"], strict=True)}
    prefixes: set[tuple[str, ...]] = set()
    n = 0
    while n < cap:
        n += 1
        trial = study.ask()
        order = tuple(space.suggest(trial).order)
        study.tell(trial, value[order])
        prefixes.update(order[: i + 1] for i in range(len(order)))
        if order in good:
            break
    if units is not None:
        units.append(len(prefixes))
    return n


def seeding(graph, strategy: str) -> list[list[str]]:
    """The orderings `lll search --seed-from-graph` enqueues for this graph: its candidates when the
    zero-shot pick is trusted, none otherwise (search/study/graph_seed.py)."""
    from search.study.graph_seed import seed_orderings

    pick, cands = seed_orderings(graph, strategy)
    verdict = "trusted" if pick.trusted else "not trusted"
    print(f"  seeding: {len(cands) if pick.trusted else 0} orderings enqueued (the pick is {verdict})")
    return [o for o, _ in cands] if pick.trusted else []


def seeded_vs_model(truth: dict, reps: int, cap: int) -> list[float]:
    acc, perms, tasks = truth["acc"], truth["perms"], truth["tasks"]
    good = {tuple(tasks[i] for i in perms[j]) for j in np.argsort(-acc, kind="stable")[: max(1, len(acc) // 100)]}
    sources = pair_sources(truth)  # one seed of pairs, as `lll search --seed-from-graph`: fresh 100 if trained
    g = graph_of(truth, sources.get(f"fresh {FRESH[0]}") or next(iter(sources.values())))
    enqueue = seeding(g, truth["strategy"])
    out = []
    for seeded in (True, False):
        trials = [lookup_trials(truth, seeded, rep, cap, good, g, enqueue=enqueue) for rep in range(reps)]
        out.append(float(statistics.median(trials)))
        print(f"  {'seeded' if seeded else 'model '} median {out[-1]:.1f} trials {trials}", flush=True)
    return out


def search_cost_to_rank(truth: dict, rank: int, reps: int, cap: int, pair_seeds: int = 1) -> dict:
    """What the plain model sampler spends to propose an ordering as good as the pick (true rank ≤
    ``rank``): median trials and task-trainings over ``reps`` sampler seeds, beside the graph's own
    cost (every task alone and every ordered pair, per pair seed)."""
    acc, perms, tasks = truth["acc"], truth["perms"], truth["tasks"]
    good = {tuple(tasks[i] for i in perms[j]) for j in np.argsort(-acc, kind="stable")[:rank]}
    units: list[int] = []
    trials = [lookup_trials(truth, False, rep, cap, good, None, units) for rep in range(reps)]
    t = len(tasks)
    return {
        "pick_rank": rank,
        "graph_task_trainings": pair_seeds * (t + t * (t - 1)),
        "model_trials_median": float(statistics.median(trials)),
        "model_task_trainings_median": float(statistics.median(units)),
        "censored_at": cap,
    }


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="3 sampler seeds, cap 60, 8 noise draws")
    ap.add_argument("--reps", type=int, default=101)
    ap.add_argument("--cap", type=int, default=200)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--parts", type=Path, default=None, help="a running truth's part files (finished seeds)")
    ap.add_argument("--no-lookup", action="store_true", help="skip the seeded-vs-model simulation")
    ap.add_argument("--real", action="store_true", help="also the real searches on permuted/rotated-mnist-10")
    ap.add_argument("--out", type=Path, default=common.OUT / "graph_zero_shot.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.cap, args.draws = min(args.reps, 3), min(args.cap, 60), min(args.draws, 8)
    result: dict = {"rank_of_pick": {}, "spearman_zero_shot": {}, "seeded_vs_model_trials": {},
                    "search_cost_to_pick_rank": {}, "rank_of_pick_by_pair_seeds": {},
                    "spearman_by_pair_seeds": {}, "trusted_by_pair_seeds": {}, "one_seed_oracle_rank": {},
                    "pairs": f"rank_of_pick / spearman_zero_shot: pairs of one fresh seed ({FRESH[0]})"}  # fmt: skip
    details: dict = {"by_seeds": {}, "reps": args.reps, "cap": args.cap, "quick": args.quick, "draws": args.draws}
    for truth in load_truths(args.parts):
        t0, name = time.perf_counter(), truth["name"]
        rows = {label: zero_shot_ranks(truth, trees, args.draws) for label, trees in pair_sources(truth).items()}
        details["by_seeds"][name] = rows
        first = rows.get(f"fresh {FRESH[0]}") or next(iter(rows.values()))
        result["rank_of_pick"][name] = first["pick"]
        result["spearman_zero_shot"][name] = round(first["spearman"], 4)
        result["rank_of_pick_by_pair_seeds"][name] = {k: r["pick"] for k, r in rows.items()}
        result["spearman_by_pair_seeds"][name] = {k: round(r["spearman"], 3) for k, r in rows.items()}
        result["trusted_by_pair_seeds"][name] = {k: r["trusted"] for k, r in rows.items()}
        result["one_seed_oracle_rank"][name] = one_seed_oracle(truth)
        for key, r in rows.items():
            print(f"{name} pairs {key}: pick {r['pick']} (noise ratio {r['noise_ratio']:.2f}, "
                  f"agreement {r['agreement']:.2f}, "
                  f"{'trusted' if r['trusted'] else 'too noisy'}), ρ {r['spearman']:+.3f}; argmax {r['argmax']}; "
                  f"graph model top {r['graph_model_top']} (ρ {r['graph_model_spearman']:+.3f}); "
                  + ", ".join(f"{x} {r[x]}" for x in RULES), flush=True)  # fmt: skip
        if not args.no_lookup:
            result["seeded_vs_model_trials"][name] = seeded_vs_model(truth, args.reps, args.cap)
            cost = search_cost_to_rank(truth, first["pick"], args.reps, args.cap)
            result["search_cost_to_pick_rank"][name] = cost
            print(
                f"  a search reaching the pick's rank {first['pick']}: {cost['model_trials_median']:.0f} trials, "
                f"{cost['model_task_trainings_median']:.0f} task-trainings (graph: {cost['graph_task_trainings']})"
            )
        print(f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    if args.real:
        from graph_zero_shot_real import real_searches

        result["real"] = {"quick": args.quick, "pools": real_searches(quick=args.quick)}
    elif args.out.is_file():  # bench/graph_zero_shot_real.py's runs (keys real, real_ewc, ...): kept
        result.update({k: v for k, v in json.loads(args.out.read_text()).items() if k.startswith("real")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_name(args.out.stem + "_details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
