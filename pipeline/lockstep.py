"""Lockstep (population) training: K compatible task-trainings as one stacked model.

See DESIGN.md, "Population training". This module holds the population size choice; the stacked
training loop follows.
"""

from __future__ import annotations

import os

import torch

from tasks.errors import LLLError

#: Most members trained at once on a CPU / a GPU (beyond this a CPU gains nothing; see bench/population.py).
CPU_CAP, GPU_CAP = 64, 1024
#: A generous per-member budget: stacked weights, gradients, optimiser and strategy state, batch
#: activations, and a member's own copy of replay/joint memories (bytes).
MEMBER_BYTES = 64 << 20


def free_memory(device: torch.device) -> int:
    """Bytes free for this worker: the GPU's free memory, or MemAvailable on Linux (no psutil)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def parse_population(value: int | str) -> int | str:
    """``auto`` or a positive integer; anything else is a one-line error."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        k = int(value)
        if isinstance(value, float | str) and float(value) != k:
            raise ValueError
    except (TypeError, ValueError):
        raise LLLError(f"--population must be a positive integer or 'auto', got {value!r}; e.g. 8") from None
    if k < 1:
        raise LLLError(f"--population must be at least 1, got {k}; use 1 for one model at a time, or 'auto'")
    return k


def choose_population(value: int | str, device: torch.device, member_bytes: int = MEMBER_BYTES) -> tuple[int, str]:
    """(K, note): K members trained at once on ``device``. ``auto`` takes as many as half the free
    memory holds, capped; an explicit K that does not fit is reduced, and the note says so."""
    value = parse_population(value)
    free = free_memory(device)
    fits = max(1, free // 2 // member_bytes)
    cap = GPU_CAP if device.type == "cuda" else CPU_CAP
    if value == "auto":
        k = int(min(cap, fits))
        return k, f"auto: K={k} on {device.type} ({free >> 20} MiB free, cap {cap})"
    if value > fits:
        return int(fits), f"population {value} reduced to {fits} to fit {free >> 20} MiB free on {device.type}"
    return int(value), ""
