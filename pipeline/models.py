"""The learner: a body (an MLP, a small CNN, the memory network for text, or the user's own
network) with one shared output head, one head per task, or one growing head.

The model maps ``(x, task_name)`` to logits, so strategies and the loop never need to know whether
heads are shared (domain-incremental) or per task (task-incremental).

The one convention for a user's model (``--model module:function``): lll calls
``function(input_shape, n_classes)`` and gets an ``nn.Module``. If it has a ``features(x)`` method
and a final ``nn.Linear`` called ``head``, lll keeps the features and puts its own head(s) on
them (shared, per task or growing, as ``--heads`` says); otherwise the module's output is taken as
the logits of one shared head, and its width must be the number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.config import BUILTIN_MODELS  # the model registry: pipeline/config.py validates the names
from pipeline.growing_head import GrowingHead
from pipeline.text_models import build_memn2n, memn2n_for_pool
from tasks.errors import LLLError


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


def make_heads(
    width: int, heads: dict[str, int], shared_head: bool, growing: dict | None
) -> tuple[nn.ModuleList, dict[str, int]]:
    """The output layer(s) on ``width`` features, and which head answers each task."""
    if growing is not None:
        return nn.ModuleList([GrowingHead(width, growing["blocks"])]), dict.fromkeys(heads, 0)
    if shared_head:
        return nn.ModuleList([nn.Linear(width, max(heads.values()))]), dict.fromkeys(heads, 0)
    return nn.ModuleList([nn.Linear(width, n) for n in heads.values()]), {name: i for i, name in enumerate(heads)}


class HeadedNet(nn.Module):
    """A body given by :meth:`features` with lll's heads on top (the CNN and user models)."""

    def _set_heads(self, width: int, heads: dict[str, int], shared_head: bool, growing: dict | None) -> None:
        self.width, self.shared_head, self.task_names = width, shared_head, list(heads)
        self.heads, self._head_index = make_heads(width, heads, shared_head, growing)

    def grow_for(self, task) -> None:
        """Class-incremental (growing head): add output units for ``task``'s new labels."""
        if "growing" not in self.spec:
            return
        device = next(self.parameters()).device
        if self.heads[0].grow(self.width, int(task.y_train.max()) + 1, self.spec["growing"]["init"], device):
            self.spec["growing"]["blocks"] = self.heads[0].sizes()

    def head(self, task: str) -> nn.Module:
        return self.heads[self._head_index[task]]

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.head(task)(self.features(x))


class CNN(HeadedNet):
    """A small conv net for 1- or 3-channel images: two 3×3 conv layers (16, 32 channels, each
    followed by ReLU and 2×2 max-pooling), then one ReLU linear layer per ``hidden`` width."""

    def __init__(
        self, input_shape: Sequence[int], hidden: Sequence[int], heads: dict[str, int], shared_head: bool, growing=None
    ) -> None:
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) not in (2, 3) or min(shape[-2:]) < 4:
            raise LLLError(
                f"the cnn takes images (H, W) or (C, H, W) of at least 4×4; this pool's inputs have shape {shape}: "
                "use --model mlp or your own --model module:function"
            )
        channels, h, w = (1, *shape) if len(shape) == 2 else shape
        layers: list[nn.Module] = [
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        ]  # fmt: skip
        width = 32 * (h // 4) * (w // 4)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self._set_heads(width, heads, shared_head, growing)
        self.spec = {
            "kind": "cnn",
            "input_shape": list(shape),
            "hidden": list(hidden),
            "heads": dict(heads),
            "shared_head": shared_head,
        }
        if growing is not None:
            self.spec["growing"] = {"blocks": list(growing["blocks"]), "init": growing["init"]}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.unsqueeze(1) if x.ndim == 3 else x)


class UserModel(HeadedNet):
    """The user's network from ``factory(input_shape, n_classes)`` under the convention in the
    module docstring. Its spec names the factory, so :func:`build_model` rebuilds it anywhere the
    factory's module can be imported (Ray workers get it shipped: see search/study/cluster.py)."""

    def __init__(
        self, factory: str, input_shape: Sequence[int], heads: dict[str, int], shared_head: bool, growing=None
    ) -> None:
        super().__init__()
        from tasks.user_code import import_object

        n_classes = max(heads.values())
        make = import_object(factory, "model factory")
        try:
            net = make(tuple(input_shape), n_classes)
        except LLLError:
            raise
        except Exception as exc:
            raise LLLError(f"model factory {factory!r} raised {type(exc).__name__}: {exc}; fix the factory") from None
        if not isinstance(net, nn.Module):
            raise LLLError(f"model factory {factory!r} returned a {type(net).__name__}, not a torch.nn.Module")
        head = getattr(net, "head", None)
        self.own_head = callable(getattr(net, "features", None)) and isinstance(head, nn.Linear)
        self.net = net
        if self.own_head:  # lll's heads replace the user's final layer
            net.head = nn.Identity()
            self._set_heads(head.in_features, heads, shared_head, growing)
        elif growing is not None or not shared_head:
            raise LLLError(
                f"--heads {'growing' if growing is not None else 'per-task'} needs lll to add the heads: give the "
                f"module of {factory!r} a features(x) method and a final nn.Linear named `head` (see docs/own-tasks.md)"
            )
        else:
            self._set_heads(n_classes, heads, shared_head, None)
            self.heads[0] = nn.Identity()  # the module's own output is the logits
        self.spec = {
            "kind": "user",
            "factory": factory,
            "input_shape": list(input_shape),
            "heads": dict(heads),
            "shared_head": shared_head,
        }
        if growing is not None:
            self.spec["growing"] = {"blocks": list(growing["blocks"]), "init": growing["init"]}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x) if self.own_head else self.net(x)


def check_outputs(model: nn.Module, pool, what: str) -> None:
    """One forward pass on two examples of each task: the logits must be (2, classes of the head)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for task in pool.tasks.values():
                head = model.head(task.name)
                want = getattr(head, "out_features", None) or max(model.spec["heads"].values())
                try:
                    out = model(task.x_train[:2], task.name)
                except Exception as exc:
                    raise LLLError(
                        f"{what} fails on task {task.name!r} inputs of shape {tuple(task.input_shape)}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; make the model take that shape"
                    ) from None
                growing = "growing" in model.spec  # no units before its first task
                if (
                    not isinstance(out, torch.Tensor)
                    or out.ndim != 2
                    or (out.shape[1] < task.n_classes and not growing)
                ):
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise LLLError(
                        f"{what} gives outputs of shape {got} on task {task.name!r}, which has {task.n_classes} "
                        f"classes; the output must be (batch, {want}) logits"
                    )
                if not growing and out.shape[1] != want:
                    raise LLLError(
                        f"{what} gives {out.shape[1]} logits but the pool's classes need {want}; "
                        f"make its output width n_classes ({want})"
                    )
    finally:
        model.train(was_training)


def check_model_name(name: str | None) -> None:
    """A ``module:function`` model is imported now (one line if it cannot be), so that a search
    fails before Ray starts, and the module is shipped to the workers."""
    if name is not None and name not in BUILTIN_MODELS:
        from tasks.user_code import import_object

        import_object(name, "model factory")


def he_init(model: nn.Module) -> None:
    """He (Kaiming) initialisation for ReLU layers; zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
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
    if spec["kind"] == "cnn":
        return CNN(spec["input_shape"], spec["hidden"], spec["heads"], spec["shared_head"], spec.get("growing"))
    if spec["kind"] == "user":
        return UserModel(spec["factory"], spec["input_shape"], spec["heads"], spec["shared_head"], spec.get("growing"))
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def model_for_pool(
    pool, hidden: Sequence[int], heads: str | None, init: str, seed: int, model: str | None = None
) -> nn.Module:
    """The initial model for a pool: one head per pool task (in pool order) or one shared head.

    Its weights depend only on (pool, settings, seed), never on the ordering, so every ordering
    starts from the same row 0 of R. ``model``: mlp, cnn, memn2n or module:function; None means
    the pool's natural one (a memory network for text pools such as bAbI, else the MLP)."""
    text = getattr(pool, "meta", {}).get("kind") == "text"
    kind = model or ("memn2n" if text else "mlp")
    if kind == "memn2n" or (text and kind in ("mlp", "cnn")):
        if not text:
            raise LLLError("--model memn2n reads bAbI stories; this pool has no text: use mlp, cnn or module:function")
        if kind != "memn2n":
            raise LLLError(f"--model {kind} takes numeric features; bAbI pools use the memory network (drop --model)")
        return memn2n_for_pool(pool, hidden, heads, init, seed)
    first = next(iter(pool.tasks.values()))
    if kind in ("mlp", "cnn") and not first.x_train.is_floating_point():
        raise LLLError(
            f"pool {pool.name!r} has integer features ({first.x_train.dtype}); the built-in {kind} takes floats: "
            "cast them in your factory or bring your own model (--model module:function)"
        )
    mode = heads or pool.spec.heads
    growing = {"blocks": [], "init": init} if mode == "growing" else None  # class-incremental
    head_sizes = {t.name: t.n_classes for t in pool.tasks.values()}
    shared = mode in ("shared", "growing")
    torch.manual_seed(seed)
    if kind == "mlp":
        net: nn.Module = MLP(int(torch.tensor(first.input_shape).prod()), hidden, head_sizes, shared, growing)
    elif kind == "cnn":
        net = CNN(first.input_shape, hidden, head_sizes, shared, growing)
    else:
        net = UserModel(kind, first.input_shape, head_sizes, shared, growing)
    if init == "he":
        he_init(net.heads if isinstance(net, UserModel) else net)  # a user's body keeps its own init
    if kind != "mlp":
        check_outputs(net, pool, "the cnn" if kind == "cnn" else f"model {kind!r}")
    return net
