"""The exhaustive search timed whole, against its floor (issue 21, points 4 and 6).

``lll search --exhaustive --strategies naive --seeds 1`` on the default pool (120 orderings, 325
distinct task-trainings through the prefix tree), 2 workers, ``--population 1`` and
``--population auto``, each timed from command start to exit (Ray start-up, pool loading, Optuna,
MLflow, checkpoints all included), and the **floor**: the same task-trainings trained in lockstep
(K = what ``auto`` picks) in two plain processes, level by level over the prefix tree, with no Ray,
Optuna or MLflow. All three run in this one invocation in ABBA order (1, auto, floor, floor, auto,
1, ...), so their ratios are comparable even on a shared machine; absolute seconds are not.

Each search's breakdown (start-up, ask, tell, waiting for workers, closing, recording thread) comes
from its summary line. The driver's own ceiling (units per second with a trainer that costs
nothing) comes from bench/driver_ceiling.py, run at the end.

    python bench/population_e2e.py [--out bench/out/population_e2e.json] [--repeats 2] [--quick]

``--quick`` is a smoke run (1 epoch, 100 images per task, one repeat, 2-4 actors in the ceiling).
Targets: auto within 1.4x of the floor; auto at least 2.2x faster than --population 1; the
driver's ceiling at least 200 units/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_FLAGS = ["--epochs", "1", "--train-per-task", "100", "--test-per-task", "50"]


def timed_search(population: str, pool: str, extra: list[str]) -> dict:
    """One `lll search --exhaustive` in a fresh folder; wall seconds and what its summary says."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    args = ["--exhaustive", "--strategies", "naive", "--seeds", "1", "--pool", pool, "--workers", "2", *extra]
    args += ["--validate", "0"]  # the search alone (validation on held-out seeds is on by default)
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "search.cli.app", "search", *args, "--population", population, "--study", "e2e"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"lll search --population {population} failed:\n{res.stderr[-3000:]}")
    out = " ".join(res.stdout.split())  # the summary may wrap
    summary = re.search(r"study e2e: (\d+) complete.* in (\d+) s", out)
    trainings = re.search(r"task-trainings: (\d+) run, (\d+) reused", out)
    workers = re.search(r"workers: (.*?\))", out)
    rec = {
        "population": population,
        "wall_seconds": round(wall, 1),
        "search_seconds": int(summary.group(2)) if summary else None,
        "complete": int(summary.group(1)) if summary else None,
        "task_trainings_run": int(trainings.group(1)) if trainings else None,
        "reused": int(trainings.group(2)) if trainings else None,
        "workers": workers.group(1).strip() if workers else None,
        "breakdown": breakdown(out),
        "loadavg_at_start": round(load, 2),
    }
    print(f"  --population {population}: {json.dumps(rec)}", flush=True)
    return rec


def breakdown(summary: str) -> dict[str, float]:
    """The summary's "driver time:" line as numbers (start-up, ask, tell, wait, close, record)."""
    line = re.search(r"driver time: (.*?) on its own thread", summary)
    if not line:
        return {}
    names = {"start-up": "startup", "waiting for workers": "wait", "recording": "record", "closing": "close"}
    return {names.get(k.strip(), k.strip()): float(v) for k, v in re.findall(r"([a-z -]+?) ([\d.]+) s", line.group(1))}


# ---- the floor: the same task-trainings in plain processes ----------------------------------------


def tree_levels(leaves: list[tuple[str, ...]]) -> list[list[tuple[str, ...]]]:
    """Every prefix the ``leaves`` need, grouped by length, each level in lexicographic order."""
    T = max(len(o) for o in leaves)
    return [sorted({o[:d] for o in leaves}) for d in range(1, T + 1)]


def floor_process(spec_json: str, fingerprint: str, train_json: str, leaves: list, queue) -> None:
    """One plain process: a lockstep worker (K = auto) trains its part of the tree level by level,
    K prefixes per call (a level's siblings stack fully; their parents are in the worker's cache)."""
    import torch

    from pipeline.config import StrategyConfig
    from pipeline.units import Unit
    from pipeline.workers import TrialWorker

    torch.set_num_threads(1)
    worker = TrialWorker(spec_json, population="auto", pool_fingerprint=fingerprint, cache_bytes=8 << 30)
    k = worker.population
    sj = StrategyConfig(name="naive").model_dump_json()
    t0, trained = time.perf_counter(), 0
    for level in tree_levels([tuple(o) for o in leaves]):
        for i in range(0, len(level), k):
            out = worker.train_units([Unit(p, sj, train_json, 0) for p in level[i : i + k]])
            trained += sum(r["trained"] for r in out)
            assert all(r["error"] is None for r in out), out
    queue.put({"seconds": time.perf_counter() - t0, "trained": trained, "K": k})


def floor_run(pool_name: str, quick: bool, processes: int = 2) -> dict:
    """The floor: the tree's task-trainings split over ``processes`` plain processes by leaves
    (lexicographic halves: each first-level prefix is trained once, but one split at the middle)."""
    from pipeline.config import TrainConfig
    from search.cli.commands.run import pool_train_defaults
    from search.orders.lehmer import all_orderings
    from tasks import pool_cache
    from tasks.registry import load_pool

    extra = {"train_per_task": 100, "test_per_task": 50} if quick else {}
    pool = load_pool(pool_name, None, False, extra.get("train_per_task"), extra.get("test_per_task"))
    pool_cache.save(pool)
    train = TrainConfig(**{**pool_train_defaults(pool_name, None), **({"epochs": 1} if quick else {})})
    leaves = list(all_orderings(pool.names))
    parts = [leaves[i * len(leaves) // processes : (i + 1) * len(leaves) // processes] for i in range(processes)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t0 = time.perf_counter()
    procs = [
        ctx.Process(
            target=floor_process,
            args=(pool.spec.model_dump_json(), pool.fingerprint(), train.model_dump_json(), part, queue),
        )
        for part in parts
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    rec = {
        "population": "floor",
        "wall_seconds": round(max(r["seconds"] for r in results), 2),  # training only, the slower process
        "with_process_start": round(wall, 1),
        "task_trainings_run": sum(r["trained"] for r in results),
        "K": results[0]["K"],
        "processes": processes,
        "loadavg_at_start": round(os.getloadavg()[0], 2),
    }
    print(f"  floor: {json.dumps(rec)}", flush=True)
    return rec


def median(runs: list[dict], key: str = "wall_seconds") -> float:
    return statistics.median(r[key] for r in runs)


def end_to_end(pool: str, repeats: int, quick: bool) -> dict:
    """--population 1, auto and the floor in ABBA order (1, auto, floor, floor, auto, 1, ...), so a
    load that drifts over the run weighs on all alike; ratios of the medians."""
    extra = QUICK_FLAGS if quick else []
    runs: dict[str, list[dict]] = {"1": [], "auto": [], "floor": []}
    for i in range(repeats):
        for kind in ("1", "auto", "floor") if i % 2 == 0 else ("floor", "auto", "1"):
            runs[kind].append(floor_run(pool, quick) if kind == "floor" else timed_search(kind, pool, extra))
    auto, one, floor = median(runs["auto"]), median(runs["1"]), median(runs["floor"])
    parts = ("startup", "ask", "tell", "wait", "close", "record")
    parts_auto = {p: round(statistics.median(r["breakdown"].get(p, 0.0) for r in runs["auto"]), 2) for p in parts}
    rec = {
        "command": "lll search --exhaustive --strategies naive --seeds 1 --workers 2 --population {1|auto}",
        "pool": pool,
        "quick": quick,
        "order": "ABBA" if repeats > 1 else "AB",
        "population_1": runs["1"],
        "population_auto": runs["auto"],
        "floor": runs["floor"],
        "breakdown_auto_median": parts_auto,
        "auto_over_floor": round(auto / floor, 3),
        "auto_speedup_vs_1": round(one / auto, 3),
        "targets": {"auto_over_floor": "<= 1.4", "auto_speedup_vs_1": ">= 2.2", "driver_units_per_s": ">= 200"},
    }
    print(
        f"end to end (medians): population 1 {one:.1f} s, auto {auto:.1f} s, floor {floor:.1f} s (training only)\n"
        f"  auto / floor = {rec['auto_over_floor']:.2f}x (target <= 1.4), "
        f"auto vs population 1 = {rec['auto_speedup_vs_1']:.2f}x faster (target >= 2.2)\n"
        "  auto's driver time: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts_auto.items()),
        flush=True,
    )
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench/out/population_e2e.json"))
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, in ABBA order")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny training, one repeat, 2-4 actors")
    ap.add_argument("--no-ceiling", action="store_true", help="skip bench/driver_ceiling.py")
    args = ap.parse_args()
    record = end_to_end(args.pool, 1 if args.quick else args.repeats, args.quick)
    if not args.no_ceiling:
        from bench.driver_ceiling import ceiling

        c = ceiling([2, 4] if args.quick else [2, 8, 32, 64], quick=args.quick)
        record["driver_ceiling"] = c
        record["driver_units_per_s"] = c["units_per_s"]
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
