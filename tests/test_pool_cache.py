"""The pool cache (tasks/pool_cache.py): a worker loads the pool the driver built, bit for bit, and
never takes a file that does not match what it was asked for."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_POOL

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.units import Unit
from pipeline.workers import TrialWorker
from tasks import pool_cache
from tasks.pool import PoolSpec, build_pool

SMALL = {**TINY_POOL, "name": "small-cache", "train_per_task": 80, "test_per_task": 60}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLL_CACHE_DIR", str(tmp_path))
    return tmp_path / "pools"


def test_saved_pool_loads_identical(cache) -> None:
    spec = PoolSpec.model_validate(SMALL)
    built = build_pool(spec)
    path = pool_cache.save(built)
    assert path == cache / f"{built.fingerprint()}.pt" and path.exists()
    loaded = pool_cache.load(spec, built.fingerprint())
    assert loaded is not None and loaded.fingerprint() == built.fingerprint()
    assert loaded.names == built.names and loaded.note == built.note and loaded.meta == built.meta
    for name in built.names:
        a, b = built[name], loaded[name]
        for attr in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(a, attr), getattr(b, attr))
            assert getattr(a, attr).dtype == getattr(b, attr).dtype
        assert a.spec == b.spec and a.n_classes == b.n_classes


def test_mismatch_or_damage_is_a_miss(cache) -> None:
    spec = PoolSpec.model_validate(SMALL)
    built = build_pool(spec)
    fp = built.fingerprint()
    assert pool_cache.load(spec, fp) is None  # nothing saved yet
    pool_cache.save(built)
    other = PoolSpec.model_validate({**SMALL, "test_per_task": 61})
    assert pool_cache.load(other, fp) is None  # another spec under this name
    assert pool_cache.load(spec, "0" * 16) is None  # another fingerprint
    assert pool_cache.load(spec, None) is None
    (cache / f"{fp}.pt").write_bytes(b"not a torch file")
    assert pool_cache.load(spec, fp) is None


def test_worker_from_cache_trains_the_same_rows(cache) -> None:
    spec_json = json.dumps(SMALL)
    built = build_pool(PoolSpec.model_validate(SMALL))
    train = TrainConfig(epochs=1, hidden=(16,), lr=0.05, batch_size=16).model_dump_json()
    u = Unit(tuple(built.names[:2]), StrategyConfig(name="ewc").model_dump_json(), train, 0)
    fresh = TrialWorker(spec_json, population=1, pool_fingerprint=built.fingerprint())
    assert fresh.info()["pool_from_cache"] is False  # no file yet: built
    pool_cache.save(built)
    warm = TrialWorker(spec_json, population=1, pool_fingerprint=built.fingerprint())
    assert warm.info()["pool_from_cache"] is True
    assert warm.info()["pool_fingerprint"] == built.fingerprint()
    assert warm.train_units([u])[0]["rows"] == fresh.train_units([u])[0]["rows"]
