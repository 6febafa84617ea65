"""Issue 19, point 4: what share of the truly best orderings does pruning throw away? A LOOKUP simulation.

A search reports, after each task of an ordering, the mean accuracy over every pool task (row i of R,
exactly what ``search/study/optuna_bridge.py`` reports) and asks its pruner whether to stop. Here
those rows come from a ground truth (every ordering of mixed-mnist-7 with the accuracy row after
every prefix, per seed), so a search of B orderings on one seed costs nothing to replay. For each
pruner we count, over many searches:

* ``top1_pruned``: of the evaluated orderings in the true top 1 % (rank ≤ 50 by the mean over ALL the
  truth's seeds), the share the pruner stopped early — good orderings lost to the pruner;
* ``top10_pruned``: the same for the top 10 %;
* ``all_pruned`` and ``saved``: the share of orderings pruned and of task-trainings saved;
* ``rank``: the true rank (all-seed mean) of the best *complete* ordering on the search seed — what
  ``lll export`` would recommend — median over the searches, against the same searches without pruning.

Pruners: ``bottom-quarter`` (lll's, ``search.study.storage.make_pruner``: below the 25th percentile of
the complete trials at the same step, after 8 complete, from the second task on), ``percentile-25``
(Optuna's ``PercentilePruner(25)``, what lll used before: prunes below the 75th percentile of best
values), ``reached-quarter`` (a candidate: the bottom quarter of every trial that reached the step,
pruned ones included, so survivors alone do not ratchet the bar up) and ``none`` — also ``none`` at
the task-trainings ``bottom-quarter`` spent (fewer orderings, each complete): the fair comparison
of the recommendation. Samplers: ``random`` (B distinct random orderings) and ``model`` (lll's default
noise-aware permutation GP, ``search/propose/sampler.py``). Every search uses one seed of the truth
and rotates over the truth's seeds.

    python bench/pruning_share.py [--truth cheap,defaults] [--reps 21] [--model-reps 7] [--budget 150]
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np
import optuna
from optuna.trial import TrialState

from search.orders.space import SearchSpace
from search.propose.sampler import PermutationSampler
from search.study.storage import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)
OUT = common.OUT / "pruning_share.json"
PRUNERS = ("bottom-quarter", "reached-quarter", "percentile-25", "none")


class Rows:
    """One strategy of a truth: per seed, the mean accuracy after every prefix, and the true value."""

    def __init__(self, doc: dict, strategy: str) -> None:
        self.tasks = list(doc["tasks"])
        self.orders = common.orderings(doc)
        self.index = {o: i for i, o in enumerate(self.orders)}
        runs = {int(r["seed"]): r for r in doc["runs"].values() if r["strategy"] == strategy}
        self.seeds = sorted(runs)
        self.rows = {s: {p: float(np.mean(v)) for p, v in runs[s]["rows"].items()} for s in self.seeds}
        self.acc = {s: np.asarray(runs[s]["acc"], dtype=float) for s in self.seeds}
        self.truth_rank = common.ranks(np.mean([self.acc[s] for s in self.seeds], axis=0))

    def curve(self, order: tuple[str, ...], seed: int) -> list[float]:
        """The value reported after task 1, 2, ..., T (the last is the mean of R[T], i.e. ACC)."""
        return [self.rows[seed][",".join(order[: i + 1])] for i in range(len(order))]


class ReachedQuarterPruner(optuna.pruners.BasePruner):
    """A candidate: the bottom quarter of every trial that reached the step (pruned ones included),
    so the bar does not ratchet up as the survivors alone set it."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if step is None or step < 1 or len(done) < 8:
            return False
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        trials = study.get_trials(deepcopy=False, states=states)
        others = [t.intermediate_values[step] for t in trials if step in t.intermediate_values]
        return bool(others) and trial.intermediate_values[step] < float(np.percentile(others, 25))


def pruner_of(kind: str) -> optuna.pruners.BasePruner:
    if kind == "bottom-quarter":
        return make_pruner("acc", True)
    if kind == "reached-quarter":
        return ReachedQuarterPruner()
    if kind == "percentile-25":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=8, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def one_search(rows: Rows, sampler_kind: str, pruner: str, rep: int, budget: int) -> dict:
    """B orderings on one seed of the truth, pruned as lll's search prunes."""
    seed = rows.seeds[rep % len(rows.seeds)]
    if sampler_kind == "random":
        picks = np.random.default_rng(rep).choice(len(rows.orders), budget, replace=False)
        queue = [rows.orders[i] for i in picks]
        sampler = optuna.samplers.RandomSampler(seed=rep)
    else:
        queue = None
        sampler = PermutationSampler(rows.tasks, seed=rep)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner_of(pruner))
    space = SearchSpace(rows.tasks, ["naive"])
    pruned, complete, trainings = [], [], 0
    for n in range(budget):
        trial = study.ask()
        order = queue[n] if queue is not None else tuple(space.suggest(trial).order)
        if queue is not None:
            trial.set_user_attr("order", ",".join(order))
        curve = rows.curve(order, seed)
        stopped = False
        for i in range(1, len(order)):  # after task i+1 (as optuna_bridge.should_prune: step i-1, i >= 1)
            trial.report(curve[i], i - 1)
            if i < len(order) - 1 and trial.should_prune():
                stopped = True
                trainings += i + 1
                break
        if stopped:
            study.tell(trial, state=TrialState.PRUNED)
            pruned.append(order)
        else:
            study.tell(trial, curve[-1])
            trainings += len(order)
            complete.append(order)
    rank = rows.truth_rank
    evaluated = pruned + complete
    best = max(complete, key=lambda o: rows.acc[seed][rows.index[o]])

    def share(limit: int) -> tuple[int, int]:
        good = [o for o in evaluated if rank[rows.index[o]] <= limit]
        return sum(1 for o in good if o in set(pruned)), len(good)

    return {
        "top1": share(50),
        "top10": share(504),
        "pruned": len(pruned),
        "evaluated": len(evaluated),
        "trainings": trainings,
        "rank": int(rank[rows.index[best]]),
    }


def summarise(results: list[dict], full_trainings: int) -> dict:
    t1 = np.sum([r["top1"] for r in results], axis=0)
    t10 = np.sum([r["top10"] for r in results], axis=0)
    ranks = [r["rank"] for r in results]
    return {
        "top1_pruned": round(float(t1[0] / t1[1]), 3) if t1[1] else None,
        "top1_seen": int(t1[1]),
        "top10_pruned": round(float(t10[0] / t10[1]), 3) if t10[1] else None,
        "top10_seen": int(t10[1]),
        "all_pruned": round(float(np.mean([r["pruned"] / r["evaluated"] for r in results])), 3),
        "saved": round(1 - float(np.mean([r["trainings"] for r in results])) / full_trainings, 3),
        "rank_median": float(np.median(ranks)),
        "rank_quartiles": [float(np.percentile(ranks, 25)), float(np.percentile(ranks, 75))],
    }


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--truth", default="cheap,defaults", help="comma-separated truths (names of bench/common.TRUTHS)")
    ap.add_argument("--reps", type=int, default=21, help="random-sampler searches per truth and pruner")
    ap.add_argument("--model-reps", type=int, default=7, help="model-sampler searches per truth and pruner (0: skip)")
    ap.add_argument("--budget", type=int, default=150)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    record: dict = {"budget": args.budget, "reps": {"random": args.reps, "model": args.model_reps}, "truths": {}}
    for truth in args.truth.split(","):
        doc = common.load_truth(truth)
        strategies = sorted({r["strategy"] for r in doc["runs"].values()})
        for strategy in strategies:
            rows = Rows(doc, strategy)
            key = f"mixed-mnist-7/{strategy}/{truth}"
            record["truths"][key] = {"seeds": rows.seeds}
            for sampler_kind, reps in (("random", args.reps), ("model", args.model_reps)):
                if reps <= 0:
                    continue
                full = args.budget * len(rows.tasks)
                for pruner in PRUNERS:
                    res = [one_search(rows, sampler_kind, pruner, rep, args.budget) for rep in range(reps)]
                    s = summarise(res, full)
                    record["truths"][key][f"{sampler_kind}/{pruner}"] = s
                    print(f"{key:32s} {sampler_kind:6s} {pruner:15s} {json.dumps(s)}", flush=True)
                # no pruning at the task-trainings lll's pruner spent: the fair comparison of its pick
                spent = 1 - record["truths"][key][f"{sampler_kind}/bottom-quarter"]["saved"]
                equal = max(1, round(args.budget * spent))
                res = [one_search(rows, sampler_kind, "none", rep, equal) for rep in range(reps)]
                s = summarise(res, equal * len(rows.tasks)) | {"budget": equal}
                record["truths"][key][f"{sampler_kind}/none-at-equal-trainings"] = s
                print(f"{key:32s} {sampler_kind:6s} {'none (equal)':15s} {json.dumps(s)}", flush=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
