"""The learner: an MLP body with one shared output head, one head per task, or one growing head.

The model maps ``(x, task_name)`` to logits, so strategies and the loop never need to know whether
heads are shared (domain-incremental) or per task (task-incremental).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.growing_head import GrowingHead
from pipeline.text_models import build_memn2n, memn2n_for_pool


class MLP(nn.Module):
    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        heads: dict[str, int],
        shared_head: bool,
        growing: dict | None = None,
    ) -> None:
        """``heads`` maps each task name to its number of classes; a shared head has the largest.
        ``growing`` ({"blocks": [...], "init": ...}) makes the one head a class-incremental
        :class:`GrowingHead` that :meth:`grow_for` extends."""
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.shared_head = shared_head
        self.task_names = list(heads)
        if growing is not None:
            self.heads = nn.ModuleList([GrowingHead(width, growing["blocks"])])
            self._head_index = dict.fromkeys(heads, 0)
        elif shared_head:
            self.heads = nn.ModuleList([nn.Linear(width, max(heads.values()))])
            self._head_index = dict.fromkeys(heads, 0)
        else:
            self.heads = nn.ModuleList([nn.Linear(width, n) for n in heads.values()])
            self._head_index = {name: i for i, name in enumerate(heads)}
        self.spec = {
            "kind": "mlp",
            "input_dim": input_dim,
            "hidden": list(hidden),
            "heads": dict(heads),
            "shared_head": shared_head,
        }
        if growing is not None:
            self.spec["growing"] = {"blocks": list(growing["blocks"]), "init": growing["init"]}

    def grow_for(self, task) -> None:
        """Class-incremental (a growing head): add output units for the labels ``task`` brings
        beyond the head, before it is trained. A no-op for shared and per-task heads."""
        if "growing" not in self.spec:
            return
        width = self.spec["hidden"][-1] if self.spec["hidden"] else self.spec["input_dim"]
        device = next(self.parameters()).device
        head = self.heads[0]
        if head.grow(width, int(task.y_train.max()) + 1, self.spec["growing"]["init"], device):
            self.spec["growing"]["blocks"] = head.sizes()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, task: str) -> nn.Module:
        return self.heads[self._head_index[task]]

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.head(task)(self.body(x))


def he_init(model: nn.Module) -> None:
    """He (Kaiming) initialisation for ReLU layers; zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def build_model(spec: dict) -> nn.Module:
    """Rebuild a model from its ``spec`` (as stored in checkpoints)."""
    if spec["kind"] == "mlp":
        return MLP(spec["input_dim"], spec["hidden"], spec["heads"], spec["shared_head"], spec.get("growing"))
    if spec["kind"] in ("pnn", "experts"):  # models grown by expansion strategies
        from pipeline.expansion import build_expanded

        return build_expanded(spec)
    if spec["kind"] == "memn2n":
        return build_memn2n(spec)
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def model_for_pool(pool, hidden: Sequence[int], heads: str | None, init: str, seed: int) -> nn.Module:
    """The initial model for a pool: one head per pool task (in pool order) or one shared head.

    Its weights depend only on (pool, settings, seed), never on the ordering, so every ordering
    starts from the same row 0 of R. Text pools (bAbI) get a memory network instead of an MLP.
    """
    if getattr(pool, "meta", {}).get("kind") == "text":
        return memn2n_for_pool(pool, hidden, heads, init, seed)
    first = next(iter(pool.tasks.values()))
    input_dim = int(torch.tensor(first.input_shape).prod())
    mode = heads or pool.spec.heads
    growing = {"blocks": [], "init": init} if mode == "growing" else None  # class-incremental
    head_sizes = {t.name: t.n_classes for t in pool.tasks.values()}
    torch.manual_seed(seed)
    model = MLP(input_dim, hidden, head_sizes, mode in ("shared", "growing"), growing)
    if init == "he":
        he_init(model)
    return model
