"""Issue 19, 6(a): does a search's recommendation hold on seeds it never saw? A LOOKUP simulation.

Each evaluation of an ordering on a search seed returns that seed's stored ACC in a ground truth
(every one of the 5,040 orderings of mixed-mnist-7 trained on several seeds). A search spends B
evaluations (B = 60 and 150; re-evaluations and validation count). Its recommendation is judged by
its mean over the held-out seeds: its rank among the 5,040 orderings' held-out means (1 = best).
The truth's seeds are split into search seeds, validation seeds (used only by the new default's
final validation) and held-out judging seeds; no seed is in two of them.

Samplers (median and quartiles over --reps sampler seeds):

* ``random``  — B distinct random orderings on the first search seed; the best observed.
* ``tpe``     — today's ``--sampler tpe`` (``search.study.storage.make_sampler``: multivariate TPE on
  the Lehmer digits), B trials on the first search seed; the best observed.
* ``model``   — today's model sampler (homoscedastic GP, EI over the best OBSERVED value), B
  orderings on the first search seed; the best observed, no re-evaluation.
* ``default`` — the new default: the noise-aware GP (seed counts, per-seed offsets, EI over the best
  posterior mean, ``search/propose/sampler.py``) + racing re-evaluation on further search seeds
  (``search/propose/intensify.py``) + validation of the top K by posterior mean on the validation
  seeds; the recommendation is the best validation mean (the best posterior mean without
  validation seeds or with K = 0).
* ``ceiling`` — the ordering best on the mean of ALL search seeds among all 5,040 (what enumerating
  everything with the same seeds would recommend), judged the same way. No sampler: one value.

Truths (``--truth``): ``cheap`` (naive and EWC, seeds 0, 1: search on 0, judge on 1; no validation
seed, and one search seed makes re-evaluation impossible — the default then differs from ``model``
only in its noise handling and recommending by posterior mean); ``defaults`` (the pool's defaults:
naive seeds 0-3, EWC 0-1; read from the merged .json.gz or from complete ground-truth parts,
``--parts``); ``resampled`` (semi-synthetic, for re-evaluation and validation: value = the cheap
truth's 2-seed mean, and seed k adds the cheap truth's own seed difference (s0 − s1)/√2 with the 7
task labels permuted at random and a random sign — the real noise's size, seed offset and
prefix-correlated shape, for as many seeds as asked: --resampled-seeds, default 9 = search 0-3,
validation 4-6, held-out 7-8; its details also give each pick's rank by the noise-free value).

    python bench/fresh_seed.py --quick                      # cheap truth, naive, 3 reps, B=60 only
    python bench/fresh_seed.py --truth cheap                # 21 reps, naive and EWC
    python bench/fresh_seed.py --truth resampled --grid     # the default's settings, measured
    python bench/fresh_seed.py --truth defaults --search-seeds 0,1 --validation-seeds 2 --heldout-seeds 3

Writes bench/out/fresh_seed.json ({"lookup_rank": {"60": {kind: median rank}, "150": ...}} for the
first strategy, plus quartiles, per strategy, the split and the settings; other keys already in the
file are kept) and bench/out/fresh_seed_<truth>_details.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import common
import numpy as np
import optuna

from search.orders.space import SearchSpace
from search.propose.intensify import Racing, may_reevaluate, next_reevaluation, pick_validated, top_k
from search.propose.sampler import PermutationSampler
from search.study.launch import DEFAULT_MAX_SEEDS, DEFAULT_SEEDS
from search.study.racing import SHARE, Z
from search.study.storage import make_sampler
from search.study.validation import DEFAULT_VALIDATE

optuna.logging.set_verbosity(optuna.logging.WARNING)
BUDGETS = (60, 150)
BASELINES = ("random", "tpe", "model")
SPLITS = {  # truth → (search, validation, held-out) seeds
    "cheap": ([0], [], [1]),
    "defaults": ([0, 1], [], [2, 3]),
    "resampled": ([0, 1, 2, 3], [4, 5, 6], [7, 8]),
}


# ---- truths --------------------------------------------------------------------------------------
def load(truth: str, parts: Path, n_resampled: int, strategies: list[str]) -> tuple[list, dict, dict]:
    """(orderings, {strategy: {seed: ACC array}}, {strategy: noise-free value or None})."""
    if truth == "resampled":
        doc = common.load_truth("cheap")
        orders = [tuple(o.split(",")) for o in doc["orderings"]]
        runs, clean = {}, {}
        for s in strategies:
            r = common.seed_runs(doc, s)
            runs[s], clean[s] = resample(orders, doc["tasks"], r[0], r[1], n_resampled)
        return orders, runs, clean
    if truth == "defaults" and not common.TRUTHS["defaults"].exists():
        return from_parts(parts, strategies)
    doc = common.load_truth(truth)
    orders = [tuple(o.split(",")) for o in doc["orderings"]]
    return orders, {s: common.seed_runs(doc, s) for s in strategies}, {s: None for s in strategies}


def resample(orders, tasks, s0, s1, n: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    index = {o: i for i, o in enumerate(orders)}
    value, noise = (s0 + s1) / 2.0, (s0 - s1) / np.sqrt(2.0)
    rng = np.random.default_rng(12345)
    seeds = {}
    for k in range(n):
        relabel = dict(zip(tasks, rng.permutation(tasks), strict=True))
        moved = np.array([index[tuple(relabel[a] for a in o)] for o in orders])
        seeds[k] = value + rng.choice([-1.0, 1.0]) * noise[moved]
    return seeds, value


def from_parts(parts: Path, strategies: list[str]) -> tuple[list, dict, dict]:
    """The defaults truth from the ground-truth run's parts: complete strategy-seeds only."""
    orders, runs = None, {}
    for s in strategies:
        runs[s] = {}
        for path in sorted(parts.glob(f"{s}_s*.jsonl")):
            recs = {}
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    recs[tuple(rec["order"])] = rec["acc"]
                except (json.JSONDecodeError, KeyError):
                    continue
            if len(recs) < 5040:
                print(f"{path.name}: {len(recs)} of 5040 orderings, not used", flush=True)
                continue
            orders = orders or sorted(recs)
            runs[s][int(path.stem.split("_s")[-1])] = np.array([recs[o] for o in orders])
    if orders is None:
        raise SystemExit(f"error: no complete ground-truth part in {parts}; pass --parts or --truth cheap")
    return orders, runs, {s: None for s in strategies}


# ---- one search ----------------------------------------------------------------------------------
class Lookup:
    """The truth of one strategy, seen through a split."""

    def __init__(self, orders, runs, search, validation, heldout, clean=None) -> None:
        self.orders, self.index = orders, {o: i for i, o in enumerate(orders)}
        self.tasks = list(orders[0])
        self.runs, self.search, self.validation = runs, search, validation
        self.judge = np.mean([runs[s] for s in heldout], axis=0)
        self.clean = clean

    def acc(self, order, seed: int) -> float:
        return float(self.runs[seed][self.index[tuple(order)]])

    def rank(self, order) -> dict:
        i = self.index[tuple(order)]
        out = {"heldout": common.rank_of(self.judge, i)}
        if self.clean is not None:
            out["clean"] = common.rank_of(self.clean, i)
        return out

    def ceiling(self):
        return self.orders[int(np.argmax(np.mean([self.runs[s] for s in self.search], axis=0)))]


def baseline(kind: str, look: Lookup, rep: int, budget: int) -> dict[int, tuple]:
    """{B: recommended ordering} after B evaluations (prefixes of one run of max(BUDGETS))."""
    seed = look.search[0]
    if kind == "random":
        picks = np.random.default_rng(rep).choice(len(look.orders), budget, replace=False)
        seen = [(look.orders[i], look.acc(look.orders[i], seed)) for i in picks]
    else:
        if kind == "tpe":
            sampler = make_sampler(rep)
        else:
            sampler = PermutationSampler(look.tasks, seed=rep, use_graph=False, incumbent="observed", noise_aware=False)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        space, seen = SearchSpace(look.tasks, ["naive"]), []
        for _ in range(budget):
            trial = study.ask()
            order = tuple(space.suggest(trial).order)
            seen.append((order, look.acc(order, seed)))
            study.tell(trial, seen[-1][1])
    return {b: max(seen[:b], key=lambda x: x[1])[0] for b in BUDGETS if b <= budget}


def default(look: Lookup, rep: int, budget: int, plan: Racing, k: int, pooled: bool = False) -> tuple[tuple, dict]:
    """The new default's recommendation after ``budget`` evaluations, validation included."""
    seeds = look.search[: plan.max_seeds]
    k = k if look.validation else 0
    search_budget = budget - k * len(look.validation)
    sampler = PermutationSampler(look.tasks, seed=rep, use_graph=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = SearchSpace(look.tasks, ["naive"])
    results: dict[tuple, dict[int, float]] = {}
    used = reevals = 0

    def tell(trial, order) -> None:
        v = results[order]
        trial.set_user_attr("seed_values", {str(s): x for s, x in v.items()})
        study.tell(trial, float(np.mean(list(v.values()))))

    while used < search_budget:
        step = None
        if len(seeds) > 1 and len(results) >= sampler.n_startup and may_reevaluate(used, reevals, plan):
            fitted = sampler.fit(study)
            score = {o: m for o, (m, _, _) in fitted.posterior(list(results)).items()}
            step = next_reevaluation(results, score, plan, fitted.noise_sd, seeds)
        if step is not None:
            order, seed = step
            results[order][seed] = look.acc(order, seed)
            study.enqueue_trial(space.trial_params(list(order), "naive", None))
            trial = study.ask()
            space.suggest(trial)
            tell(trial, order)
            used, reevals = used + 1, reevals + 1
            continue
        trial = study.ask()
        order = tuple(space.suggest(trial).order)
        n = min(plan.seeds, len(seeds), search_budget - used)
        results.setdefault(order, {}).update({s: look.acc(order, s) for s in seeds[:n] if s not in results[order]})
        used += n
        tell(trial, order)
    post = sampler.posterior(study, list(results))
    score = {o: m for o, (m, _, _) in post.items()}
    if k:
        chosen = top_k(score, k)
        validated = {o: {s: look.acc(o, s) for s in look.validation} for o in chosen}
        if pooled:  # the validation seeds as more evidence: the posterior refitted with them
            for o, v in validated.items():
                results[o].update(v)
                study.enqueue_trial(space.trial_params(list(o), "naive", None))
                trial = study.ask()
                space.suggest(trial)
                tell(trial, o)
            post = sampler.posterior(study, chosen)
            pick = max(chosen, key=lambda o: post[o][0])
        else:
            pick = pick_validated(validated, score)
    else:
        pick = max(score, key=score.get)
    return pick, {"reevaluations": reevals, "orderings": len(results), "seeds_of_pick": len(results.get(pick, {}))}


# ---- the benchmark -------------------------------------------------------------------------------
def summary(ranks: list[int]) -> dict:
    q1, med, q3 = np.percentile(ranks, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def run_strategy(look: Lookup, args, plan: Racing) -> dict:
    per: dict = {str(b): {} for b in args.budgets}
    for kind in args.kinds:
        t0 = time.perf_counter()
        got = {b: [] for b in args.budgets}
        extra = []
        for rep in range(args.reps):
            if kind == "ceiling":
                for b in args.budgets:
                    got[b].append(look.rank(look.ceiling()))
                break
            if kind in BASELINES:
                picks = baseline(kind, look, rep, max(args.budgets))
                for b in args.budgets:
                    got[b].append(look.rank(picks[b]))
            else:
                for b in args.budgets:
                    pick, info = default(look, rep, b, plan, args.validate, args.pooled)
                    got[b].append(look.rank(pick))
                    extra.append({"budget": b, **info})
        for b in args.budgets:
            ranks = [r["heldout"] for r in got[b]]
            per[str(b)][kind] = {**summary(ranks), "ranks": ranks}
            if got[b] and "clean" in got[b][0]:
                per[str(b)][kind]["clean"] = summary([r["clean"] for r in got[b]])
        if extra:
            per.setdefault("default_info", extra)
        meds = {b: [per[str(b)][kind][q] for q in ("q1", "median", "q3")] for b in args.budgets}
        print(f"  {kind:<8s} held-out rank [q1, median, q3] {meds}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return per


def grid(look: Lookup, args) -> list[dict]:
    """The default's settings, each measured on the same reps: --seeds, re-evaluation share, K."""
    rows = []
    values = [[float(v) for v in text.split(",")] for text in (args.grid_seeds, args.grid_share, args.grid_validate)]
    for n, share, k in itertools.product(*values):
        n, k = int(n), int(k)
        if n > len(look.search) or (k and not look.validation):
            continue
        plan = Racing(seeds=n, max_seeds=min(args.max_seeds, len(look.search)), share=share, z=args.z)
        for b in args.budgets:
            ranks = [look.rank(default(look, rep, b, plan, k, args.pooled)[0]) for rep in range(args.reps)]
            row = {"seeds": n, "share": share, "validate": k, "pooled": args.pooled, "budget": b}
            row.update(summary([r["heldout"] for r in ranks]))
            if "clean" in ranks[0]:
                row["clean"] = summary([r["clean"] for r in ranks])
            rows.append(row)
            print(f"  grid {row}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--truth", choices=sorted(SPLITS), default="cheap")
    ap.add_argument("--strategies", default="naive,ewc")
    ap.add_argument("--search-seeds", default=None, help="comma list (default: per truth, see the docstring)")
    ap.add_argument("--validation-seeds", default=None, help="comma list; empty = no validation")
    ap.add_argument("--heldout-seeds", default=None, help="comma list: the seeds that judge")
    ap.add_argument("--reps", type=int, default=21, help="sampler seeds")
    ap.add_argument("--budgets", default="60,150")
    ap.add_argument("--kinds", default="random,tpe,model,default,ceiling")
    # The CLI's own defaults (search/study/launch.py, search/study/racing.py): "default" is lll search's.
    ap.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="the default: seeds a new ordering starts with")
    ap.add_argument("--max-seeds", type=int, default=DEFAULT_MAX_SEEDS, help="the default: most seeds an ordering gets")
    ap.add_argument("--share", type=float, default=SHARE, help="the default: most share of B for re-evaluation")
    ap.add_argument("--z", type=float, default=Z, help="the default: racing confidence bound")
    ap.add_argument("--validate", type=int, default=DEFAULT_VALIDATE, help="the default: K orderings validated")
    ap.add_argument(
        "--pooled", action="store_true", help="the default: pick by the posterior refitted with the validation seeds"
    )
    ap.add_argument("--grid", action="store_true", help="measure the default's settings instead of the comparison")
    ap.add_argument("--grid-seeds", default="1,2")
    ap.add_argument("--grid-share", default="0,0.25")
    ap.add_argument("--grid-validate", default="0,3")
    ap.add_argument("--resampled-seeds", type=int, default=9)
    ap.add_argument("--parts", type=Path, default=common.OUT / "ground_truth_parts" / "defaults")
    ap.add_argument("--quick", action="store_true", help="naive only, 3 reps, B = 60")
    ap.add_argument("--out", type=Path, default=common.OUT / "fresh_seed.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.strategies, args.budgets = min(args.reps, 3), "naive", "60"
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.kinds = args.kinds.split(",")
    strategies = args.strategies.split(",")
    split = SPLITS[args.truth]

    def seeds(text, default):
        return default if text is None else [int(s) for s in text.split(",") if s]

    search = seeds(args.search_seeds, split[0])
    validation = seeds(args.validation_seeds, split[1])
    heldout = seeds(args.heldout_seeds, split[2])
    if set(search) & set(heldout) or set(validation) & (set(search) | set(heldout)):
        raise SystemExit("error: search, validation and held-out seeds overlap; give disjoint lists")
    plan = Racing(seeds=args.seeds, max_seeds=min(args.max_seeds, len(search)), share=args.share, z=args.z)
    orders, runs, clean = load(args.truth, args.parts, args.resampled_seeds, strategies)
    result: dict = {
        "truth": args.truth,
        "split": {"search": search, "validation": validation, "heldout": heldout},
        "settings": {
            **plan.__dict__,
            "validate": args.validate,
            "pooled": args.pooled,
            "reps": args.reps,
            "budgets": args.budgets,
        },
        "per_strategy": {},
    }
    t_all = time.perf_counter()
    for s in strategies:
        missing = [x for x in search + validation + heldout if x not in runs[s]]
        if missing:
            print(f"{s}: seeds {missing} not in the truth (has {sorted(runs[s])}), skipped", flush=True)
            continue
        print(f"{args.truth} {s}: search {search} validation {validation} held-out {heldout}", flush=True)
        look = Lookup(orders, runs[s], search, validation, heldout, clean[s])
        result["per_strategy"][s] = {"grid": grid(look, args)} if args.grid else run_strategy(look, args, plan)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    first = next(iter(result["per_strategy"].values()), None)
    if first and not args.grid:
        result["lookup_strategy"] = next(iter(result["per_strategy"]))
        result["lookup_rank"] = {str(b): {k: first[str(b)][k]["median"] for k in args.kinds} for b in args.budgets}
        result["lookup_quartiles"] = {
            str(b): {k: [first[str(b)][k]["q1"], first[str(b)][k]["q3"]] for k in args.kinds} for b in args.budgets
        }
    name = f"fresh_seed_{args.truth}{'_grid' if args.grid else ''}{'_quick' if args.quick else ''}_details.json"
    details = args.out.with_name(name)
    details.write_text(json.dumps(result, indent=2) + "\n")
    if not args.quick and not args.grid:
        doc = json.loads(args.out.read_text()) if args.out.exists() else {}
        doc.update({k: v for k, v in result.items() if k != "per_strategy"})
        doc["details"] = details.name
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")
    print(f"wrote {details}  [{result['seconds']:.0f} s]")


if __name__ == "__main__":
    main()
