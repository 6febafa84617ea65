"""Train whole orderings (root-to-leaf paths) through the one scheduler, without Optuna.

Validation on held-out seeds, the ground-truth benchmark and any "just train these orderings" job
use this: each (ordering, seed) is one leaf unit; a worker rebuilds whatever part of its prefix it
does not hold from its cache, and compatible units train in lockstep — the same code a search
trial runs, so the same (ordering, seed) gives the same R here as in a search.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.units import Unit
from search.study.scheduler import Scheduler, WorkerSpec

Path = tuple[tuple[str, ...], int]  # (ordering, seed)
OnDone = Callable[[tuple[str, ...], int, dict[str, Any]], None]


def train_paths(
    spec: WorkerSpec,
    paths: Iterable[Path],
    strategy_json: str,
    train_json: str,
    on_done: OnDone,
    workers: int = 2,
    window: int = 64,
) -> dict[str, Any]:
    """Train every (ordering, seed) in ``paths`` on ``workers`` Ray actors (Ray must be connected).

    At most ``window`` paths are outstanding, so submitting them in lexicographic order walks the
    prefix tree depth first and trains every prefix about once. ``on_done(order, seed, result)``
    gets the worker's result (``rows``: accuracy on every pool task after each prefix); a failed
    path raises RuntimeError with the worker's reason. Returns the task-trainings run, the wall
    time and the workers' info.
    """
    sched = Scheduler(spec, workers)
    todo = iter(paths)
    outstanding, trained, t0 = 0, 0, time.perf_counter()
    exhausted = False
    sched.start()
    try:
        while True:
            while not exhausted and outstanding < window:
                path = next(todo, None)
                if path is None:
                    exhausted = True
                    break
                order, seed = tuple(path[0]), int(path[1])
                sched.submit(Unit(order, strategy_json, train_json, seed), (order, seed))
                outstanding += 1
            if exhausted and outstanding == 0:
                break
            for ev in sched.poll(timeout=1.0):
                if ev.failure is not None:
                    raise RuntimeError(f"ordering {','.join(ev.unit.order)} seed {ev.unit.seed} failed: {ev.failure}")
                trained += int(ev.result["trained"])
                outstanding -= 1
                on_done(ev.unit.order, ev.unit.seed, ev.result)
        infos = sched.infos()
    finally:
        sched.close()
    return {"trained": trained, "wall_s": time.perf_counter() - t0, "workers": infos}
