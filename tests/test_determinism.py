"""Determinism and the prefix cache: the promises the whole search rests on.

Same config + seed → the same R bit for bit; the state after a prefix does not depend on what
follows; a cached or checkpointed prefix resumes exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import MemoryPrefixCache, PrefixState, RunResult, prefix_key, run_ordering, snapshot
from tasks.pool import TaskPool


@pytest.fixture(scope="module")
def train(fast_train: TrainConfig) -> TrainConfig:
    """Short training: these tests check equality, not learning quality."""
    return fast_train.model_copy(update={"epochs": 3})


@pytest.fixture
def run(tiny_pool: TaskPool, train: TrainConfig):
    """run(order, strategy, seed=0, cache=None) on the tiny pool."""

    def go(order: list[str], name: str, seed: int = 0, cache=None) -> RunResult:
        return run_ordering(tiny_pool, order, StrategyConfig(name=name), train, seed=seed, cache=cache)

    return go


@pytest.mark.parametrize("name", ["naive", "replay", "ewc"])
def test_same_seed_same_r_bit_for_bit(tiny_pool: TaskPool, run, name: str) -> None:
    order = tiny_pool.names
    first = run(order, name).rmatrix.values
    second = run(order, name).rmatrix.values
    assert np.array_equal(first, second)
    diag = np.diag(first[1:])
    assert diag.mean() > first[0].mean() + 0.1  # it really trained


def test_different_seed_different_r(tiny_pool: TaskPool, run) -> None:
    order = tiny_pool.names
    r0 = run(order, "naive", seed=0).rmatrix.values
    r1 = run(order, "naive", seed=1).rmatrix.values
    assert not np.array_equal(r0, r1)


@pytest.mark.parametrize("name", ["naive", "ewc"])
def test_prefix_state_independent_of_what_follows(tiny_pool: TaskPool, run, name: str) -> None:
    a, b, c = tiny_pool.names
    abc = run([a, b, c], name)
    acb = run([a, c, b], name)
    # rows hold the accuracy on every pool task, so they compare across orderings
    assert abc.rows[:2] == acb.rows[:2]
    assert np.array_equal(abc.rmatrix.values[:2, 0], acb.rmatrix.values[:2, 0])
    assert abc.rows[2] != acb.rows[2]  # the second task differs, so must the state after it


@pytest.mark.parametrize("name", ["ewc", "replay"])
def test_prefix_cache_gives_identical_r(tiny_pool: TaskPool, run, name: str) -> None:
    a, b, c = tiny_pool.names
    # (ordering, tasks taken from the cache, tasks trained)
    plan = [([a, b, c], 0, 3), ([a, c, b], 1, 2), ([a, b, c], 3, 0), ([b, a, c], 0, 3), ([a, b], 2, 0)]
    cache = MemoryPrefixCache()
    uncached: dict[tuple[str, ...], RunResult] = {}
    for order, reused, trained in plan:
        cached = run(order, name, cache=cache)
        if tuple(order) not in uncached:  # each distinct ordering trained once without a cache
            uncached[tuple(order)] = run(order, name)
        fresh = uncached[tuple(order)]
        assert np.array_equal(cached.rmatrix.values, fresh.rmatrix.values), order
        assert cached.rows == fresh.rows
        assert (cached.reused, cached.trained) == (reused, trained), order
        assert (fresh.reused, fresh.trained) == (0, len(order))
    # prefixes (), a, ab, abc, ac, acb, b, ba, bac
    assert len(cache) == 9
    assert cache.bytes > 0


def test_prefix_cache_evicts_to_its_byte_budget(tiny_pool: TaskPool, run) -> None:
    a, b, c = tiny_pool.names
    cache = MemoryPrefixCache(max_bytes=1)  # keeps only the newest entry
    result = run([a, b, c], "naive", cache=cache)
    assert len(cache) == 1
    again = run([a, b, c], "naive", cache=cache)
    assert (again.reused, again.trained) == (3, 0)
    assert np.array_equal(again.rmatrix.values, result.rmatrix.values)


def save_and_load(state: PrefixState, path: Path) -> PrefixState:
    """Through a real file, loaded the only way lll loads checkpoints: weights_only=True."""
    torch.save(state.to_dict(), path)
    return PrefixState.from_dict(torch.load(path, map_location="cpu", weights_only=True))


@pytest.mark.parametrize("name", ["ewc", "si", "replay", "gem", "lwf"])
def test_resume_from_checkpoint_file(tiny_pool: TaskPool, train: TrainConfig, run, tmp_path: Path, name: str) -> None:
    a, b, c = tiny_pool.names
    uninterrupted = run([a, b, c], name)

    first = run([a, b], name)
    loaded = save_and_load(snapshot(first.model, first.strategy, first.rows, first.sizes), tmp_path / "ab.pt")
    cache = MemoryPrefixCache()
    cache.put(prefix_key(tiny_pool, StrategyConfig(name=name), train, 0, [a, b]), loaded)
    resumed = run([a, b, c], name, cache=cache)

    assert (resumed.reused, resumed.trained) == (2, 1)
    assert np.array_equal(resumed.rmatrix.values, uninterrupted.rmatrix.values)
    assert resumed.sizes == uninterrupted.sizes


def test_resume_from_pipeline_checkpoint(tiny_pool: TaskPool, train: TrainConfig, run, tmp_path: Path) -> None:
    """The MLflow checkpoint format (pipeline.checkpoint) carries enough to resume a sequence too."""
    a, b, c = tiny_pool.names
    uninterrupted = run([a, b, c], "ewc")
    first = run([a, b], "ewc")
    path = save_checkpoint(
        tmp_path / "ckpt" / "ab.pt", first.model, first.strategy, {"rows": first.rows, "sizes": first.sizes}
    )
    ckpt = load_checkpoint(path)
    state = PrefixState(
        ckpt["model_spec"], ckpt["model"], ckpt["strategy"], ckpt["meta"]["rows"], ckpt["meta"]["sizes"]
    )
    cache = MemoryPrefixCache()
    cache.put(prefix_key(tiny_pool, StrategyConfig(name="ewc"), train, 0, [a, b]), state)
    resumed = run([a, b, c], "ewc", cache=cache)
    assert resumed.reused == 2
    assert np.array_equal(resumed.rmatrix.values, uninterrupted.rmatrix.values)


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    """weights_only=True: a file carrying an arbitrary Python object is rejected with a clean error."""
    from tasks.errors import LLLError

    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"model": Path("/etc/passwd")}, buf)  # any non-tensor class needs unpickling
    path.write_bytes(buf.getvalue())
    with pytest.raises(LLLError, match="cannot be loaded safely"):
        load_checkpoint(path)
    with pytest.raises(LLLError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
