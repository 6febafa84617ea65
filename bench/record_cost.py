"""The driver's CPU per MLflow record, alone: ``recording.write`` of N search-trial records (5 tasks,
one seed, the series and tags a trial has) into a fresh store, timed with ``time.thread_time``.

``--baseline DIR`` runs it with another checkout's code and this one's in ABBA order, each side in
its own process, against one SQLite file per run and one ``mlflow server`` per block
(bench/driver_ceiling.py's), and prints the medians and the ratio B/A.

    python bench/record_cost.py [--records 100] [--uri sqlite:///mlflow.db]
    python bench/record_cost.py --baseline /tmp/base --tracking sqlite,server --repeats 2 --key record_cost
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measure(uri: str, n: int) -> dict[str, float]:
    """ms of this thread's CPU and of wall time per record, after 5 records that warm the client."""
    import numpy as np

    from pipeline.config import StrategyConfig, TrainConfig
    from pipeline.rmatrix import RMatrix
    from search.study.outcome import TrialOutcome
    from search.study.recording import StudyContext, trial_record, write
    from search.study.settings import StudySettings

    names = tuple(f"t{i}" for i in range(5))
    st = StudySettings(
        pool="p", pool_spec="{}", pool_fingerprint="f", tasks=names, strategies=("naive",), objective="acc",
        sampler="random", seeds=1, seed=0, train=TrainConfig(), checkpoints="none", prune=False,
        prune_startup=0, exhaustive=False, trials=n,
    )  # fmt: skip
    ctx, rng, recs = StudyContext(f"cost-{os.getpid()}", None, st), np.random.default_rng(0), []
    for i in range(n + 5):
        r = RMatrix(names, rng.random((6, 5)))
        m = {"acc": r.acc(), "bwt": r.bwt(), "fwt": r.fwt(), "forgetting": r.forgetting(), "acc_std": 0.0}
        node = {"node_id": "n", "node_ip": "127.0.0.1", "device": "cpu"}
        sizes = [{"params": 1.0, "stored_bytes": 0.0}] * 5
        o = TrialOutcome(i, "complete", names, StrategyConfig(), None, (0,), r, m, (r.acc(),), node=node, sizes=sizes)
        recs.append(trial_record(ctx, o))
    experiments: dict[str, str] = {}
    for rec in recs[:5]:
        write(uri, rec, experiments)
    c0, t0 = time.thread_time(), time.perf_counter()
    for rec in recs[5:]:
        write(uri, rec, experiments)
    return {"cpu_ms": 1000 * (time.thread_time() - c0) / n, "wall_ms": 1000 * (time.perf_counter() - t0) / n}


def side(checkout: Path, uri: str | None, n: int) -> dict[str, float]:
    """One process with ``checkout``'s code (a fresh SQLite file when ``uri`` is None)."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--records", str(n), "--json"]
        cmd += ["--uri", uri or f"sqlite:///{d}/mlflow.db"]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        out = subprocess.run(cmd, check=True, env=env, cwd=d, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])


def abba(baseline: Path, trackings: list[str], n: int, repeats: int) -> dict[str, Any]:
    from driver_ceiling import mlflow_server  # the script's folder is on the path

    out: dict[str, Any] = {"records": n, "baseline": str(baseline), "load_avg_1_5_15_at_start": os.getloadavg()}
    for tracking in trackings:
        runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}

        def block(uri: str | None, runs: dict[str, list[dict[str, float]]] = runs) -> None:
            for _ in range(repeats):
                for s in "ABBA":
                    runs[s].append(side(baseline if s == "A" else ROOT, uri, n))

        if tracking == "server":
            with mlflow_server() as (uri, _pgid):
                block(uri)
        else:
            block(None)
        keys = ("cpu_ms", "wall_ms")
        med = {s: {k: round(statistics.median(r[k] for r in rs), 2) for k in keys} for s, rs in runs.items()}
        ratio = {k: round(med["B"][k] / med["A"][k], 2) for k in keys}
        out[tracking] = {"median_per_record": med, "ratio_b_over_a": ratio, "runs": runs}
        print(f"{tracking}: per record {json.dumps(med)}, B/A {json.dumps(ratio)}", flush=True)
    out["load_avg_1_5_15_at_end"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--uri", default=None, help="one measurement against this store (default: a new SQLite file)")
    ap.add_argument("--json", action="store_true", help="print the measurement as one JSON line")
    ap.add_argument("--baseline", default=None, help="ABBA against this checkout's code")
    ap.add_argument("--tracking", default="sqlite,server")
    ap.add_argument("--repeats", type=int, default=1, help="ABBA blocks per store")
    ap.add_argument("--key", default=None, help="store the ABBA record under this key of bench/out/driver_ceiling.json")
    args = ap.parse_args()
    if args.baseline:
        rec = abba(Path(args.baseline).resolve(), args.tracking.split(","), args.records, args.repeats)
        if args.key:
            from driver_ceiling import save

            save(rec, None, args.key)
        return
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        got = measure(args.uri or "sqlite:///mlflow.db", args.records)
    print(json.dumps(got) if args.json else f"{got['cpu_ms']:.2f} ms CPU, {got['wall_ms']:.2f} ms wall per record")


if __name__ == "__main__":
    main()
