"""iCaRL (Rebuffi et al., 2017): exemplars by herding, nearest-mean-of-exemplars, distillation.

Built for the class-incremental setting (one growing head), it runs on every head layout.

* Exemplars: ``memory_size`` inputs in total, shared equally by every class seen (a class is a
  (task, label) pair, so domain-incremental tasks keep their own exemplars of each digit). A new
  class's exemplars are chosen by herding: greedily, the input whose addition keeps the mean
  feature of the chosen ones closest to the class mean. Lists are kept in herding order, so
  shrinking them when new classes arrive just drops their tails.
* Training: each batch of the new task is joined by as many exemplars, with the paper's sigmoid
  binary cross-entropy; for outputs of old classes the targets are the previous model's
  sigmoids (distillation), for the others the one-hot labels. With a shared head whose classes
  are all current (domain-incremental) nothing is distilled; with per-task heads an exemplar's
  own (old) head is distilled.
* Testing (:meth:`predictor`): nearest mean of exemplars — the class whose exemplars' mean
  L2-normalised feature is closest to the input's normalised feature (restricted to the task's
  own classes with per-task heads). Means are recomputed with the current model after each task.

No λ (the paper's single loss mixes both terms). Options: ``memory_size`` (default 500, as
replay), ``batch_size`` (exemplars per step, default: the training batch size).
"""

import copy

import torch
import torch.nn.functional as F

from pipeline.strategies.base import Strategy


@torch.no_grad()
def herding(feats: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of ``m`` rows of ``feats`` chosen greedily so their running mean tracks the mean."""
    mu = feats.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    taken = torch.zeros(len(feats), dtype=torch.bool, device=feats.device)
    for k in range(1, min(m, len(feats)) + 1):
        dist = (mu - (running + feats) / k).norm(dim=1).masked_fill(taken, float("inf"))
        i = int(dist.argmin())
        chosen.append(i)
        taken[i] = True
        running += feats[i]
    return torch.tensor(chosen, dtype=torch.long, device=feats.device)


class ICaRL(Strategy):
    name = "icarl"

    def __init__(self, lam: float | None = None, memory_size: int = 500, batch_size: int | None = None) -> None:
        super().__init__(lam)
        if memory_size <= 0:
            raise ValueError("memory_size must be positive")
        self.memory_size, self.batch_size = int(memory_size), batch_size
        self.proto_task: list[str] = []  # class k = (proto_task[k], proto_label[k])
        self.proto_label: list[int] = []
        self.exemplars: list[torch.Tensor] = []  # inputs of class k, herding order
        self.means: torch.Tensor | None = None  # (classes, features), L2-normalised
        self.classes: dict[str, list[int]] = {}  # labels of each task
        self.teacher: torch.nn.Module | None = None
        self._mem: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._mem_names: list[str] = []

    def before_task(self, model, task):
        self.classes[task.name] = sorted(set(task.y_train.tolist()))
        self.teacher = None
        if self.seen:
            self.teacher = copy.deepcopy(model).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self._mem = self._flat_memory()
        return super().before_task(model, task)

    # ---- training ------------------------------------------------------------------------------
    def _old_classes(self, model, head: str) -> list[int]:
        if self.teacher is None:
            return []
        if model.shared_head:
            old = {c for t in self.seen for c in self.classes[t]}
            return sorted(old - set(self.classes[self.task]))
        return [] if head == self.task else self.classes[head]

    def _bce(self, model, x: torch.Tensor, y: torch.Tensor, head: str) -> torch.Tensor:
        """Summed over outputs, summed over the batch."""
        logits = model(x, head)
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        old = self._old_classes(model, head)
        if old:
            cols = torch.tensor(old, device=x.device)
            with torch.no_grad():
                target[:, cols] = torch.sigmoid(self.teacher(x, head)[:, cols])
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")

    def _flat_memory(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if not self.exemplars:
            return None
        names = list(dict.fromkeys(self.proto_task))
        xs = torch.cat(self.exemplars)
        pairs = list(zip(self.exemplars, self.proto_label, self.proto_task, strict=True))
        ys = torch.cat([torch.full((len(e),), c, device=e.device) for e, c, _ in pairs])
        ts = torch.cat([torch.full((len(e),), names.index(t), device=e.device) for e, _, t in pairs])
        self._mem_names = names
        return xs, ys, ts

    def loss(self, model, x, y):
        total, count = self._bce(model, x, y, self.task), len(y)
        if self._mem is not None:
            mx, my, mt = self._mem
            idx = torch.randint(len(my), (min(self.batch_size or len(y), len(my)),), device=my.device)
            mx, my, mt = mx[idx], my[idx], mt[idx]
            for k in torch.unique(mt).tolist():
                m = mt == k
                total = total + self._bce(model, mx[m], my[m], self._mem_names[k])
            count += len(idx)
        return total / count

    # ---- exemplars and means -------------------------------------------------------------------
    @torch.no_grad()
    def after_task(self, model, task):
        device = next(model.parameters()).device
        x, y = task.x_train.to(device), task.y_train.to(device)
        per_class = max(1, self.memory_size // (len(self.proto_task) + len(self.classes[task.name])))
        self.exemplars = [e[:per_class] for e in self.exemplars]
        for c in self.classes[task.name]:
            xc = x[y == c]
            order = herding(F.normalize(model.features(xc), dim=1), per_class)
            self.proto_task.append(task.name)
            self.proto_label.append(c)
            self.exemplars.append(xc[order].clone())
        self.means = F.normalize(
            torch.stack([F.normalize(model.features(e), dim=1).mean(0) for e in self.exemplars]), dim=1
        )
        self.teacher, self._mem = None, None
        super().after_task(model, task)

    def predictor(self, model, task):
        allowed = [k for k, t in enumerate(self.proto_task) if model.shared_head or t == task.name]
        if self.means is None or not allowed:
            return super().predictor(model, task)
        means = self.means[allowed]
        labels = torch.tensor([self.proto_label[k] for k in allowed], device=means.device)
        width = int(labels.max()) + 1

        def nearest_mean(x: torch.Tensor) -> torch.Tensor:
            score = -torch.cdist(F.normalize(model.features(x), dim=1), means)
            out = score.new_full((len(x), width), float("-inf"))
            return out.scatter_reduce(1, labels.expand(len(x), -1), score, reduce="amax")

        return nearest_mean

    # ---- state -----------------------------------------------------------------------------------
    def extra_state(self):
        return {
            "proto_task": list(self.proto_task),
            "proto_label": list(self.proto_label),
            "exemplars": list(self.exemplars),
            "means": self.means,
            "classes": {k: list(v) for k, v in self.classes.items()},
        }

    def load_extra_state(self, state):
        self.proto_task, self.proto_label = list(state["proto_task"]), list(state["proto_label"])
        self.exemplars, self.means = list(state["exemplars"]), state["means"]
        self.classes = {k: list(v) for k, v in state["classes"].items()}
