"""Expert Gate (Aljundi et al., 2017): one expert per task, chosen at test time by autoencoder gates.

Before a task, a small undercomplete autoencoder (the task's gate) is trained on its inputs. The
new task's expert starts as a copy of the most related existing expert — the one whose gate
reconstructs the new data best (lowest mean error) — and is fine-tuned while every earlier
expert and gate is frozen. At test time no task identity is needed: each input goes to the
expert whose gate reconstructs it best, and that expert answers with its own head. Forgetting
can then only come from gate mistakes; :meth:`ExpertGate.gate_accuracy` measures them.

Simplifications: relatedness is the plain lowest reconstruction error of the existing gates on
the new data (the paper normalises it by the new gate's own error, which picks the same expert);
the new expert is always fine-tuned from the most related one (the paper switches to LwF for
closely related tasks). The model grows by one expert + gate per task.

No λ. Options: ``gate_hidden`` (autoencoder code size, default 32), ``gate_epochs`` (default 10),
``gate_lr`` (Adam, default 1e-3), ``gate_batch`` (default 64).
"""

import copy

import torch

from pipeline.expansion import AutoEncoder, ExpertNet, freeze, require_mlp
from pipeline.strategies.base import Strategy
from tasks.pool import Task


class ExpertGate(Strategy):
    name = "expert-gate"

    def __init__(
        self,
        lam: float | None = None,
        gate_hidden: int = 32,
        gate_epochs: int = 10,
        gate_lr: float = 1e-3,
        gate_batch: int = 64,
    ) -> None:
        super().__init__(lam)
        if gate_hidden <= 0 or gate_epochs < 0 or gate_batch <= 0:
            raise ValueError("gate_hidden and gate_batch must be positive, gate_epochs ≥ 0")
        self.gate_hidden, self.gate_epochs = int(gate_hidden), int(gate_epochs)
        self.gate_lr, self.gate_batch = float(gate_lr), int(gate_batch)
        self.related: list[dict] = []  # per task: which expert it started from, and the gates' errors

    def _train_gate(self, gate: AutoEncoder, x: torch.Tensor) -> None:
        opt = torch.optim.Adam(gate.parameters(), lr=self.gate_lr)
        for _ in range(self.gate_epochs):
            perm = torch.randperm(len(x), device=x.device)
            for i in range(0, len(x), self.gate_batch):
                batch = x[perm[i : i + self.gate_batch]]
                opt.zero_grad(set_to_none=True)
                gate.error(batch).mean().backward()
                opt.step()
        freeze(gate)

    def before_task(self, model, task):
        device = next(model.parameters()).device
        x = task.x_train.to(device)
        input_dim = x[0].numel()
        if isinstance(model, ExpertNet):
            with torch.no_grad():
                errors = model.gate_errors(x).mean(0)
            src = int(errors.argmin())
            self.related.append({"task": task.name, "from": model.owners[src], "errors": errors.tolist()})
            freeze(model)
            expert = copy.deepcopy(model.experts[src])
            for p in expert.parameters():
                p.requires_grad_(True)
            grow = getattr(expert, "grow_for", None)  # class-incremental: the copy gets the new classes
            if grow is not None:
                grow(task)
        else:
            require_mlp(model, self.name, kinds=("mlp", "cnn", "user"))  # experts are rebuilt from any spec
            expert, model = model, ExpertNet([], [], input_dim, self.gate_hidden)
            self.related.append({"task": task.name, "from": None, "errors": []})
        gate = AutoEncoder(input_dim, self.gate_hidden).to(device)
        self._train_gate(gate, x)
        model.add_expert(expert, gate, task.name)
        super().before_task(model, task)
        return model

    def predictor(self, model, task):
        if isinstance(model, ExpertNet):
            return model.predict
        return super().predictor(model, task)

    @torch.no_grad()
    def gate_accuracy(self, model, tasks: list[Task]) -> dict[str, float]:
        """For each task that has an expert: the fraction of its test inputs the gates send to it."""
        if not isinstance(model, ExpertNet):
            return {}
        device = next(model.parameters()).device
        out = {}
        for t in tasks:
            if t.name in model.owners:
                route = model.route(t.x_test.to(device))
                out[t.name] = float((route == model.owners.index(t.name)).float().mean())
        return out

    def extra_state(self):
        return {"related": [dict(r) for r in self.related]}

    def load_extra_state(self, state):
        self.related = [dict(r) for r in state["related"]]
