"""Stored examples of past tasks, shared by replay, joint, GEM and A-GEM.

``EpisodicMemory`` keeps up to ``per_task`` examples of each task (None: all of them);
``ReservoirMemory`` keeps a fixed-size uniform sample of everything seen (reservoir sampling).
Both remember which task each example came from, so per-task heads answer correctly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.strategies.base import Strategy
from tasks.pool import Task


def mixed_task_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, names: list[str]
) -> torch.Tensor:
    """Mean cross-entropy over a batch mixing tasks (``t`` indexes ``names``)."""
    total = x.new_zeros(())
    for k in torch.unique(t).tolist():
        m = t == k
        total = total + F.cross_entropy(model(x[m], names[k]), y[m], reduction="sum")
    return total / max(1, len(y))


def draw(high: int, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """n indices below ``high`` from the global RNG, or from ``generator`` (a lockstep member's own
    CPU stream, the same numbers the global RNG would give it one at a time)."""
    if generator is None:
        return torch.randint(high, (n,), device=device)
    return torch.randint(high, (n,), generator=generator).to(device)


def member_batch(st, x: torch.Tensor, y: torch.Tensor, names: list[str], t: torch.Tensor, weight: float) -> tuple:
    """One lockstep member's memory batch as (x, y, head per sample, weight per sample)."""
    return x, y, st.member_heads(names, t), torch.full((len(y),), weight, device=y.device)


class EpisodicMemory:
    def __init__(self, per_task: int | None) -> None:
        self.per_task = per_task
        self.data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def add_task(self, task: Task, device: torch.device) -> None:
        """Keep a random ``per_task`` examples of the task (drawn with the seeded global RNG)."""
        n = len(task.y_train)
        idx = torch.randperm(n)[: self.per_task] if self.per_task is not None else torch.arange(n)
        self.data[task.name] = (task.x_train[idx].to(device), task.y_train[idx].to(device))

    def names(self) -> list[str]:
        return list(self.data)

    def sample(self, name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data[name]
        idx = draw(len(y), min(n, len(y)), y.device, generator)
        return x[idx], y[idx]

    def sample_all(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch drawn uniformly from the union of all tasks' examples (indices into their
        concatenation, gathered per task: the same draw without copying every memory each step)."""
        sizes = torch.tensor([len(y) for _, y in self.data.values()])
        total = int(sizes.sum())
        first = next(iter(self.data.values()))[1]
        idx = draw(total, min(n, total), first.device, generator)
        ends = torch.cumsum(sizes, 0).to(idx.device)
        ts = torch.bucketize(idx, ends, right=True)
        offset = idx - torch.cat([ends.new_zeros(1), ends[:-1]])[ts]
        parts = list(self.data.values())
        x_out = torch.empty((len(idx), *parts[0][0].shape[1:]), dtype=parts[0][0].dtype, device=first.device)
        y_out = torch.empty(len(idx), dtype=first.dtype, device=first.device)
        for k, (x, y) in enumerate(parts):
            m = ts == k
            if bool(m.any()):
                x_out[m], y_out[m] = x[offset[m]], y[offset[m]]
        return x_out, y_out, ts

    def state(self) -> dict:
        return {
            "names": list(self.data),
            "x": [v[0] for v in self.data.values()],
            "y": [v[1] for v in self.data.values()],
        }

    def load(self, state: dict) -> None:
        self.data = {n: (x, y) for n, x, y in zip(state["names"], state["x"], state["y"], strict=True)}


class ReservoirMemory:
    """A uniform sample of ``size`` examples of the whole stream seen so far."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen = 0
        self.names: list[str] = []
        self.x: torch.Tensor | None = None
        self.y = torch.zeros(0, dtype=torch.long)
        self.t = torch.zeros(0, dtype=torch.long)

    def add_task(self, task: Task, device: torch.device) -> None:
        k = len(self.names)
        self.names.append(task.name)
        xs, ys = task.x_train.to(device), task.y_train.to(device)
        if self.x is None:
            self.x = xs.new_zeros((0, *xs.shape[1:]))
            self.y, self.t = self.y.to(device), self.t.to(device)
        order = torch.randperm(len(ys)).tolist()
        # Reservoir sampling (Vitter's algorithm R): the i-th example of the stream is kept with
        # probability size / i, replacing a uniformly chosen slot.
        slots = torch.randint(1 << 62, (len(order),)).tolist()
        keep_x, keep_y, keep_t = [self.x], [self.y], [self.t]
        fill = max(0, min(self.size - len(self.y), len(order)))
        if fill:
            take = torch.tensor(order[:fill], device=ys.device)
            keep_x.append(xs[take])
            keep_y.append(ys[take])
            keep_t.append(torch.full((fill,), k, device=ys.device))
        self.x, self.y, self.t = torch.cat(keep_x), torch.cat(keep_y), torch.cat(keep_t)
        self.seen += fill
        for i, r in zip(order[fill:], slots[fill:], strict=True):
            self.seen += 1
            j = r % self.seen
            if j < self.size:
                self.x[j], self.y[j], self.t[j] = xs[i], ys[i], k

    def __len__(self) -> int:
        return len(self.y)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = draw(len(self.y), min(n, len(self.y)), self.y.device, generator)
        return self.x[idx], self.y[idx], self.t[idx]

    def state(self) -> dict:
        return {"size": self.size, "seen": self.seen, "names": list(self.names), "x": self.x, "y": self.y, "t": self.t}

    def load(self, state: dict) -> None:
        self.size, self.seen, self.names = state["size"], state["seen"], list(state["names"])
        self.x, self.y, self.t = state["x"], state["y"], state["t"]


class WithMemory(Strategy):
    """A strategy that stores examples of each finished task in ``self.memory``."""

    memory: EpisodicMemory | ReservoirMemory

    def after_task(self, model, task):
        self.memory.add_task(task, next(model.parameters()).device)
        super().after_task(model, task)

    def extra_state(self):
        return {"memory": self.memory.state()}

    def load_extra_state(self, state):
        self.memory.load(state["memory"])
