"""Naive fine-tuning: train each task in turn with plain cross-entropy. The forgetting baseline."""

from pipeline.strategies.base import LockstepHooks, Strategy


class Naive(Strategy):
    """No protection at all: what catastrophic forgetting looks like. No λ."""

    name = "naive"
    lockstep = LockstepHooks  # plain cross-entropy
