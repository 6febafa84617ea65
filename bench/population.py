"""Population (lockstep) training against one model at a time: task-trainings per second, and agreement.

Issue 11, point 4 (first half) and point 3. All numbers come from one run on the same machine, side
by side, so ratios are comparable even when the machine is loaded (absolute rates are not):

* ``throughput``: task-trainings per second on the default pool (mixed-mnist) at the default
  training config, for naive, EWC, SI and A-GEM. Each measured unit trains a second task on top of a
  cached first one (so penalties, memories and projections are active), exactly as
  ``TrialWorker.train_units`` does for the search: training, ``after_task`` (Fisher, memory),
  evaluation on every pool task and the prefix snapshot are all inside the timing.
  - one thread: one one-at-a-time worker vs one lockstep worker at K ∈ {1, 8, 32, 128};
  - two threads: two single-threaded one-at-a-time worker processes (today's search) vs one
    lockstep worker with 2 threads, and vs two single-threaded lockstep workers.
* ``agreement`` (``--agreement``): R of every lockstep strategy, one at a time vs lockstep, over
  several seeds: mean |ΔR| per entry and ACC differences next to the seed-to-seed ACC spread.
* ``end_to_end`` (``--e2e``): reserved for ``lll search --exhaustive --population 1`` vs ``auto``
  (the scheduler's half of point 4); it adds its record under the ``"end_to_end"`` key.

It deliberately measures a worker, not a search: ``TrialWorker.train_units`` is called in plain
processes (no Ray, no scheduler) on a fixed set of units, so the ratio is the training's alone;
common.train_orderings is not used because its scheduler would decide the batches being compared.

    python bench/population.py --quick                 # K ∈ {1, 8, 32}, fewer units (~20 min under load)
    python bench/population.py --agreement-only --seeds 3   # lockstep vs one at a time R only
    python bench/population.py [--agreement] [--e2e] [--out bench/out/population.json]
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import common
import numpy as np
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.lockstep import choose_population
from pipeline.train import pick_device
from pipeline.units import Unit
from tasks.registry import DEFAULT_POOL, resolve_pool_spec

STRATEGIES = ["naive", "ewc", "si", "agem"]
LOCKSTEP_STRATEGIES = ["naive", "joint", "l2", "ewc", "online-ewc", "si", "mas", "rwalk", "agem", "replay", "lwf"]
KS = [1, 8, 32, 128]


def pool_json() -> str:
    return resolve_pool_spec(DEFAULT_POOL).model_dump_json()


def pair_units(names: list[str], strategy: str, n: int) -> tuple[list[Unit], list[Unit]]:
    """``n`` second-task units (a, b) over seeds 0, 1, ... and the first-task units they need."""
    s_json, t_json = StrategyConfig(name=strategy).model_dump_json(), TrainConfig().model_dump_json()
    pairs = ((seed, p) for seed in itertools.count() for p in itertools.permutations(names, 2))
    chosen = list(itertools.islice(pairs, n))
    firsts = sorted({(seed, p[0]) for seed, p in chosen})
    return (
        [Unit((a,), s_json, t_json, seed) for seed, a in firsts],
        [Unit(p, s_json, t_json, seed) for seed, p in chosen],
    )


def child(spec: str, strategy: str, population: int, threads: int, n: int, barrier, queue) -> None:
    """One worker process: build the first-task prefixes (untimed), then time ``n`` units."""
    torch.set_num_threads(threads)
    from pipeline.workers import TrialWorker

    worker = TrialWorker(spec, population=population, threads=threads, cache_bytes=8 << 30)
    firsts, pairs = pair_units(worker.pool.names, strategy, n)
    worker.train_units(firsts)
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    out = worker.train_units(pairs)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    errors = [o["error"] for o in out if o["error"]]
    trained = sum(o["trained"] for o in out)
    queue.put({"n": n, "seconds": seconds, "cpu_seconds": cpu, "trained": trained, "errors": errors[:3]})


def measure(spec: str, strategy: str, population: int, threads: int, procs: int, n: int) -> dict:
    """``procs`` worker processes side by side, each timing ``n`` units; task-trainings per second."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    args = (spec, strategy, population, threads, n, barrier, queue)
    ps = [ctx.Process(target=child, args=args) for _ in range(procs)]
    for p in ps:
        p.start()
    results = [queue.get() for _ in ps]
    for p in ps:
        p.join()
    trained = sum(r["trained"] for r in results)
    wall = max(r["seconds"] for r in results)
    cpu = sum(r["cpu_seconds"] for r in results)
    return {
        "rate": trained / wall,  # task-trainings per wall-clock second
        "rate_per_cpu_second": trained / cpu,  # per CPU second used: robust to other jobs' load
        "seconds": wall,
        "cpu_seconds": cpu,
        "trained": trained,
        "errors": [e for r in results for e in r["errors"]],
    }


def throughput(quick: bool, save=lambda partial: None, strategies: list[str] = STRATEGIES) -> dict:
    """Per strategy, one-at-a-time vs lockstep; ``save(partial)`` after each strategy (a run cut
    short still leaves its numbers)."""
    spec = pool_json()
    ks = [1, 8, 32] if quick else KS
    n_one = 4 if quick else 8
    out: dict = {}
    for strategy in strategies:
        rows: dict = {}
        rows["one_at_a_time_1thread"] = measure(spec, strategy, 1, 1, 1, n_one)
        for k in ks:
            rows[f"lockstep_K{k}_1thread"] = measure(spec, strategy, k, 1, 1, max(k, n_one))
        best = max(ks, key=lambda k: rows[f"lockstep_K{k}_1thread"]["rate_per_cpu_second"])
        rows["two_one_at_a_time_workers"] = measure(spec, strategy, 1, 1, 2, n_one)
        rows[f"lockstep_K{best}_2threads"] = measure(spec, strategy, best, 2, 1, max(best, n_one))
        rows[f"two_lockstep_K{best}_workers"] = measure(spec, strategy, best, 1, 2, max(best, n_one))
        base1 = rows["one_at_a_time_1thread"]["rate"]
        base2 = rows["two_one_at_a_time_workers"]["rate"]
        ratios = {f"K{k}_vs_one_1thread": rows[f"lockstep_K{k}_1thread"]["rate"] / base1 for k in ks}
        cpu1 = rows["one_at_a_time_1thread"]["rate_per_cpu_second"]
        for k in ks:  # per CPU second: what the other jobs' load does not distort
            ratios[f"K{k}_vs_one_per_cpu_second"] = rows[f"lockstep_K{k}_1thread"]["rate_per_cpu_second"] / cpu1
        ratios["best_K"] = best
        ratios["lockstep_2threads_vs_two_workers"] = rows[f"lockstep_K{best}_2threads"]["rate"] / base2
        ratios["two_lockstep_workers_vs_two_workers"] = rows[f"two_lockstep_K{best}_workers"]["rate"] / base2
        out[strategy] = {"runs": rows, "ratios": ratios}
        print(f"{strategy:6s}", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in ratios.items()}))
        print("        rates (task-trainings/s):", {k: round(v["rate"], 2) for k, v in rows.items()}, flush=True)
        print("        per CPU second:", {k: round(v["rate_per_cpu_second"], 2) for k, v in rows.items()}, flush=True)
        save(out)
    return out


def agreement(seeds: int, epochs: int | None) -> dict:
    """Lockstep vs one at a time on the default pool, per lockstep strategy: ΔR and ΔACC vs seed noise."""
    from pipeline.rmatrix import RMatrix
    from pipeline.workers import TrialWorker

    spec = pool_json()
    train = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    one, lock = TrialWorker(spec, population=1), TrialWorker(spec, population=max(2, seeds))
    order = tuple(one.pool.names)
    out: dict = {}
    for strategy in LOCKSTEP_STRATEGIES:
        s_json, t_json = StrategyConfig(name=strategy).model_dump_json(), train.model_dump_json()
        units = [Unit(order, s_json, t_json, s) for s in range(seeds)]
        t0 = time.perf_counter()
        a = one.train_units(units)
        t1 = time.perf_counter()
        b = lock.train_units(units)
        t2 = time.perf_counter()
        ra = [RMatrix(order, [[r[n] for n in order] for r in o["rows"]]) for o in a]
        rb = [RMatrix(order, [[r[n] for n in order] for r in o["rows"]]) for o in b]
        dr = float(np.mean([np.abs(x.values[1:] - y.values[1:]).mean() for x, y in zip(ra, rb, strict=True)])) * 100
        acc_a = [x.acc() * 100 for x in ra]
        acc_b = [y.acc() * 100 for y in rb]
        out[strategy] = {
            "mean_abs_dR_points": dr,
            "bitwise_equal": all(np.array_equal(x.values, y.values) for x, y in zip(ra, rb, strict=True)),
            "ACC_one": acc_a,
            "ACC_lockstep": acc_b,
            "mean_abs_dACC_points": float(np.mean(np.abs(np.subtract(acc_a, acc_b)))),
            "ACC_seed_std_points": statistics.stdev(acc_a) if len(acc_a) > 1 else None,
            "seconds_one": t1 - t0,
            "seconds_lockstep": t2 - t1,
        }
        rec = out[strategy]
        print(
            f"{strategy:10s} mean|ΔR|={dr:.3f} pts  bitwise={rec['bitwise_equal']}  ACC one={np.mean(acc_a):.2f} "
            f"lockstep={np.mean(acc_b):.2f} seed-std={rec['ACC_seed_std_points']}",
            flush=True,
        )
    return {"seeds": seeds, "order": list(order), "train": train.model_dump(mode="json"), "strategies": out}


def end_to_end() -> dict:
    """``lll search --exhaustive --strategies naive --seeds 1`` with --population 1 vs auto, timed end
    to end in ABBA order: bench/population_e2e.py (the scheduler's half of issue 11 point 4)."""
    from population_e2e import end_to_end as search_end_to_end

    return search_end_to_end()


def machine() -> dict:
    device = pick_device("auto")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": device.type,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_at_start": load,
        "auto_K": choose_population("auto", device)[0],
        "note": "shared machine: other jobs were running; compare ratios within this run, not absolute rates",
    }


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="K ∈ {1, 8, 32} and fewer units (fits ~20 min under load)")
    ap.add_argument("--agreement", action="store_true", help="also measure lockstep vs one-at-a-time R")
    ap.add_argument("--agreement-only", action="store_true", help="only the agreement measurement")
    ap.add_argument("--seeds", type=int, default=3, help="seeds for --agreement")
    ap.add_argument("--e2e", action="store_true", help="also the end-to-end search (scheduler's half)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="throughput for these (comma-separated)")
    ap.add_argument("--out", default="bench/out/population.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = Path(args.out)
    record = json.loads(path.read_text()) if path.exists() else {}
    record["machine"] = machine()
    record["device"] = record["machine"]["device"]
    print("machine:", record["machine"], flush=True)
    if not args.agreement_only:
        t0 = time.perf_counter()
        record["K"] = KS if not args.quick else [1, 8, 32]

        def save(partial: dict) -> None:
            record["throughput"] = partial
            record["throughput_seconds"] = time.perf_counter() - t0
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2))

        save(throughput(args.quick, save, args.strategies.split(",")))
    if args.agreement or args.agreement_only:
        record["agreement"] = agreement(args.seeds, None)
    if args.e2e:
        record["end_to_end"] = end_to_end()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
