"""Checkpoints: model + strategy state (+ metadata) in one file, loaded without unpickling code.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers, so a checkpoint
handed over by someone else cannot run code on load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.models import build_model
from pipeline.strategies.base import Strategy
from tasks.errors import LLLError


def save_checkpoint(path: str | Path, model: nn.Module, strategy: Strategy, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(checkpoint_bytes(model, strategy, meta))
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict: ``model_spec``, ``model``, ``strategy``, ``meta``."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LLLError(f"checkpoint {path} does not exist; check the path") from None
    except Exception as exc:  # weights_only refuses anything but tensors and plain data
        raise LLLError(
            f"checkpoint {path} cannot be loaded safely ({type(exc).__name__}); only lll checkpoints are accepted"
        ) from None


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    model = build_model(ckpt["model_spec"])
    model.load_state_dict(ckpt["model"])
    return model


def checkpoint_bytes(model: nn.Module, strategy: Strategy, meta: dict | None = None) -> bytes:
    """The same content as :func:`save_checkpoint`, as bytes (what a remote worker sends back)."""
    import io

    buf = io.BytesIO()
    torch.save(
        {"model_spec": model.spec, "model": model.state_dict(), "strategy": strategy.state_dict(), "meta": meta or {}},
        buf,
    )
    return buf.getvalue()
