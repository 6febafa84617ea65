"""The 7-task ground truth: every ordering of mixed-mnist-7, naive and EWC, 2 seeds each.

Each of the 5,040 orderings is trained through lll's own pipeline (``pipeline.runner.run_ordering``
with a ``MemoryPrefixCache`` — the code ``lll search --exhaustive`` runs in its workers), in
lexicographic order, which walks the prefix tree depth first: every ordering reuses its longest
trained prefix, so one strategy-seed costs 7 + 42 + 210 + 840 + 2,520 + 5,040 + 5,040 = 13,699
task-trainings instead of 35,280. The Optuna/MLflow recording of ``lll search`` is left out on
purpose: its per-trial cost (a study row, an MLflow run with params, metrics and an R artifact) would
dominate 20,160 trials of ~1 s each, and nothing here needs it.

Work is cut into 28 units, (strategy, seed, first task), shared round-robin by ``--workers``
processes (torch threads 1 each). Each unit appends one JSON line per finished ordering to
``bench/out/ground_truth_parts/<strategy>_s<seed>_<first>.jsonl``, so an interrupted run resumes
where it stopped (the one half-done ordering is retrained from its first task: the state after a
prefix is a pure function of the prefix, so the numbers are the same). ``merge`` writes
``bench/out/ground_truth_mixed-mnist-7.json.gz``: the config, the command, per strategy-seed the
ACC/BWT of every ordering and the accuracy row after every prefix (13,699 nodes; rows after [a] and
[a, b] are the T² single-task and pair trainings the affinity graph measures), and CPU/wall times.

    python bench/ground_truth.py run --worker 0 --workers 2 &   # and --worker 1
    python bench/ground_truth.py merge
    python bench/ground_truth.py run --quick ...                 # 3-task pool prefix, for a smoke test
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
PARTS = OUT / "ground_truth_parts"
POOL = "mixed-mnist-7"
STRATEGIES = ("naive", "ewc")
SEEDS = (0, 1)
# The cheap training config (README, "The curriculum question at 7-20 tasks"): chosen so that the
# 4 x 13,699 task-trainings fit in about an hour of two cores while orderings still differ clearly.
CONFIG = {
    "pool": POOL,
    "train_per_task": 400,
    "test_per_task": 200,
    "epochs": 3,
    "strategy_options": {"naive": {}, "ewc": {"fisher_samples": 100}},
    "lam": None,  # each strategy's default λ
}


def train_config(cfg: dict = CONFIG):
    from pipeline.config import TrainConfig

    return TrainConfig(device="cpu", epochs=cfg["epochs"])


def strategy_config(name: str, cfg: dict = CONFIG):
    from pipeline.config import StrategyConfig

    return StrategyConfig(name=name, lam=cfg["lam"], options=cfg["strategy_options"].get(name, {}))


def load(cfg: dict = CONFIG):
    from tasks.registry import load_pool

    return load_pool(cfg["pool"], train_per_task=cfg["train_per_task"], test_per_task=cfg["test_per_task"])


def units(names: list[str], strategies=STRATEGIES, seeds=SEEDS) -> list[tuple[str, int, str]]:
    """Seed 0 of both strategies before seed 1: an interrupted ground truth still covers both."""
    return [(s, seed, first) for seed in seeds for s in strategies for first in names]


def part_path(parts: Path, strategy: str, seed: int, first: str) -> Path:
    return parts / f"{strategy}_s{seed}_{first}.jsonl"


def read_part(path: Path) -> tuple[dict[tuple[str, ...], dict], dict | None]:
    """Finished orderings of one unit, and its closing line (None while unfinished)."""
    done, closing = {}, None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: retrain that ordering
                continue
            if "order" in rec:
                done[tuple(rec["order"])] = rec
            elif rec.get("done"):
                closing = rec
    return done, closing


def run_unit(pool, strategy: str, seed: int, first: str, parts: Path, cfg: dict) -> None:
    """All orderings that start with ``first``, depth first through one prefix cache."""
    from pipeline.runner import MemoryPrefixCache, run_ordering

    path = part_path(parts, strategy, seed, first)
    done, closing = read_part(path)
    if closing is not None:
        return
    rest = [n for n in pool.names if n != first]
    cache = MemoryPrefixCache(256 << 20)  # LRU: holds the current root-to-leaf path many times over
    sc, tc = strategy_config(strategy, cfg), train_config(cfg)
    cpu0, wall0, trained = time.process_time(), time.perf_counter(), 0
    with path.open("a") as f:
        for tail in itertools.permutations(rest):
            order = [first, *tail]
            if tuple(order) in done:
                continue
            res = run_ordering(pool, order, sc, tc, seed=seed, cache=cache)
            trained += res.trained
            m = res.rmatrix.metrics()
            rows = [[round(r[n], 6) for n in pool.names] for r in res.rows]
            f.write(
                json.dumps({"order": order, "acc": m["acc"], "bwt": m["bwt"], "rows": rows, "trained": res.trained})
            )
            f.write("\n")
            f.flush()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        f.write(
            json.dumps({"done": True, "trained": trained, "cpu_s": cpu, "wall_s": wall, "finished_at": time.time()})
        )
        f.write("\n")
    print(f"{strategy} seed {seed} first {first}: {trained} trainings, {cpu:.0f} s CPU, {wall:.0f} s wall", flush=True)


def cmd_run(args) -> None:
    import torch

    torch.set_num_threads(1)
    cfg = dict(CONFIG)
    if args.quick:  # a smoke test: 3 tasks, tiny data
        cfg.update(train_per_task=60, test_per_task=40, epochs=1)
    pool = load(cfg)
    if args.quick:
        from tasks.pool import TaskPool

        keep = pool.names[:3]
        pool = TaskPool(pool.spec, {n: pool.tasks[n] for n in keep}, pool.note, pool.meta)
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    seeds = tuple(int(x) for x in args.seeds.split(",")) if args.seeds else SEEDS
    mine = units(pool.names, seeds=seeds)[args.worker :: args.workers]
    t0 = time.perf_counter()
    for i, (strategy, seed, first) in enumerate(mine):
        print(
            f"[{time.strftime('%H:%M:%S')}] unit {i + 1}/{len(mine)}: {strategy} seed {seed} first {first}", flush=True
        )
        run_unit(pool, strategy, seed, first, parts, cfg)
    print(f"worker {args.worker} finished in {time.perf_counter() - t0:.0f} s", flush=True)


def merge(parts: Path, names: list[str], cfg: dict = CONFIG) -> dict:
    """Everything the finished parts hold, as one document (orderings in lexicographic order of task
    index). A (strategy, seed) with an unfinished unit is left out and listed under ``missing``."""
    orderings = [list(p) for p in itertools.permutations(names)]
    runs, missing = {}, []
    timing = {"cpu_s": 0.0, "wall_s_per_unit_sum": 0.0, "trained": 0, "last_finish": None}
    for strategy in STRATEGIES:
        for seed in SEEDS:
            recs: dict[tuple[str, ...], dict] = {}
            complete = True
            for first in names:
                done, closing = read_part(part_path(parts, strategy, seed, first))
                if closing is None:
                    complete = False
                    continue
                recs.update(done)
                timing["cpu_s"] += closing["cpu_s"]
                timing["wall_s_per_unit_sum"] += closing["wall_s"]
                timing["trained"] += closing["trained"]
                timing["last_finish"] = max(timing["last_finish"] or 0, closing["finished_at"])
            if not complete:
                missing.append(f"{strategy}/seed{seed}")
                continue
            acc, bwt, tree = [], [], {}
            for o in orderings:
                rec = recs[tuple(o)]
                acc.append(rec["acc"])
                bwt.append(rec["bwt"])
                for i in range(1, len(o) + 1):
                    tree.setdefault(",".join(o[:i]), rec["rows"][i])
                tree.setdefault("", rec["rows"][0])
            runs[f"{strategy}/seed{seed}"] = {"strategy": strategy, "seed": seed, "acc": acc, "bwt": bwt, "rows": tree}
    return {
        "config": cfg,
        "tasks": names,
        "orderings": [",".join(o) for o in orderings],
        "runs": runs,
        "missing": missing,
        "timing": timing,
        "rows_note": "rows[prefix] = test accuracy on every pool task (in `tasks` order) after training that prefix",
        "command": "python bench/ground_truth.py run --worker 0 --workers 2 & "
        "python bench/ground_truth.py run --worker 1 --workers 2; python bench/ground_truth.py merge",
    }


def cmd_merge(args) -> None:
    """Parts win; a (strategy, seed) without parts keeps what an earlier merge recorded, so seeds
    trained in different sessions (parts deleted in between) add up in one document."""
    names = load().names
    doc = merge(Path(args.parts), names)
    out = OUT / f"ground_truth_{POOL}.json.gz"
    if out.exists():
        old = load_ground_truth(out)
        for key in [k for k in doc["missing"] if k in old["runs"]]:
            doc["runs"][key] = old["runs"][key]
            doc["missing"].remove(key)
        doc["timing"] = {"earlier_merge": old["timing"], "this_merge": doc["timing"]}
    doc["timing"].update(json.loads(args.timing_note) if args.timing_note else {})
    with gzip.open(out, "wt") as f:
        json.dump(doc, f)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB); timing {doc['timing']}")


def load_ground_truth(path: str | Path | None = None) -> dict:
    path = Path(path) if path else OUT / f"ground_truth_{POOL}.json.gz"
    with gzip.open(path, "rt") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train this worker's share of the units (resumes)")
    r.add_argument("--worker", type=int, default=0)
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--parts", default=str(PARTS))
    r.add_argument("--quick", action="store_true")
    r.add_argument("--seeds", default=None, help="comma-separated seeds to train (default: all of SEEDS)")
    m = sub.add_parser("merge", help="write bench/out/ground_truth_mixed-mnist-7.json.gz from the parts")
    m.add_argument("--parts", default=str(PARTS))
    m.add_argument("--timing-note", default=None, help="JSON merged into the timing record (load, wall clock)")
    args = ap.parse_args(argv)
    {"run": cmd_run, "merge": cmd_merge}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
