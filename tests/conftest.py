"""Shared fixtures: a tiny pool and fast training settings that still show forgetting."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
from pipeline.config import TrainConfig
from tasks.pool import PoolSpec, TaskPool, build_pool

# The in-process tests train many tiny MLPs while Ray workers and servers of other tests share the
# two cores; one intra-op thread avoids oversubscription, which made them several times slower.
torch.set_num_threads(1)

TINY_POOL = {
    "name": "tiny",
    "train_per_task": 300,
    "test_per_task": 200,
    "tasks": [
        {"name": "upright"},
        {"name": "rot90", "transforms": [{"type": "rotate", "angle": 90}]},
        {"name": "permuted", "transforms": [{"type": "permute", "seed": 1}]},
    ],
}


@pytest.fixture(scope="session")
def tiny_pool() -> TaskPool:
    """Three quick, mutually interfering tasks from the offline MNIST subset."""
    return build_pool(PoolSpec.model_validate(TINY_POOL))


@pytest.fixture(scope="session")
def fast_train() -> TrainConfig:
    return TrainConfig(epochs=5, hidden=(64, 64))
