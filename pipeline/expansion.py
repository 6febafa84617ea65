"""Models that grow, for the model-expansion strategies: PNN columns, Expert Gate experts, Net2Net
and CPG widening; and the weight-ownership helpers PackNet and CPG share.

Each grown model keeps a ``spec`` from which :func:`pipeline.models.build_model` rebuilds it
exactly (then ``load_state_dict``), so the prefix cache and checkpoints work as for the plain MLP.
A column or expert is itself an MLP built from an MLP spec; the MLP's layers are reused as-is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import MLP, build_model, he_init
from tasks.errors import LLLError


def linears(mlp: MLP) -> list[nn.Linear]:
    """The hidden layers of an MLP body, in order."""
    return [m for m in mlp.body if isinstance(m, nn.Linear)]


def require_mlp(model: nn.Module, strategy: str, growing_ok: bool = True) -> None:
    if not isinstance(model, MLP):
        raise LLLError(f"strategy {strategy!r} works on the MLP; it cannot run on a {model.spec['kind']!r} model")
    if not growing_ok and "growing" in model.spec:
        raise LLLError(
            f"strategy {strategy!r} picks its parameters by the task's identity at test time (task-incremental); "
            "it does not apply to a class-incremental growing head: use --heads per-task or shared"
        )


def freeze(module: nn.Module) -> None:
    """No more training: no gradient, and no stale one either (the loop's gradient-norm clipping
    sums over every parameter holding a .grad, so a leftover would change the new task's steps)."""
    for p in module.parameters():
        p.requires_grad_(False)
        p.grad = None


# ---------------------------------------------------------------------------------------------
# Progressive neural networks
# ---------------------------------------------------------------------------------------------
class PNN(nn.Module):
    """One column (an MLP of the base architecture) per task. Hidden layer l ≥ 2 of column k also
    reads layer l−1 of every earlier column through one lateral linear map U_l^k (no bias):

        h_l^k = relu(W_l^k h_{l−1}^k + U_l^k [h_{l−1}^0; …; h_{l−1}^{k−1}])

    The output for a task comes from its own column and that column's head for the task; a task
    without a column yet is answered by the newest column. Column k only ever reads columns ≤ k,
    so freezing earlier columns freezes their tasks' outputs exactly.
    """

    def __init__(self, base: dict, owners: Sequence[str]) -> None:
        super().__init__()
        self.base = copy.deepcopy(base)
        self.owners: list[str] = []
        self.columns = nn.ModuleList()
        self.laterals = nn.ModuleList()
        self.shared_head = base["shared_head"]
        self.task_names = list(base["heads"])
        for name in owners:
            self.add_column(build_model(base), name)

    @property
    def spec(self) -> dict:
        return {"kind": "pnn", "base": self.base, "owners": list(self.owners)}

    def add_column(self, column: MLP, owner: str) -> None:
        k = len(self.columns)
        hidden = self.base["hidden"]
        # Laterals start at zero: a new column starts as an independent fresh network and learns
        # how much of the old columns' features to use (gradients reach U from the first step).
        lat = nn.ModuleList(
            [nn.Linear(k * hidden[i - 1], hidden[i], bias=False) for i in range(1, len(hidden) if k else 1)]
        )
        for m in lat:
            nn.init.zeros_(m.weight)
        device = next(column.parameters()).device
        self.columns.append(column)
        self.laterals.append(lat.to(device))
        self.owners.append(owner)

    def column_of(self, task: str) -> int:
        return self.owners.index(task) if task in self.owners else len(self.owners) - 1

    def _last_hidden(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Last hidden layer of column k (computing columns 0..k only)."""
        prev = [x.flatten(1)] * (k + 1)
        layers = [linears(c) for c in self.columns[: k + 1]]
        for i in range(len(self.base["hidden"])):
            new = []
            for c in range(k + 1):
                z = layers[c][i](prev[c])
                if i > 0 and c > 0:
                    z = z + self.laterals[c][i - 1](torch.cat(prev[:c], dim=1))
                new.append(F.relu(z))
            prev = new
        return prev[k]

    def features(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return self._last_hidden(x, self.column_of(task) if task else len(self.owners) - 1)

    def head(self, task: str) -> nn.Module:
        return self.columns[self.column_of(task)].head(task)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        k = self.column_of(task)
        return self.columns[k].head(task)(self._last_hidden(x, k))


def new_column(base: dict, init: str = "he") -> MLP:
    """A freshly initialised column (global RNG, seeded per task by the loop)."""
    column = build_model(base)
    if init == "he":
        he_init(column)
    return column


# ---------------------------------------------------------------------------------------------
# Expert Gate
# ---------------------------------------------------------------------------------------------
class AutoEncoder(nn.Module):
    """An undercomplete one-hidden-layer autoencoder on flattened inputs in [0, 1] (a task's gate)."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU())
        self.decode = nn.Linear(hidden, input_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)))

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared reconstruction error."""
        return (self(x) - x.flatten(1)).pow(2).mean(1)


class ExpertNet(nn.Module):
    """One expert (an MLP) and one autoencoder gate per task. ``forward(x, task)`` uses the task's
    own expert (training); :meth:`predict` routes each input to the expert whose gate reconstructs
    it best and answers with that expert's own head (testing, no task identity needed)."""

    def __init__(self, experts: Sequence[dict], owners: Sequence[str], input_dim: int, gate_hidden: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList([build_model(s) for s in experts])
        self.gates = nn.ModuleList([AutoEncoder(input_dim, gate_hidden) for _ in owners])
        self.owners = list(owners)
        self.input_dim, self.gate_hidden = input_dim, gate_hidden

    @property
    def spec(self) -> dict:
        return {
            "kind": "experts",
            "experts": [e.spec for e in self.experts],
            "owners": list(self.owners),
            "input_dim": self.input_dim,
            "gate_hidden": self.gate_hidden,
        }

    @property
    def shared_head(self) -> bool:
        return self.experts[0].shared_head

    @property
    def task_names(self) -> list[str]:
        return self.experts[0].task_names

    def add_expert(self, expert: MLP, gate: AutoEncoder, owner: str) -> None:
        self.experts.append(expert)
        self.gates.append(gate)
        self.owners.append(owner)

    def expert_of(self, task: str) -> int:
        return self.owners.index(task) if task in self.owners else len(self.owners) - 1

    def features(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return self.experts[self.expert_of(task) if task else -1].features(x)

    def head(self, task: str) -> nn.Module:
        return self.experts[self.expert_of(task)].head(task)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.experts[self.expert_of(task)](x, task)

    def gate_errors(self, x: torch.Tensor) -> torch.Tensor:
        """(N, experts) reconstruction errors."""
        return torch.stack([g.error(x) for g in self.gates], dim=1)

    def route(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_errors(x).argmin(1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Gate routing; heads may differ in width, so missing logits are −inf (argmax ignores them)."""
        choice = self.route(x)
        outs = {}
        for k in torch.unique(choice).tolist():
            m = choice == k
            outs[k] = (m, self.experts[k](x[m], self.owners[k]))
        width = max(o.shape[1] for _, o in outs.values())
        result = x.new_full((len(x), width), float("-inf"))
        for m, o in outs.values():
            result[m, : o.shape[1]] = o
        return result


# ---------------------------------------------------------------------------------------------
# Net2Net
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def widen(mlp: MLP, layer: int, new_width: int, noise: float = 0.0, fresh: bool = False) -> None:
    """Grow hidden ``layer`` to ``new_width`` units, in place; the new units come last.

    Net2WiderNet (the default): each new unit copies a randomly chosen existing unit (its incoming
    weights and bias); every copy of a unit, the original included, gets 1/(number of copies) of
    its outgoing weights, so with ``noise`` = 0 the network computes the same function (splitting a
    unit in two halves its outgoing weights). ``noise`` > 0 adds N(0, (noise·std W)²) to the new
    units' incoming weights to break the symmetry between copies (then the function is preserved
    only approximately).

    ``fresh`` (CPG's growing): the new units get He-initialised incoming weights, zero biases and
    zero outgoing weights, so the function is preserved exactly and the existing weights keep
    their positions (masks over them only need padding).
    """
    layers = linears(mlp)
    fc = layers[layer]
    old = fc.out_features
    if new_width <= old:
        return
    if layer + 1 < len(layers):
        consumers = [layers[layer + 1]]
    else:  # the last hidden layer feeds every head (and every block of a growing head)
        consumers = [m for m in mlp.heads.modules() if isinstance(m, nn.Linear)]
    if fresh:
        extra = fc.weight.new_empty(new_width - old, fc.in_features)
        nn.init.kaiming_normal_(extra, nonlinearity="relu")
        w, b = torch.cat([fc.weight, extra]), torch.cat([fc.bias, fc.bias.new_zeros(new_width - old)])
        outgoing = [torch.cat([c.weight, c.weight.new_zeros(c.out_features, new_width - old)], 1) for c in consumers]
    else:
        mapping = torch.cat([torch.arange(old), torch.randint(old, (new_width - old,))]).to(fc.weight.device)
        counts = torch.bincount(mapping, minlength=old).to(fc.weight.dtype)
        w, b = fc.weight[mapping].clone(), fc.bias[mapping].clone()
        if noise > 0:
            w[old:] += noise * fc.weight.std() * torch.randn_like(w[old:])
        outgoing = [c.weight[:, mapping] / counts[mapping] for c in consumers]
    fc.weight, fc.bias, fc.out_features = nn.Parameter(w), nn.Parameter(b), new_width
    for c, cw in zip(consumers, outgoing, strict=True):
        c.weight, c.in_features = nn.Parameter(cw), new_width
    mlp.spec["hidden"][layer] = new_width


def widen_all(mlp: MLP, factor: float, noise: float) -> tuple[list[int], list[int]]:
    """Widen every hidden layer by ``factor`` (at least one unit each); returns (before, after)."""
    before = list(mlp.spec["hidden"])
    for i, h in enumerate(before):
        widen(mlp, i, h + max(1, math.ceil(factor * h)), noise)
    return before, list(mlp.spec["hidden"])


# ---------------------------------------------------------------------------------------------
# weight ownership: PackNet and CPG
# ---------------------------------------------------------------------------------------------
def shared_weights(model: MLP) -> dict[str, nn.Parameter]:
    """The weight matrices every task uses: the hidden layers, and the head when it is shared.
    PackNet and CPG give each of their entries an owner task (0 = free)."""
    return {
        n: p
        for n, p in model.named_parameters()
        if p.requires_grad and p.dim() >= 2 and (n.startswith("body.") or model.shared_head)
    }


def shared_biases(model: MLP) -> list[str]:
    """The biases of the layers in :func:`shared_weights` (they cannot be split between tasks)."""
    layers = {n.rsplit(".", 1)[0] for n in shared_weights(model)}
    biases = (n for n, p in model.named_parameters() if p.requires_grad and p.dim() == 1)
    return [n for n in biases if n.rsplit(".", 1)[0] in layers]


def free_share(owner: dict[str, torch.Tensor]) -> float:
    """Fraction of the owned-weight entries still free (owner 0) for later tasks."""
    total = sum(o.numel() for o in owner.values())
    return sum(int((o == 0).sum()) for o in owner.values()) / total if total else 1.0


def smallest(weight: torch.Tensor, among: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean mask of the ``n`` smallest-magnitude entries of ``weight`` where ``among`` is True."""
    out = torch.zeros_like(among).flatten()
    if n > 0:
        mags = weight.detach().abs().masked_fill(~among, float("inf")).flatten()
        out[torch.topk(mags, n, largest=False).indices] = True
    return out.view_as(among)


def pad_to(t: torch.Tensor, shape: torch.Size, value: float | bool = 0) -> torch.Tensor:
    """``t`` in the leading corner of a ``shape`` tensor filled with ``value`` (masks after widening)."""
    out = t.new_full(shape, value)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


_BITS = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean mask as 1 bit per entry (uint8), as stored state; :func:`unpack_bits` inverts it."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8)
    return (flat * _BITS.to(flat.device)).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    bits = (packed.unsqueeze(1) & _BITS.to(packed.device)) != 0
    return bits.flatten()[: math.prod(shape)].view(shape)


# ---------------------------------------------------------------------------------------------
# rebuilding and extra training
# ---------------------------------------------------------------------------------------------
def build_expanded(spec: dict) -> nn.Module:
    """Rebuild a PNN or ExpertNet from its spec (called by :func:`pipeline.models.build_model`)."""
    if spec["kind"] == "pnn":
        return PNN(spec["base"], spec["owners"])
    if spec["kind"] == "experts":
        return ExpertNet(spec["experts"], spec["owners"], spec["input_dim"], spec["gate_hidden"])
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def fit(model: nn.Module, strategy, task, epochs: int, lr: float, batch_size: int) -> None:
    """Extra epochs on ``task`` after surgery (PackNet's retraining, Net2Net after widening), with
    the loop's own step (so the strategy's gradient hooks apply) and TrainConfig's other defaults."""
    from pipeline.config import TrainConfig
    from pipeline.train import make_optimizer, train_step

    cfg = TrainConfig(lr=lr, batch_size=batch_size, epochs=max(1, epochs))
    device = next(model.parameters()).device
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    x, y = task.x_train.to(device), task.y_train.to(device)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), device=device)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            train_step(model, optimizer, strategy, x[idx], y[idx], cfg.clip)


@torch.no_grad()
def accuracy(predict, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    correct = sum(int((predict(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(y), batch))
    return correct / max(1, len(y))


def train_accuracy(predict, task, device: torch.device) -> float:
    """Accuracy on the task's *training* data: what growth and pruning decisions look at (the
    test data is never used for a decision while learning)."""
    return accuracy(predict, task.x_train.to(device), task.y_train.to(device))
