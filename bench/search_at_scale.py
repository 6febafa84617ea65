"""The curriculum search at 7 tasks, looked up in the mixed-mnist-7 ground truth.

Ground truth: bench/ground_truth.py (every one of the 5,040 orderings trained through the prefix
cache, naive and EWC, seeds 0 and 1); an ordering's value is its seed-mean ACC over the seeds the
ground truth holds. "Top 1%" = the 50 best of 5,040.

(a) Lookup. Each sampler proposes orderings one trial at a time through lll's own search space
(``search.orders.space.SearchSpace``: Lehmer digits, suffix first) in an Optuna study, and each proposal
is *looked up* in the ground truth (no training), as bench/search_efficiency.py does, until an
ordering of the top 1% is proposed (censored at --cap). Median over --reps sampler seeds of:

* ``random``      — Optuna's RandomSampler;
* ``tpe``         — today's search (``search.study.storage.make_sampler``: multivariate TPE, constant liar);
* ``model``       — search/propose/sampler.py (GP over orderings, EI by local search);
* ``model+graph`` — the same, seeded as ``lll search --seed-from-graph`` does: the affinity graph
  measured from the T² single-task and pair trainings (rows after [a] and [a, b] of seed 0 in the
  ground truth's prefix tree — the same trainings `lll affinity` runs), its best orderings
  (graph model and the rules, search/study/graph_seed.py) enqueued first, and the graph model's
  prediction a GP feature;
* ``model+seed`` / ``model+feature`` — the two halves of ``model+graph`` alone (the seeded orderings
  only; the GP's graph feature only), to tell which one helps or hurts. Since 2026-12-04
  ``--seed-from-graph`` enqueues the orderings only when the zero-shot pick is trusted: it is
  ``model+graph`` for a trusted pick and ``model+feature`` otherwise (bench/graph_zero_shot.py
  simulates exactly that).

Also: the rank among 5,040 of each published rule's ordering and of the graph model's top pick
(default parameters: the pair trainings only, no search), and the out-of-sample Spearman ρ of the
graph model fitted to 30 random finished orderings, scored on the other 5,010 (median of 20 draws).

    python bench/search_at_scale.py                    # reads bench/out/ground_truth_mixed-mnist-7.json.gz
    python bench/search_at_scale.py --truth defaults   # the pool-defaults truth (bench/ground_truth.py)
    python bench/search_at_scale.py --quick            # synthetic 6-task ground truth, a few seconds
    python bench/search_at_scale.py --graph-only       # only the graph model's two keys (seconds)

Writes bench/out/search_at_scale.json (exactly the issue's keys) and search_at_scale_details.json.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only spin on a shared machine
os.environ.setdefault("OMP_NUM_THREADS", "1")

import common
import numpy as np
import optuna

from search.graph.affinity import build_graph
from search.graph.evidence import Evidence, evidence_from_rows
from search.graph.model import GraphModel
from search.graph.rules import RULES, dissimilarity_from_graph, rule_order
from search.orders.space import SearchSpace
from search.propose.sampler import PermutationSampler
from search.study.graph_seed import candidate_orderings
from search.study.storage import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
OUT = common.OUT
KINDS = ("random", "tpe", "model", "model+graph", "model+seed", "model+feature")


# ---------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------
def truth_for(doc: dict, strategy: str, seed: int | None = None) -> tuple[dict[tuple, float], list[int], dict] | None:
    """(seed-mean ACC per ordering, seeds used, prefix-tree rows of the lowest seed) or None.
    ``seed``: that seed's ACC only (its own rows)."""
    seeds = sorted(common.seed_runs(doc, strategy))
    if seed is not None:
        seeds = [s for s in seeds if s == seed]
    if not seeds:
        return None
    acc = common.seed_mean(doc, strategy, seeds)
    rows = next(r["rows"] for r in doc["runs"].values() if r["strategy"] == strategy and r["seed"] == seeds[0])
    return dict(zip(common.orderings(doc), map(float, acc), strict=True)), seeds, rows


def evidence_from_tree(tasks: list[str], rows: dict) -> Evidence:
    """The T² trainings the affinity graph measures, read from the prefix tree: [a] and [a, b]."""

    def row(key: str) -> dict[str, float]:
        return dict(zip(tasks, rows[key], strict=True))

    single = {a: row(a) for a in tasks}
    pairs = {(a, b): row(f"{a},{b}") for a, b in itertools.permutations(tasks, 2)}
    return evidence_from_rows(row(""), single, pairs)


def synthetic_doc(t: int = 6, seed: int = 0, noise: float = 0.004) -> dict:
    """A small ground truth drawn from a random graph model (for --quick and the tests)."""
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(t)]
    solo = rng.uniform(0.6, 0.95, t)
    init = rng.uniform(0.05, 0.15, t)
    base = init[:, None] + rng.uniform(0.0, 0.4, (t, t)) * (solo[:, None] - init[:, None])
    np.fill_diagonal(base, solo)
    rho = rng.uniform(0.1, 0.9, (t, t))
    pair = base + rho * (solo[:, None] - base)
    model = GraphModel.from_arrays(tasks, solo, base, pair, init=init)
    orders = common.all_orderings(tasks)
    acc = model.predict(orders) + rng.normal(0, noise, len(orders))
    rows = {"": init.tolist()}
    for k, a in enumerate(tasks):
        rows[a] = [float(base[j, k]) for j in range(t)]
        for m, b in enumerate(tasks):
            if m != k:
                r = [float(base[j, m]) for j in range(t)]
                r[k] = float(pair[k, m])
                rows[f"{a},{b}"] = r
    run = {"strategy": "naive", "seed": 0, "acc": acc.tolist(), "bwt": [0.0] * len(orders), "rows": rows}
    return {"tasks": tasks, "orderings": [",".join(o) for o in orders], "runs": {"naive/seed0": run}, "synthetic": True}


# ---------------------------------------------------------------------------------------------
# (a) lookup
# ---------------------------------------------------------------------------------------------
def lookup(
    acc: dict[tuple, float],
    tasks: list[str],
    kind: str,
    seed: int,
    good: set,
    cap: int,
    evidence: Evidence | None,
    strategy: str = "naive",
) -> tuple[int, int, bool]:
    """(trials until a ``good`` ordering is proposed, distinct orderings among them, censored).
    ``strategy``: what the ground truth's orderings were trained with (the graph model's defaults)."""
    space = SearchSpace(tasks, ["naive"])
    if kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif kind == "tpe":
        sampler = make_sampler(seed)
    else:
        sampler = PermutationSampler(tasks, seed=seed, use_graph=kind != "model+seed")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if kind in ("model+graph", "model+seed", "model+feature"):
        g = build_graph(tasks, evidence, meta={"strategy": strategy})
        study.set_user_attr(
            "affinity_evidence", {"strategy": {"name": strategy}, "seeds": [0], "evidence": evidence.to_dict()}
        )
        if kind != "model+feature":
            for o, _ in candidate_orderings(g):
                study.enqueue_trial(space.trial_params(o, "naive", None))
    seen: set[tuple] = set()
    for n in range(1, cap + 1):
        trial = study.ask()
        order = tuple(space.suggest(trial).order)
        seen.add(order)
        study.tell(trial, acc[order])
        if order in good:
            return n, len(seen), False
    return cap, len(seen), True


def graph_picks(
    acc: dict[tuple, float],
    tasks: list[str],
    evidence: Evidence,
    model_of=GraphModel.from_graph,
    strategy: str | None = None,
) -> dict:
    """Rank (1 = best of all) of the graph model's top pick and of every rule's ordering.
    ``model_of``: graph → model (bench/graph_model_probe.py passes the previous model's);
    ``strategy``: what the pairs were trained with (the unfitted model's defaults depend on it)."""
    rank = common.rank_table(acc)
    g = build_graph(tasks, evidence, meta={"strategy": strategy} if strategy else None)
    model = model_of(g)
    top, _ = model.top(k=1)
    d = dissimilarity_from_graph(g)
    picks = {"graph": top[0][0], **{r: rule_order(r, tasks, d) for r in RULES}}
    out = {name: rank[tuple(o)] for name, o in picks.items()}
    all_orders = list(acc)
    pred = model.predict(all_orders)
    rho_all = common.spearman(pred, [acc[o] for o in all_orders])
    return {"ranks": out, "orders": picks, "spearman_default_all": rho_all}


def spearman_oos(
    acc: dict[tuple, float],
    tasks: list[str],
    evidence: Evidence,
    n_fit: int,
    draws: int,
    model_of=GraphModel.from_graph,
    strategy: str | None = None,
) -> dict:
    """Fit the graph model on ``n_fit`` random orderings, Spearman ρ on all the others; per draw."""
    base = model_of(build_graph(tasks, evidence, meta={"strategy": strategy} if strategy else None))
    orders = list(acc)
    rng = np.random.default_rng(0)
    rhos, top_ranks = [], []
    rank = common.rank_table(acc)
    for _ in range(draws):
        idx = rng.choice(len(orders), size=n_fit, replace=False)
        fit_on = [(orders[i], acc[orders[i]]) for i in idx]
        model = base.fit(fit_on)
        rest = [o for i, o in enumerate(orders) if i not in set(idx.tolist())]
        rhos.append(common.spearman(model.predict(rest), [acc[o] for o in rest]))
        top_ranks.append(rank[tuple(model.top(k=1)[0][0][0])])
    return {"median": statistics.median(rhos), "all": rhos, "top_pick_rank_after_fit": top_ranks}


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--truth", default="cheap", help=f"a ground truth ({', '.join(common.TRUTHS)}) or its path")
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--cap", type=int, default=300)
    ap.add_argument("--top", type=float, default=0.01, help="fraction of orderings that counts as a hit")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="synthetic 6-task ground truth, 3 reps")
    ap.add_argument("--strategies", default="naive,ewc")
    ap.add_argument("--out", type=Path, default=None, help="default bench/out/search_at_scale[_graph_only].json")
    ap.add_argument(
        "--graph-only",
        action="store_true",
        help="only the graph model's rank_of_pick and spearman_oos_30 (no samplers; seconds)",
    )
    ap.add_argument("--truth-seed", type=int, default=None, help="that seed's ACC as the truth (default: seed mean)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = OUT / ("search_at_scale_graph_only.json" if args.graph_only else "search_at_scale.json")
    if args.quick:
        doc = synthetic_doc()
        args.reps, args.cap, args.draws = min(args.reps, 3), min(args.cap, 80), min(args.draws, 3)
    else:
        doc = common.load_truth(args.truth)
    tasks = list(doc["tasks"])
    kinds = [] if args.graph_only else [k for k in args.kinds.split(",") if k]
    result = {"rank_of_pick": {}, "spearman_oos_30": {}}
    if not args.graph_only:
        result = {"trials_to_top1pct": {}, **result}
    details: dict = {"reps": args.reps, "cap": args.cap, "top": args.top, "per_strategy": {}}
    for strategy in args.strategies.split(","):
        t0 = time.perf_counter()
        got = truth_for(doc, strategy, args.truth_seed)
        if got is None:
            details["per_strategy"][strategy] = {"missing": "the ground truth holds no run of this strategy"}
            for key in result:  # the keys stay, with null: not measured
                result[key][strategy] = None
            print(f"{strategy}: no ground truth, skipped", flush=True)
            continue
        acc, seeds, rows = got
        evidence = evidence_from_tree(tasks, rows)
        n_good = max(1, round(args.top * len(acc)))
        good = set(sorted(acc, key=lambda o: -acc[o])[:n_good])
        per: dict = {"seeds": seeds, "orderings": len(acc), "hits": n_good, "samplers": {}}
        medians = {}
        for kind in kinds:
            res = [lookup(acc, tasks, kind, s, good, args.cap, evidence, strategy) for s in range(args.reps)]
            trials = [r[0] for r in res]
            medians[kind] = statistics.median(trials)
            per["samplers"][kind] = {
                "median_trials": medians[kind],
                "median_distinct": statistics.median(r[1] for r in res),
                "censored": sum(r[2] for r in res),
                "trials": trials,
            }
            print(f"{strategy} {kind:<12s} median {medians[kind]:6.1f} trials  {trials}", flush=True)
        picks = graph_picks(acc, tasks, evidence, strategy=strategy)
        oos = spearman_oos(acc, tasks, evidence, 30, args.draws, strategy=strategy)
        per.update(picks=picks, spearman_oos=oos, seconds=time.perf_counter() - t0)
        if not args.graph_only:
            result["trials_to_top1pct"][strategy] = medians
        result["rank_of_pick"][strategy] = picks["ranks"]
        result["spearman_oos_30"][strategy] = oos["median"]
        details["per_strategy"][strategy] = per
        print(
            f"{strategy} ranks {picks['ranks']}  ρ(default, all) {picks['spearman_default_all']:.3f}  "
            f"ρ(oos, 30) {oos['median']:.3f}  [{per['seconds']:.0f} s]",
            flush=True,
        )
    if not args.quick or args.out.parent != OUT:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_name(args.out.stem + "_details.json").write_text(
            json.dumps(details, indent=2, default=str) + "\n"
        )
        print(f"wrote {args.out}")
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
