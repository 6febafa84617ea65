"""Device selection: the device training runs on, the device a worker reports, and the GPU checks.

This machine has no GPU and a CPU build of torch. The GPU side is tested only where that is honest:
the selection logic with ``torch.cuda.is_available`` / ``device_count`` patched, and nothing is ever
moved to the pretended GPU. The one-line CLI errors for ``--device cuda`` and ``--gpus-per-worker``
without a GPU run the real ``lll`` in tests/test_cli_errors.py.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.train import pick_device
from pipeline.units import Unit
from pipeline.workers import TrialWorker
from search.study.cluster import check_gpus
from tasks.errors import LLLError
from tasks.pool import PoolSpec

SPEC = PoolSpec.model_validate(
    {
        "name": "tiny-device",
        "train_per_task": 40,
        "test_per_task": 20,
        "tasks": [{"name": "upright"}, {"name": "rot90", "transforms": [{"type": "rotate", "angle": 90}]}],
    }
)


@pytest.fixture
def visible_gpus(monkeypatch):
    """Pretend that torch sees ``n`` CUDA GPUs (as it does inside a Ray actor given a GPU share)."""

    def set_gpus(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_gpus


def test_pick_device_without_a_gpu() -> None:
    assert not torch.cuda.is_available(), "this test describes a machine without a GPU"
    assert pick_device("auto") == torch.device("cpu") == pick_device("cpu")
    for setting in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(LLLError, match="no CUDA GPU is visible; use --device cpu"):
            pick_device(setting)
    with pytest.raises(LLLError, match="unknown device 'tpu'"):
        pick_device("tpu")


def test_pick_device_with_a_visible_gpu(visible_gpus) -> None:
    visible_gpus(1)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")  # an explicit CPU wins over a visible GPU


def test_worker_reports_the_device_it_trains_on(visible_gpus, monkeypatch) -> None:
    worker = TrialWorker(SPEC.model_dump_json(), cache_bytes=0)
    # No GPU: the worker says cpu, and its training run really is on the CPU.
    assert worker.info()["device"] == "cpu"
    train = TrainConfig(epochs=1, hidden=(8,)).model_dump_json()
    (out,) = worker.units.run([Unit(("rot90", "upright"), StrategyConfig(name="naive").model_dump_json(), train, 0)])
    assert out.error is None and out.device == torch.device("cpu")
    assert {t.device for t in out.state.model.values()} == {torch.device("cpu")}
    # An actor given a GPU share sees it from the start (Ray sets CUDA_VISIBLE_DEVICES before the
    # actor is built): with --device auto it says cuda, the device every run it starts gets; with
    # --device cpu it says cpu. (The GPU and its free memory are pretended.)
    import pipeline.lockstep

    visible_gpus(1)
    monkeypatch.setattr(pipeline.lockstep, "free_memory", lambda device: 8 << 30)
    on_gpu = TrialWorker(SPEC.model_dump_json(), cache_bytes=0, device="auto")
    assert on_gpu.info()["device"] == "cuda" == pick_device(TrainConfig().device).type
    on_cpu = TrialWorker(SPEC.model_dump_json(), cache_bytes=0, device="cpu").info()
    assert on_cpu["device"] == "cpu" and on_cpu["population"] <= pipeline.lockstep.CPU_CAP  # sized for the CPU


def test_gpus_per_worker_is_checked_against_the_machine_or_cluster(visible_gpus) -> None:
    check_gpus(0.0)  # CPU workers need no GPU
    check_gpus(0.0, {"CPU": 2.0})
    with pytest.raises(LLLError, match=r"--gpus-per-worker 0.5 but this machine has 0 GPUs"):
        check_gpus(0.5)
    with pytest.raises(LLLError, match=r"--gpus-per-worker 0.25 but the Ray cluster has 0 GPUs"):
        check_gpus(0.25, {"CPU": 8.0})
    check_gpus(0.25, {"CPU": 8.0, "GPU": 1.0})
    visible_gpus(2)
    check_gpus(0.5)
    check_gpus(2)
    with pytest.raises(LLLError, match=r"--gpus-per-worker 3 but this machine has 2 GPUs"):
        check_gpus(3)
