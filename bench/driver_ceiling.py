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
(``--storage``), to compare the two in one window. MLflow is a SQLite file (``--tracking sqlite``,
one writer thread) or a real local ``mlflow server`` on a SQLite backend, started here
(``--tracking server``), which the recorder writes to with several threads: ``--recorder-workers
1,4`` runs each actor count with 1 and 4 writers side by side, in ABBA order (1, 4, 4, 1).
The record's part is the recorder's wall time with at least one write in flight (its capacity).
The load average is recorded beside each run.
From the units/s, the record says how many workers one driver keeps busy at a unit's cost
(``UNIT_SECONDS``: 2.5 s, issue 21's figure; 0.66 s, a naive task-training in docs/results.md).

    python bench/driver_ceiling.py [--actors 2,8,32,64] [--trials 400] [--quick] [--storage journal|sqlite]
    python bench/driver_ceiling.py --tracking server --recorder-workers 1,4 --actors 2,8 --trials 40 \
        --key server_writers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
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


@contextlib.contextmanager
def driver_cpu() -> Iterator[list[float]]:
    """Yields a list that holds, after the block, the CPU seconds of this process (all threads:
    the loop, the recorder, Ray's) spent inside ``SearchDriver.run`` (start-up and close left out)."""
    from search.study.driver import SearchDriver

    got, run = [0.0], SearchDriver.run

    def timed(self: SearchDriver) -> Any:
        c0 = time.process_time()
        try:
            return run(self)
        finally:
            got[0] += time.process_time() - c0

    SearchDriver.run = timed
    try:
        yield got
    finally:
        SearchDriver.run = run


def one_run(
    actors: int, trials: int, storage: str = "journal", tracking: str | None = None, writers: int | None = None
) -> dict[str, Any]:
    """A search of ``trials`` random orderings on ``actors`` zero-cost workers, in a fresh folder
    (``tracking``: an MLflow URI, default a SQLite file there; ``writers``: the recorder's threads
    for a store that takes concurrent writes)."""
    import search.study.recorder as recorder
    import search.study.scheduler as scheduler
    from search.study.launch import SearchRequest, prepare, run_search

    scheduler.TrialWorker = ZeroCostWorker  # WorkerSpec.start makes actors of this class
    if ZeroCostWorker.__module__ != "__main__":  # imported (population_e2e): ship the class by value
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[ZeroCostWorker.__module__])
    default_writers = recorder.CONCURRENT_WRITERS
    recorder.CONCURRENT_WRITERS = writers or default_writers
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            req = SearchRequest(
                strategies=["naive"], trials=trials, workers=actors, cpus_per_worker=2 / actors, seeds=1,
                max_seeds=1,  # no re-evaluation: the configuration the recorded runs measured
                study=f"ceiling-{actors}-{os.path.basename(tmp)}", storage=STORAGES[storage],
                tracking_uri=tracking or "sqlite:///mlflow.db",
                prune=False, cache_mb=0, checkpoints="none", sampler="random", validate=0,
            )  # fmt: skip
            load = os.getloadavg()[0]
            with driver_cpu() as cpu:  # the driver process's CPU in the search loop, every thread
                _study, s, _rec = run_search(req, None, prepare(req))
            used = recorder.writers_for(req.tracking_uri)  # what the recorder ran with
        finally:
            os.chdir(cwd)
            recorder.CONCURRENT_WRITERS = default_writers
    t = s.timing
    loop = max(1e-9, s.seconds - t.get("boot", 0.0))
    wait, dispatch = t.get("wait", 0.0), t.get("dispatch", 0.0)
    parts = {
        "ask": t.get("ask", 0.0),
        "tell": t.get("tell", 0.0),
        "dispatch_and_results": dispatch,  # Ray calls out, results in, the unit table
        "other_main_thread": max(0.0, loop - t.get("ask", 0.0) - t.get("tell", 0.0) - wait),
        "record_thread": t.get("record_wall", t.get("record", 0.0)),  # MLflow, on its thread(s): busy wall time
    }
    idle = max(0.0, wait - dispatch)  # the main thread blocked on the workers or the recorder
    busy = sum(parts.values())  # the driver's own seconds: both threads, as if they shared one core
    rec = {
        "storage": storage,
        "tracking": "server" if (tracking or "").startswith("http") else "sqlite",
        "recorder_writers": used,
        "record_thread_seconds_summed": round(t.get("record", 0.0), 2),  # over the writer threads
        "record_cpu_ms_per_unit": round(1000 * t.get("record_cpu", 0.0) / max(1, s.trained), 2),  # driver's CPU
        "driver_process_cpu_ms_per_unit": round(1000 * cpu[0] / max(1, s.trained), 2),
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


@contextlib.contextmanager
def mlflow_server(workers: int = 2) -> Iterator[tuple[str, int]]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied local artifacts) for the
    block; yields its http URI and process group, and stops the group at the end."""
    with tempfile.TemporaryDirectory() as d, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        exe = str(Path(sys.executable).parent / "mlflow")
        cmd = [exe, "server", "--backend-store-uri", f"sqlite:///{d}/srv.db", "--artifacts-destination", f"{d}/art"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(f"{d}/server.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 300
            while True:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"error: mlflow server did not start: {Path(d, 'server.log').read_text()[-2000:]}")
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
                time.sleep(0.5)
            yield url, proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of group ``pgid`` (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp, ...; utime and stime are 12, 13
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def writers_abba(
    actors: list[int], trials: int, writers: list[int], uri: str, storage: str, server: int
) -> dict[str, Any]:
    """Per actor count, the recorder with ``writers[0]`` and ``writers[1]`` threads in ABBA order
    against one server; medians per configuration and the ratio B/A of units per second."""
    import statistics

    from search.study.cluster import connect

    connect(None)
    a, b = writers
    out: dict[str, Any] = {"writers": writers, "runs": [], "by_actors": {}}
    for n in actors:
        got: dict[int, list[dict[str, Any]]] = {a: [], b: []}
        for w in (a, b, b, a):
            c0 = group_cpu(server)
            r = one_run(n, trials, storage, uri, w)
            r["server_cpu_ms_per_unit"] = round(1000 * (group_cpu(server) - c0) / max(1, r["units"]), 2)
            got[w].append(r)
            out["runs"].append(r)
        med = {
            w: {k: statistics.median(r[k] for r in rs) for k in ("units_per_s", "units_per_driver_s")}
            for w, rs in got.items()
        }
        rec_ms = {w: statistics.median(r["ms_per_unit"]["record_thread"] for r in rs) for w, rs in got.items()}
        cpu = {
            w: {k: statistics.median(r[k] for r in rs) for k in ("record_cpu_ms_per_unit", "server_cpu_ms_per_unit")}
            for w, rs in got.items()
        }
        out["by_actors"][str(n)] = {
            "median": {str(w): {**m, "record_ms_per_unit": rec_ms[w], **cpu[w]} for w, m in med.items()},
            "ratio_units_per_s": round(med[b]["units_per_s"] / max(med[a]["units_per_s"], 1e-9), 2),
            "ratio_units_per_driver_s": round(
                med[b]["units_per_driver_s"] / max(med[a]["units_per_driver_s"], 1e-9), 2
            ),
            "caps": {str(w): sorted({r["cap"] for r in rs}) for w, rs in got.items()},
        }
        print(f"{n} actors, writers {a} vs {b}: {json.dumps(out['by_actors'][str(n)])}", flush=True)
    return out


def save(rec: dict[str, Any], out: str | None, key: str | None) -> None:
    """``--out`` FILE: the record alone; ``--key`` NAME: under that key of
    bench/out/driver_ceiling.json, the file's other keys kept."""
    if out:
        Path(out).write_text(json.dumps(rec, indent=2))
    if key:
        path = ROOT / "bench" / "out" / "driver_ceiling.json"
        doc = json.loads(path.read_text()) if path.is_file() else {}
        doc[key] = rec
        path.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", default="2,8,32,64")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 and 4 actors, 40 trials")
    ap.add_argument("--out", default=None, help="also write the record here (JSON)")
    ap.add_argument("--key", default=None, help="also store the record under this key of bench/out/driver_ceiling.json")
    ap.add_argument("--storage", choices=sorted(STORAGES), default="journal", help="the embedded Optuna storage")
    ap.add_argument("--tracking", choices=["sqlite", "server"], default="sqlite", help="MLflow: a file or a server")
    ap.add_argument("--server-workers", type=int, default=2, help="the mlflow server's worker processes")
    ap.add_argument("--tracking-uri", default=None, help="--tracking server: this running server instead of a new one")
    ap.add_argument("--recorder-workers", default=None, help="A,B: the recorder's threads compared in ABBA order")
    args = ap.parse_args()
    actors = [2, 4] if args.quick else [int(a) for a in args.actors.split(",")]
    trials = args.trials or (40 if args.quick else 400)
    with contextlib.ExitStack() as stack:
        uri, pgid = (args.tracking_uri, 0) if args.tracking_uri else (None, 0)
        if args.tracking == "server" and uri is None:
            uri, pgid = stack.enter_context(mlflow_server(args.server_workers))
        if args.recorder_workers:
            writers = [int(w) for w in args.recorder_workers.split(",")]
            if len(writers) != 2 or uri is None:
                ap.error("--recorder-workers takes two counts (e.g. 1,4) and needs --tracking server")
            load = os.getloadavg()
            rec = writers_abba(actors, trials, writers, uri, args.storage, pgid)
            rec.update(tracking="mlflow server (sqlite backend)", server_workers=args.server_workers, trials=trials)
            rec["load_avg_1_5_15_at_start"] = [round(x, 2) for x in load]
        else:
            rec = ceiling(actors, trials, args.quick, args.storage) if uri is None else None
            if rec is None:
                from search.study.cluster import connect

                connect(None)
                rec = {"runs": [one_run(n, trials, args.storage, uri) for n in actors], "tracking": "server"}
        rec["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    save(rec, args.out, args.key)


if __name__ == "__main__":
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    main()
