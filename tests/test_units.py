"""The unit-of-work API: a worker's train_units gives the same rows as `lll run`'s code, bit for bit,
whether the prefix comes from the cache, was evicted and rebuilt, or was never there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY_POOL

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from pipeline.units import Unit
from pipeline.workers import TrialWorker
from tasks.pool import PoolSpec, TaskPool, build_pool

# Smaller than the tiny pool: these tests check equality, not learning quality.
SMALL_POOL = {**TINY_POOL, "name": "small", "train_per_task": 120, "test_per_task": 100}
SMALL_TRAIN = TrainConfig(epochs=2, hidden=(32, 32), lr=0.05, batch_size=16)


@pytest.fixture(scope="module")
def small_pool() -> TaskPool:
    return build_pool(PoolSpec.model_validate(SMALL_POOL))


@pytest.fixture(scope="module")
def train() -> TrainConfig:
    return SMALL_TRAIN


def worker(pool: TaskPool, cache_bytes: int = 1 << 30, population: int | str = 1) -> TrialWorker:
    return TrialWorker(json.dumps(SMALL_POOL), cache_bytes=cache_bytes, population=population)


def unit(order: list[str], train: TrainConfig, name: str = "ewc", seed: int = 0, **kw) -> Unit:
    return Unit(tuple(order), StrategyConfig(name=name).model_dump_json(), train.model_dump_json(), seed, **kw)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 1])
def test_units_equal_run_ordering(small_pool: TaskPool, train: TrainConfig, cache_bytes: int) -> None:
    a, b, c = small_pool.names
    want = run_ordering(small_pool, [a, b, c], StrategyConfig(name="ewc"), train).rows
    w = worker(small_pool, cache_bytes)
    # A trial's path, one unit per call: each call continues from the state the last one left,
    # even with a 1-byte cache (the last call's states are pinned).
    for n in (1, 2, 3):
        (out,) = w.train_units([unit([a, b, c][:n], train)])
        assert out["error"] is None
        assert out["rows"] == want[: n + 1] and out["row"] == want[n]
        assert (out["trained"], out["reused"]) == (1, int(n > 1))
        assert len(out["sizes"]) == n and out["lam"] == 30.0
    # Evicted / never seen: a fresh worker asked for the last unit rebuilds the chain itself.
    (out,) = worker(small_pool, cache_bytes).train_units([unit([a, b, c], train, keep_checkpoint=True)])
    assert out["rows"] == want and (out["trained"], out["reused"]) == (3, 0)
    assert isinstance(out["checkpoint"], bytes) and len(out["checkpoint"]) > 0


def test_units_share_prefixes_and_report_errors(small_pool: TaskPool, train: TrainConfig) -> None:
    a, b, c = small_pool.names
    w = worker(small_pool)
    outs = w.train_units(
        [unit([a, b], train), unit([a, c], train), unit([a, b], train, name="nope"), unit([a, "zzz"], train)]
    )
    assert [o["trained"] for o in outs[:2]] == [2, 1]  # the shared prefix (a) is trained once
    assert outs[0]["rows"][:2] == outs[1]["rows"][:2]
    assert outs[0]["rows"] == run_ordering(small_pool, [a, b], StrategyConfig(name="ewc"), train).rows
    assert "unknown strategy 'nope'" in outs[2]["error"] and outs[2]["rows"] == []
    assert "no task 'zzz'" in outs[3]["error"]
    # The same units again: all cached.
    again = w.train_units([unit([a, b], train)])
    assert (again[0]["trained"], again[0]["reused"], again[0]["rows"]) == (0, 1, outs[0]["rows"])
    # `lll run`'s path shares the worker's cache and code: it continues from the cached (a, b).
    ran = run_ordering(small_pool, [a, b, c], StrategyConfig(name="ewc"), train, cache=w.unit_cache)
    assert (ran.reused, ran.trained) == (2, 1) and ran.rows[:3] == outs[0]["rows"]


def test_fault_point_kills_the_worker_process(tmp_path) -> None:
    """LLL_FAULT=die-on-task:X ends a real process when it is asked to train X, and only then."""
    script = tmp_path / "die.py"
    # The unit runner a worker's train_units calls, without building a pool: the fault fires first.
    script.write_text(
        "from pipeline.faults import fault_point\n"
        "from pipeline.runner import MemoryPrefixCache\n"
        "from pipeline.units import Unit, UnitRunner\n"
        "fault_point('train_unit', task='upright')\n"
        "print('alive', flush=True)\n"
        "units = [Unit(('upright',), '{}', '{}', 0), Unit(('rot90',), '{}', '{}', 0)]\n"
        "UnitRunner(None, MemoryPrefixCache()).train(units)\n"
        "print('unreachable')\n"
    )
    env = {**os.environ, "LLL_FAULT": "die-on-task:rot90", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "alive" in done.stdout and "unreachable" not in done.stdout
