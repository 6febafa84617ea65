"""What the benchmarks share: ground-truth files, enumerating orderings through lll's own scheduler,
and ranks / Spearman.

Scripts in bench/ import this as ``import common`` (Python puts a script's own folder first on
``sys.path``, so no path hacks are needed); lll itself is imported as the installed package. Every
script builds its command line with :func:`parser`, so ``--help`` shows the command lines of its
docstring and bad arguments print the usage.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "out"

#: Every ground truth the project has: name → file under bench/out. ``cheap`` is the first, noisier
#: truth (400/200 images, 3 epochs, one model at a time); ``defaults`` is mixed-mnist-7 at the pool's
#: training defaults, trained through the scheduler and lockstep path (bench/ground_truth.py).
TRUTHS = {
    "cheap": OUT / "ground_truth_mixed-mnist-7.json.gz",
    "defaults": OUT / "ground_truth_mixed-mnist-7_defaults.json.gz",
}


# ---- command lines -------------------------------------------------------------------------------
def parser(doc: str) -> argparse.ArgumentParser:
    """A script's argument parser: its docstring's first paragraph as the description and the
    docstring's command lines (those starting with ``python bench/``, with their comments) as the
    epilog, so ``--help`` shows how to run it and an error prints the usage."""
    lines = [ln.strip() for ln in doc.splitlines() if ln.strip().startswith(("python bench/", "nohup python bench/"))]
    return argparse.ArgumentParser(
        description=doc.strip().split("\n\n")[0],
        epilog="usage examples:\n" + "\n".join(f"  {ln}" for ln in lines) if lines else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# ---- ground truths -------------------------------------------------------------------------------
def load_truth(name_or_path: str | Path = "cheap") -> dict:
    """A ground-truth document: a name of :data:`TRUTHS` (see bench/ground_truth.py for its keys)
    or a path (``.gz`` or plain JSON, e.g. bench/order_effect.py's ``--out``)."""
    path = TRUTHS.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        hint = "bench/ground_truth.py merge writes the named ones" if str(name_or_path) in TRUTHS else "check --truth"
        print(f"error: no ground truth at {path}; {hint} (names: {', '.join(TRUTHS)})", file=sys.stderr)
        raise SystemExit(2)
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
        return json.load(f)


def orderings(doc: dict) -> list[tuple[str, ...]]:
    """The orderings of a ground truth, in the order of every run's ``acc``."""
    return [tuple(o.split(",")) for o in doc["orderings"]]


def seed_runs(doc: dict, strategy: str) -> dict[int, np.ndarray]:
    """seed → ACC of every ordering (in ``doc["orderings"]`` order) for one strategy."""
    return {
        int(run["seed"]): np.asarray(run["acc"], dtype=float)
        for run in doc["runs"].values()
        if run["strategy"] == strategy
    }


def seed_mean(doc: dict, strategy: str, seeds: Iterable[int] | None = None) -> np.ndarray:
    """The truth of an ordering: its ACC averaged over ``seeds`` (default: all the truth's seeds)."""
    runs = seed_runs(doc, strategy)
    use = sorted(runs) if seeds is None else list(seeds)
    missing = [s for s in use if s not in runs]
    if missing:
        raise KeyError(f"{strategy}: seeds {missing} not in this ground truth (has {sorted(runs)})")
    return np.mean([runs[s] for s in use], axis=0)


def enumeration_runs(doc: dict, pool: str, strategy: str) -> dict[int, dict[tuple[str, ...], dict]] | None:
    """seed → ordering → run (``acc``, ``bwt``, ``R``, ...) of one (pool, strategy) job of
    bench/order_effect.py's ``--out`` JSON (the 5-task truth), or None when it has no such job."""
    for job in doc.get("jobs", []):
        if job["pool"] == pool and job["strategy"] == strategy:
            return {int(s["seed"]): {tuple(r["order"]): r for r in s["runs"]} for s in job["seeds"]}
    return None


# ---- ranks ---------------------------------------------------------------------------------------
def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rank of each value, 1 = highest; ties share their average rank."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(-a, kind="stable")
    r = np.empty(len(a), dtype=float)
    r[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):  # average ranks over ties
        same = a == v
        if same.sum() > 1:
            r[same] = r[same].mean()
    return r


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's ρ: the Pearson correlation of the (tie-averaged) ranks."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_of(values: np.ndarray, index: int) -> int:
    """1-based rank of ``values[index]`` among all values (1 = best; ties count in its favour)."""
    return int((values > values[index]).sum()) + 1


def rank_table(table: dict[Any, float]) -> dict[Any, int]:
    """1-based place of every key of ``table`` (key → value) sorted best first; equal values keep the
    table's order (a ground truth's: lexicographic), as the recorded benchmark ranks were counted."""
    return {k: i + 1 for i, k in enumerate(sorted(table, key=lambda k: -table[k]))}


# ---- enumerating orderings through the scheduler ---------------------------------------------------
def all_orderings(names: Sequence[str], first: str | None = None) -> list[tuple[str, ...]]:
    """Every ordering of ``names`` (optionally those starting with ``first``), lexicographic by
    index, which walks the prefix tree depth first."""
    if first is None:
        return [tuple(p) for p in itertools.permutations(names)]
    rest = [n for n in names if n != first]
    return [(first, *p) for p in itertools.permutations(rest)]


def train_orderings(
    pool_spec_json: str,
    orders: Iterable[tuple[str, ...]],
    strategy_json: str,
    train_json: str,
    seed: int,
    on_done: Callable[[tuple[str, ...], dict[str, Any]], None],
    workers: int = 2,
    population: int | str = "auto",
    window: int = 64,
    cache_bytes: int = 1 << 30,
) -> dict[str, Any]:
    """Train every ordering in ``orders`` on one seed through lll's scheduler on a local Ray
    (:func:`search.study.paths.train_paths`: prefix affinity, lockstep batches, each worker's prefix
    cache — the code a search trial runs, without Optuna or MLflow). ``on_done(order, result)``
    gets the worker's result (``rows``: accuracy on every pool task after each prefix). Returns
    the task-trainings run, the wall time and the workers' info. ``population`` 1 trains one model
    at a time, ``"auto"`` in lockstep as the search does."""
    from search.study.cluster import connect
    from search.study.paths import train_paths
    from search.study.scheduler import WorkerSpec

    cpus = max(1, int(connect(None).get("CPU", 1)))  # more actors than CPUs would wait for a slot forever
    spec = WorkerSpec(pool_spec_json, cache_bytes=cache_bytes, population=population, device="cpu")
    workers = max(1, min(workers, cpus))
    return train_paths(
        spec, ((o, seed) for o in orders), strategy_json, train_json, lambda o, s, r: on_done(o, r), workers, window
    )


def train_every_ordering(
    pool_spec_json: str,
    names: Sequence[str],
    strategy_json: str,
    train_json: str,
    seed: int,
    workers: int = 2,
    population: int | str = "auto",
) -> tuple[dict[tuple[str, ...], list[dict[str, float]]], dict[str, Any]]:
    """Every ordering of ``names`` through :func:`train_orderings`: ordering → accuracy rows (row i:
    every pool task after i tasks), in :func:`all_orderings` order, and the run's stats."""
    got: dict[tuple[str, ...], list[dict[str, float]]] = {}
    orders = all_orderings(names)
    stats = train_orderings(
        pool_spec_json, orders, strategy_json, train_json, seed, lambda o, r: got.__setitem__(tuple(o), r["rows"]),
        workers=workers, population=population,
    )  # fmt: skip
    return {o: got[o] for o in orders}, stats
