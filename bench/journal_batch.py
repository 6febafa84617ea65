"""Batched asks and tells on the embedded journal (issue 21, point 2): one lock and one write per
turn of the driver's loop against one per Optuna operation.

The real Optuna side of an exhaustive search, without Ray or MLflow: a study on a fresh
``journal:///`` file, ``OptunaBridge.enqueue_exhaustive`` (5,040 trials for 7 tasks), then N asks of
the enqueued trials in chunks of the driver's ASK_CHUNK and N tells through ``end_trial`` (the one
tell path, with a complete outcome's attributes) in chunks of ``--tell-chunk``, each chunk inside
``journal.batched`` as the driver does. Batching on and off alternate in ABBA order in one process,
each on its own file; the medians are per trial.

    python bench/journal_batch.py [--trials 400] [--tasks 5] [--tell-chunk 4] [--repeats 2] [--key journal_batch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]


def settings_for(tasks: int, trials: int):
    """What a `lll search --exhaustive --strategies naive --seeds 1` study stores, on made-up tasks."""
    from pipeline.config import TrainConfig
    from search.study.settings import StudySettings

    return StudySettings(
        pool="bench", pool_spec="{}", pool_fingerprint="bench", tasks=tuple(NAMES[:tasks]), strategies=("naive",),
        objective="acc", sampler="random", seeds=1, seed=0, train=TrainConfig(), checkpoints="none", prune=False,
        prune_startup=8, exhaustive=True, trials=trials,
    )  # fmt: skip


def outcome_of(run: Any, tasks: int):
    """A complete outcome with the attributes a real trial gets (R, metrics, per-seed values)."""
    from pipeline.rmatrix import RMatrix
    from search.study.outcome import TrialOutcome, objective_values
    from search.study.racing import per_seed_keys
    from search.study.recording import seed_metrics

    rng = np.random.default_rng(run.trial.number)
    r = RMatrix(list(run.candidate.order), rng.random((tasks + 1, tasks)))
    metrics = {**seed_metrics([r]), **per_seed_keys(run.seeds, [r]), "trained": tasks, "reused": 0, "seconds": 0.0}
    return TrialOutcome(
        number=run.trial.number, state="complete", order=tuple(run.candidate.order), strategy=run.candidate.strategy,
        lam=None, seeds=tuple(run.seeds), R=r, metrics=metrics, values=tuple(objective_values(metrics, "acc")),
        per_seed=(r,), mlflow_run_id=f"run{run.trial.number}", trained_seeds=tuple(run.seeds),
    )  # fmt: skip


def one(folder: Path, batching: bool, tasks: int, trials: int, tell_chunk: int, enqueue_tasks: int) -> dict[str, Any]:
    """Seconds for the exhaustive enqueue of ``enqueue_tasks`` tasks, and per trial for ``trials``
    asks and tells on a ``tasks``-task study."""
    import optuna

    from search.study import journal
    from search.study.driver import ASK_CHUNK
    from search.study.optuna_bridge import OptunaBridge
    from search.study.outcome import end_trial
    from search.study.storage import create_study, open_storage

    journal.BATCHING = batching
    try:
        out: dict[str, Any] = {"batching": batching}
        big = settings_for(enqueue_tasks, 1)
        study = create_study("enq", open_storage(f"journal:///{folder}/enqueue.journal"), big)
        t0 = time.perf_counter()
        OptunaBridge(study, big).enqueue_exhaustive(list(big.tasks))
        out["enqueue_s"] = time.perf_counter() - t0
        out["enqueued"] = len(study.get_trials(deepcopy=False))

        st = settings_for(tasks, trials)
        study = create_study("at", open_storage(f"journal:///{folder}/asktell.journal"), st)
        bridge = OptunaBridge(study, st)
        bridge.enqueue_exhaustive(list(st.tasks))
        study.sampler = optuna.samplers.RandomSampler(seed=0)
        runs = []
        t0 = time.perf_counter()
        while len(runs) < trials:
            with journal.batched(study):
                runs += [bridge.ask() for _ in range(min(ASK_CHUNK, trials - len(runs)))]
        out["ask_ms_per_trial"] = 1000 * (time.perf_counter() - t0) / trials
        t0 = time.perf_counter()
        for i in range(0, trials, tell_chunk):
            with journal.batched(study):
                for run in runs[i : i + tell_chunk]:
                    end_trial(study, run.trial, outcome_of(run, tasks))
        out["tell_ms_per_trial"] = 1000 * (time.perf_counter() - t0) / trials
        out["lines"] = len((folder / "asktell.journal").read_bytes().splitlines())
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        assert len(done) == trials, (len(done), trials)
        return out
    finally:
        journal.BATCHING = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--tasks", type=int, default=5, help="tasks of the ask/tell study (5: 120 orderings)")
    ap.add_argument("--enqueue-tasks", type=int, default=7, help="tasks of the exhaustive enqueue (7: 5,040)")
    ap.add_argument("--tell-chunk", type=int, default=4, help="tells per batch (records handed back together)")
    ap.add_argument("--repeats", type=int, default=2, help="ABBA blocks")
    ap.add_argument("--key", default=None, help="store the result under this key of bench/out/driver_ceiling.json")
    args = ap.parse_args()
    trials = min(args.trials, int(np.prod(range(1, args.tasks + 1))))
    load = os.getloadavg()
    runs = []
    for _ in range(args.repeats):
        for batching in (True, False, False, True):
            with tempfile.TemporaryDirectory() as d:
                r = one(Path(d), batching, args.tasks, trials, args.tell_chunk, args.enqueue_tasks)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
            runs.append(r)
    keys = ("enqueue_s", "ask_ms_per_trial", "tell_ms_per_trial")
    med = {b: {k: statistics.median(r[k] for r in runs if r["batching"] is b) for k in keys} for b in (True, False)}
    rec = {
        "what": f"bench/journal_batch.py: {trials} asks + tells on a {args.tasks}-task exhaustive study "
        f"(asks {8} per batch, tells {args.tell_chunk} per batch), enqueue_exhaustive of {args.enqueue_tasks} tasks; "
        f"{args.repeats} ABBA blocks, medians",
        "batched": {k: round(v, 3) for k, v in med[True].items()},
        "unbatched": {k: round(v, 3) for k, v in med[False].items()},
        "speedup": {k: round(med[False][k] / max(med[True][k], 1e-9), 2) for k in keys},
        "journal_lines_per_trial": round(runs[0]["lines"] / trials, 1),
        "load_avg_1_5_15": [[round(x, 2) for x in load], [round(x, 2) for x in os.getloadavg()]],
    }
    print(json.dumps(rec, indent=1))
    if args.key:
        path = ROOT / "bench" / "out" / "driver_ceiling.json"
        doc = json.loads(path.read_text()) if path.is_file() else {}
        doc[args.key] = rec
        path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
