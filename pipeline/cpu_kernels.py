"""One set of CPU kernels on every x86 machine, so that an R matrix is the same bit for bit on any.

PyTorch picks its vectorised kernels by the CPU it finds, and MKL and oneDNN pick their code paths
the same way. The same ordering, seed and config gave ACC 0.6076 on an AVX2 host and 0.6138 on an
AVX-512 one (permuted-mnist-10's own order, seed 100): about half the seeds of
bench/graph_zero_shot_real.py moved by up to 1.5 points between two sessions on different hosts.
A search whose workers run on both kinds of node (and whose prefix cache then mixes their states),
or a rerun on another machine, would not reproduce a recorded R.

:func:`pin` asks all three for AVX2, which every x86 CPU of the last decade has, before torch runs
its first operation (torch reads the setting once, at its first kernel dispatch; importing torch
earlier is fine). Setting ``ATEN_CPU_CAPABILITY`` yourself (``avx512``, ``default``) keeps your
choice and leaves MKL and oneDNN alone: results are then reproducible on that kind of CPU only.
The speed cost is measured by bench/cpu_kernels.py.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}


def has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU has AVX2 (Linux's flags; elsewhere unknown, so no)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return " avx2" in cpuinfo.read_text()
    except OSError:
        return False


def pin() -> bool:
    """Ask PyTorch, MKL and oneDNN for AVX2 kernels unless the user chose (``ATEN_CPU_CAPABILITY``
    set) or the CPU lacks AVX2 (forcing it there would crash). True when pinned by this call."""
    if "ATEN_CPU_CAPABILITY" in os.environ or not has_avx2():
        return False
    for key, value in PINNED.items():
        os.environ.setdefault(key, value)
    return True


def capability() -> str:
    """The kernels torch dispatches to in this process (e.g. ``AVX2``), recorded with each run."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())
