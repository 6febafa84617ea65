"""Bad input to every `lll` command: exactly one stderr line ``error: ...``, exit code 2, no traceback.

One case per command (plus the GPU requests a machine without a GPU cannot honour: skipped on a GPU
host), each the real command in a subprocess; they run two at a time.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import default_storage, lll, pool_workdir, tiny_pool_yaml

# errors only where no GPU is visible
GPU_CASES = ("run --device cuda", "search --gpus-per-worker", "search --device cuda")
HAS_GPU = torch.cuda.is_available()

CASES: dict[str, tuple[list[str], str]] = {
    "run --device cuda": (
        ["run", "--pool", "pool.yaml", "--device", "cuda", "--epochs", "1", "--no-track"],
        "device 'cuda' asked for but no CUDA GPU is visible; use --device cpu",
    ),
    "search --gpus-per-worker": (
        ["search", "--pool", "pool.yaml", "--gpus-per-worker", "0.5", "--study", "gpu"],
        "--gpus-per-worker 0.5 but this machine has 0 GPUs",
    ),
    "search --device cuda": (
        ["search", "--pool", "pool.yaml", "--device", "cuda", "--study", "gpu"],
        "device 'cuda' asked for but no CUDA GPU is visible; use --device cpu",
    ),
    "export": (["export", "--study", "nope"], "no study named 'nope'"),
    "report": (["report", "--study", "nope", "--out", "rep"], "no study named 'nope'"),
    "ui": (["ui", "--study", "nope"], "no study named 'nope'"),
    "pools": (["pools", "--bogus"], "No such option: --bogus"),
    "affinity": (["affinity", "--study", "nope", "--no-measure"], "no study named 'nope'"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return pool_workdir(tmp_path_factory, "cli-errors", tiny_pool_yaml("tiny-errors", 60, 40))


@pytest.fixture(scope="module")
def results(workdir: Path) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        cases = [c for c in CASES if not (HAS_GPU and c in GPU_CASES)]
        done = pool.map(lambda case: lll(*CASES[case][0], cwd=workdir, timeout=120), cases)
        return dict(zip(cases, done, strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_exactly_one_error_line_and_exit_2(results, case: str) -> None:
    if HAS_GPU and case in GPU_CASES:
        pytest.skip("this machine has a GPU: the request is valid here")
    res, needle = results[case], CASES[case][1]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, f"expected one line, got:\n{res.stderr}"
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the request is valid here")
def test_gpu_request_fails_before_any_study_or_store_exists(results, workdir: Path) -> None:
    """`lll search --gpus-per-worker` without a GPU stops before Ray starts and before a study is
    created: no Optuna or MLflow store is written."""
    assert results["search --gpus-per-worker"].returncode == 2
    assert not (workdir / "mlflow.db").exists()
    created = list(workdir.glob("optuna.journal"))
    if created:  # the other cases open the default storage; the study must not be in it
        import optuna

        names = [s.study_name for s in optuna.get_all_study_summaries(default_storage(workdir))]
        assert "gpu" not in names
