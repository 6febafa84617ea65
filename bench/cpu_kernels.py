"""What pinning the CPU kernels to AVX2 (pipeline/cpu_kernels.py) costs and what it changes.

Each pool's ``--orderings`` random orderings (numpy seed 0) are trained on seeds 100 and 101 as
`lll run --seeds 100,101` trains them (``pipeline.runner.run_seeds``, one intra-op thread), in a
fresh process per mode, the modes alternated (ABAB, ``--rounds`` each):

* ``pinned``  — lll's default: AVX2 kernels in PyTorch, MKL and oneDNN;
* ``native``  — ``ATEN_CPU_CAPABILITY=avx512``: what torch picks by itself on an AVX-512 host
  (skipped on a host without AVX-512, where native is AVX2 already).

Prints, per pool, the training wall time of each mode (median over rounds), the ratio native /
pinned, whether each mode gives the same R bit for bit in every round, and the largest ACC
difference between the modes. Writes bench/out/cpu_kernels.json.

    python bench/cpu_kernels.py                 # mixed-mnist (the default pool) and permuted-mnist-10
    python bench/cpu_kernels.py --quick         # mixed-mnist, 2 orderings, 1 round
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

import common

MODES = {"pinned": {}, "native": {"ATEN_CPU_CAPABILITY": "avx512"}}
POOLS = ("mixed-mnist", "permuted-mnist-10")
SEEDS = [100, 101]


def child(pool_name: str, orderings: int) -> dict:
    """Train the orderings in this process; the kernels torch used, seconds, ACC and an R digest."""
    import numpy as np
    import torch

    from pipeline.config import StrategyConfig, TrainConfig
    from pipeline.cpu_kernels import capability
    from pipeline.runner import run_seeds
    from pipeline.workers import WORKER_THREADS
    from tasks.pool import build_pool
    from tasks.registry import resolve_pool_spec

    torch.set_num_threads(WORKER_THREADS)
    spec = resolve_pool_spec(pool_name, None, None, None)
    pool = build_pool(spec)
    names = [t.name for t in spec.tasks]
    train = TrainConfig(**{**spec.train, "device": "cpu"})
    rng = np.random.default_rng(0)
    orders = [[str(a) for a in rng.permutation(names)] for _ in range(orderings)]
    digest, acc = hashlib.sha256(), []
    t0 = time.perf_counter()
    for order in orders:
        for r in run_seeds(pool, order, StrategyConfig(name="naive"), train, SEEDS):
            digest.update(np.asarray(r.rmatrix.values, dtype=np.float64).tobytes())
            acc.append(float(r.rmatrix.acc()))
    return {"kernels": capability(), "seconds": time.perf_counter() - t0, "acc": acc, "r_sha256": digest.hexdigest()}


def run_child(mode: str, pool_name: str, orderings: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "DNNL_MAX_CPU_ISA")}
    env.update(MODES[mode], OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", pool_name, "--orderings", str(orderings)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def has_avx512() -> bool:
    try:
        return " avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--orderings", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pools", default=",".join(POOLS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.orderings)))
        return
    if args.quick:
        args.orderings, args.rounds, args.pools = 2, 1, POOLS[0]
    modes = [m for m in MODES if m == "pinned" or has_avx512()]
    result: dict = {"command": "python " + " ".join([__file__, *(sys.argv[1:] if argv is None else argv)]),
                    "orderings": args.orderings, "seeds": SEEDS, "rounds": args.rounds, "pools": {}}  # fmt: skip
    for pool_name in [p for p in args.pools.split(",") if p]:
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                runs[mode].append(run_child(mode, pool_name, args.orderings))
                print(f"{pool_name} {mode}: {runs[mode][-1]['kernels']} {runs[mode][-1]['seconds']:.1f} s", flush=True)
        row = {m: {"kernels": rs[0]["kernels"], "seconds_median": statistics.median(r["seconds"] for r in rs),
                   "seconds": [r["seconds"] for r in rs], "same_r_every_round": len({r["r_sha256"] for r in rs}) == 1,
                   "acc": rs[0]["acc"]} for m, rs in runs.items()}  # fmt: skip
        if "native" in row:
            row["native_over_pinned_time"] = row["native"]["seconds_median"] / row["pinned"]["seconds_median"]
            row["same_r_across_modes"] = runs["native"][0]["r_sha256"] == runs["pinned"][0]["r_sha256"]
            diffs = [abs(a - b) for a, b in zip(row["native"]["acc"], row["pinned"]["acc"], strict=True)]
            row["max_acc_difference"] = max(diffs)
            row["acc_differing"] = sum(d > 0 for d in diffs)
            print(f"{pool_name}: native/pinned time {row['native_over_pinned_time']:.3f}; same R across modes "
                  f"{row['same_r_across_modes']}; ACC differs in {row['acc_differing']} of {len(diffs)} runs, "
                  f"by up to {100 * row['max_acc_difference']:.2f} points", flush=True)  # fmt: skip
        result["pools"][pool_name] = row
    if not args.quick:
        (common.OUT / "cpu_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {common.OUT / 'cpu_kernels.json'}")


if __name__ == "__main__":
    main()
