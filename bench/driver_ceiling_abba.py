"""The driver's ceiling (bench/driver_ceiling.py) of this checkout against another one's code, in
ABBA order in one invocation: on a shared machine only ratios taken side by side mean anything.

Each run is bench/driver_ceiling.py of THIS checkout in a fresh process with ``PYTHONPATH`` set to
the checkout under test (A: ``--baseline``, e.g. ``git worktree add /tmp/base main``; B: this
one), so the bench is the same and only the library differs. Per MLflow store (``--tracking
sqlite,server``; one ``mlflow server`` serves every run of its block), the order is A, B, B, A;
the record keeps every run, the medians per side and actor count, and the ratios B/A.

    python bench/driver_ceiling_abba.py --baseline /tmp/base --actors 2,8 --trials 40 --key record_path
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from driver_ceiling import mlflow_server, save  # the script's folder is on the path

ROOT = Path(__file__).resolve().parents[1]

KEYS = (  # per run, what the medians and ratios are taken of
    "units_per_s",
    "units_per_driver_s",
    "record_cpu_ms_per_unit",
    "driver_process_cpu_ms_per_unit",
)


def run(checkout: Path, actors: str, trials: int, tracking: str, uri: str | None) -> list[dict[str, Any]]:
    """One bench/driver_ceiling.py process with ``checkout``'s code; its runs (one per actor count)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(ROOT / "bench" / "driver_ceiling.py"), "--actors", actors, "--trials", str(trials)]
        cmd += ["--tracking", tracking, "--out", out.name] + (["--tracking-uri", uri] if uri else [])
        env = {**os.environ, "PYTHONPATH": str(checkout), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        subprocess.run(cmd, check=True, env=env, cwd=checkout)
        return json.loads(Path(out.name).read_text())["runs"]


def with_record_ms(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "record_thread_ms_per_unit": r["ms_per_unit"]["record_thread"]}


def block(baseline: Path, actors: str, trials: int, tracking: str, uri: str | None) -> dict[str, Any]:
    """A, B, B, A for one store: every run, medians per (side, actors), ratios B/A."""
    sides = {"A": baseline, "B": ROOT}
    runs: list[dict[str, Any]] = []
    for side in "ABBA":
        for r in run(sides[side], actors, trials, tracking, uri):
            runs.append({"side": side, **with_record_ms(r)})
    keys = (*KEYS, "record_thread_ms_per_unit")
    med: dict[str, dict[str, dict[str, float]]] = {}
    for n in sorted({r["actors"] for r in runs}):
        med[str(n)] = {
            side: {k: statistics.median(r[k] for r in runs if r["side"] == side and r["actors"] == n) for k in keys}
            for side in "AB"
        }
    ratios = {
        n: {k: round(m["B"][k] / max(m["A"][k], 1e-9), 2) for k in keys} for n, m in med.items()
    }  # fmt: skip
    print(f"{tracking}: medians {json.dumps(med)}\n{tracking}: ratios B/A {json.dumps(ratios)}", flush=True)
    return {"median": med, "ratio_b_over_a": ratios, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the other checkout (A), e.g. a worktree of main")
    ap.add_argument("--actors", default="2,8")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--tracking", default="sqlite,server", help="MLflow stores, each its own ABBA block")
    ap.add_argument("--key", default=None, help="store the record under this key of bench/out/driver_ceiling.json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    baseline = Path(args.baseline).resolve()
    if not (baseline / "search").is_dir():
        ap.error(f"--baseline {baseline}: not a checkout of lll (no search/ folder)")
    rec: dict[str, Any] = {"baseline": str(baseline), "actors": args.actors, "trials": args.trials}
    rec["load_avg_1_5_15_at_start"] = [round(x, 2) for x in os.getloadavg()]
    for tracking in args.tracking.split(","):
        if tracking == "server":
            with mlflow_server() as (uri, _pgid):
                rec[tracking] = block(baseline, args.actors, args.trials, tracking, uri)
        else:
            rec[tracking] = block(baseline, args.actors, args.trials, tracking, None)
    rec["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    save(rec, args.out, args.key)


if __name__ == "__main__":
    main()
