"""One driver's ceiling (issue 21, point 6): units per second it asks, dispatches, records and tells
when training costs nothing.

The real search (launch.run_search: the Optuna study, the scheduler on Ray actors, MLflow recording
in SQLite on its thread) runs with a bench-only worker whose ``train_units`` returns a stored
result at once, on 2 to 64 actors (idle actors are cheap; each asks for 2/N CPUs). The sampler is
``random`` (the model sampler's GP has its own cost per ask), pruning is off and the prefix cache
too, so every task of every trial is one unit sent to a worker. The driver's main-thread time is
split into ask, tell, dispatch and results (Ray calls, the unit table), the rest (events, building
records) and idle (blocked on workers or the recorder); the MLflow writes run on their own thread.
The busiest part caps the rate.

The Optuna storage is the embedded default (``journal``: search/study/journal.py) or ``sqlite``
(``--storage``), to compare the two in one window. The load average is recorded beside each run.
From the units/s, the record says how many workers one driver keeps busy at a unit's cost
(``UNIT_SECONDS``: 2.5 s, issue 21's figure; 0.66 s, a naive task-training in docs/results.md).

    python bench/driver_ceiling.py [--actors 2,8,32,64] [--trials 400] [--quick] [--storage journal|sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STORAGES = {"journal": "journal:///optuna.journal", "sqlite": "sqlite:///optuna.db"}
UNIT_SECONDS = {"issue_21": 2.5, "naive_task_training": 0.66}  # a unit's cost on one worker


class ZeroCostWorker:
    """Stands in for pipeline.workers.TrialWorker: same constructor and answers, no training. Rows
    are stored per ordering prefix (made up once, deterministic), so a trial's R is consistent."""

    def __init__(self, pool_spec_json: str, *args: Any, **kwargs: Any) -> None:
        self.names = [t["name"] for t in json.loads(pool_spec_json)["tasks"]]
        self.rows: dict[tuple, dict[str, float]] = {}

    def info(self) -> dict[str, Any]:
        return {"population": 8, "population_note": "", "node_id": "local", "node_ip": "127.0.0.1", "device": "cpu"}

    def _row(self, prefix: tuple) -> dict[str, float]:
        if prefix not in self.rows:
            h = abs(hash(prefix))
            self.rows[prefix] = {n: ((h >> (3 * i)) % 100) / 100 for i, n in enumerate(self.names)}
        return self.rows[prefix]

    def train_units(self, units: list) -> list[dict[str, Any]]:
        out = []
        for u in units:
            rows = [self._row(tuple(u.order[:i])) for i in range(len(u.order) + 1)]
            sizes = [{"params": 1.0, "stored_bytes": 0.0}] * len(u.order)
            done = {"rows": rows, "row": rows[-1], "sizes": sizes, "lam": None, "trained": 1, "reused": 0}
            out.append({**done, "seconds": 0.0, "checkpoint": None, "error": None})
        return out


def one_run(actors: int, trials: int, storage: str = "journal") -> dict[str, Any]:
    """A search of ``trials`` random orderings on ``actors`` zero-cost workers, in a fresh folder."""
    import search.study.scheduler as scheduler
    from search.study.launch import SearchRequest, prepare, run_search

    scheduler.TrialWorker = ZeroCostWorker  # WorkerSpec.start makes actors of this class
    if ZeroCostWorker.__module__ != "__main__":  # imported (population_e2e): ship the class by value
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[ZeroCostWorker.__module__])
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            req = SearchRequest(
                strategies=["naive"], trials=trials, workers=actors, cpus_per_worker=2 / actors, seeds=1,
                study=f"ceiling-{actors}", storage=STORAGES[storage], tracking_uri="sqlite:///mlflow.db",
                prune=False, cache_mb=0, checkpoints="none", sampler="random", validate=0,
            )  # fmt: skip
            load = os.getloadavg()[0]
            _study, s, _rec = run_search(req, None, prepare(req))
        finally:
            os.chdir(cwd)
    t = s.timing
    loop = max(1e-9, s.seconds - t.get("boot", 0.0))
    wait, dispatch = t.get("wait", 0.0), t.get("dispatch", 0.0)
    parts = {
        "ask": t.get("ask", 0.0),
        "tell": t.get("tell", 0.0),
        "dispatch_and_results": dispatch,  # Ray calls out, results in, the unit table
        "other_main_thread": max(0.0, loop - t.get("ask", 0.0) - t.get("tell", 0.0) - wait),
        "record_thread": t.get("record", 0.0),  # MLflow, on its own thread
    }
    idle = max(0.0, wait - dispatch)  # the main thread blocked on the workers or the recorder
    busy = sum(parts.values())  # the driver's own seconds: both threads, as if they shared one core
    rec = {
        "storage": storage,
        "actors": actors,
        "trials": s.complete,
        "units": s.trained,
        "loop_seconds": round(loop, 2),
        "units_per_s": round(s.trained / loop, 1),
        # what the driver could keep up with if workers answered at once (no idle time): units per
        # second of its own work. On a loaded machine the wall rate above is the workers' latency.
        "units_per_driver_s": round(s.trained / max(busy, 1e-9), 1),
        "ms_per_unit": {k: round(1000 * v / max(1, s.trained), 2) for k, v in parts.items()},
        "seconds": {k: round(v, 2) for k, v in {**parts, "main_thread_idle": idle}.items()},
        "cap": max(parts, key=parts.get),  # the busiest part (idle time caps nothing)
        "load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],  # at its start and end
    }
    print(f"  {actors} actors: {json.dumps(rec)}", flush=True)
    return rec


def ceiling(
    actors: list[int], trials: int | None = None, quick: bool = False, storage: str = "journal"
) -> dict[str, Any]:
    """The best units/s over the actor counts, with every run's split."""
    from search.study.cluster import connect

    connect(None)
    runs = [one_run(n, trials or (40 if quick else 400), storage) for n in actors]
    best = max(runs, key=lambda r: r["units_per_s"])
    capacity = min(r["units_per_driver_s"] for r in runs)  # the driver's own limit, worst actor count
    busy = {k: round(capacity * v) for k, v in UNIT_SECONDS.items()}
    print(
        f"driver ceiling: {best['units_per_s']:.0f} units/s wall ({best['actors']} actors, {storage}), "
        f"{capacity:.0f} units per second of the driver's own work (capped by {best['cap']}); "
        f"keeps {busy['issue_21']} workers busy at {UNIT_SECONDS['issue_21']} s per unit"
    )
    return {
        "units_per_s": best["units_per_s"],
        "units_per_driver_s": capacity,
        "storage": storage,
        "workers_kept_busy": busy,  # at units_per_driver_s
        "unit_seconds": UNIT_SECONDS,
        "runs": runs,
        "quick": quick,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", default="2,8,32,64")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 and 4 actors, 40 trials")
    ap.add_argument("--out", default=None, help="also write the record here (JSON)")
    ap.add_argument("--storage", choices=sorted(STORAGES), default="journal", help="the embedded Optuna storage")
    args = ap.parse_args()
    actors = [2, 4] if args.quick else [int(a) for a in args.actors.split(",")]
    rec = ceiling(actors, args.trials, args.quick, args.storage)
    if args.out:
        Path(args.out).write_text(json.dumps(rec, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    main()
