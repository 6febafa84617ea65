"""The CPU kernels lll pins (pipeline/cpu_kernels.py): AVX2 in every process that imports lll, the
user's own ATEN_CPU_CAPABILITY kept, nothing forced on a CPU without AVX2. That the pin reaches the
Ray workers is checked on their MLflow records (tests/test_search.py, tests/test_cluster.py); what
it costs and changes is bench/cpu_kernels.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cpu_kernels

PROBE = "import torch; torch.ones(2) + 1; print(torch.backends.cpu.get_cpu_capability())"


def probe(first: str, env: dict[str, str]) -> str:
    """The kernels a fresh process dispatches to after running ``first``, then one torch op."""
    clean = {k: v for k, v in os.environ.items() if k not in cpu_kernels.PINNED}
    out = subprocess.run([sys.executable, "-c", f"{first}; {PROBE}"], env={**clean, **env},
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


needs_avx2 = pytest.mark.skipif(
    not cpu_kernels.has_avx2(), reason="this CPU has no AVX2 (or is not x86): nothing is pinned"
)


@needs_avx2
@pytest.mark.parametrize("first", ["import pipeline", "import tasks", "import search.cli"])
def test_importing_lll_pins_avx2(first: str) -> None:
    assert probe(first, {}) == "AVX2"


@needs_avx2
def test_the_users_choice_is_kept() -> None:
    assert probe("import pipeline", {"ATEN_CPU_CAPABILITY": "default"}) == "DEFAULT"


def test_no_pin_without_avx2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse sse2 avx\n")
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")
    assert not cpu_kernels.has_avx2(info)
    info.write_text("flags\t\t: fpu sse sse2 avx avx2 fma\n")
    assert cpu_kernels.has_avx2(info)
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "aarch64")
    assert not cpu_kernels.has_avx2(info)
    for key in cpu_kernels.PINNED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(cpu_kernels, "has_avx2", lambda: False)
    assert not cpu_kernels.pin() and not any(k in os.environ for k in cpu_kernels.PINNED)
    monkeypatch.setattr(cpu_kernels, "has_avx2", lambda: True)
    assert cpu_kernels.pin() and {k: os.environ[k] for k in cpu_kernels.PINNED} == cpu_kernels.PINNED
