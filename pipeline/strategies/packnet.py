"""PackNet (Mallya & Lazebnik, 2018): pack several tasks into one network by iterative pruning.

Every shared weight (hidden layers, and the head when it is shared) has an owner: 0 = free, k =
the k-th task trained. Task k trains only the free weights (the others' gradients are zeroed, so
they do not move) while using all weights. After the task, the smallest-magnitude ``prune``
fraction of the weights it trained is released (set to 0, free again for later tasks), the rest
is retrained for ``retrain_epochs`` epochs and becomes task k's. At test time task k is answered
with the weights owned by tasks 1..k only, so later tasks cannot change it: BWT is exactly 0.
Biases cannot be split between tasks: each is trained by the first task that uses it, then frozen.

Free capacity (the fraction of shared weights still free) is logged after every task
(``capacity_log``, :meth:`capacity`); when a layer has no free weight left for a new task the run
stops with an error. The owner masks are stored state (2 bytes per shared weight).

Task-incremental (the mask is picked by the task's identity). No λ. Options: ``prune`` (fraction
released after each task, default 0.5), ``retrain_epochs`` (default 2), ``lr`` and ``batch_size``
of the retraining (defaults 0.01, 32; SGD with TrainConfig's other defaults).
"""

import torch
from torch.func import functional_call

from pipeline.expansion import fit, free_share, require_mlp, shared_biases, shared_weights, smallest
from pipeline.strategies.base import Strategy, trainable
from tasks.errors import LLLError


class PackNet(Strategy):
    name = "packnet"

    def __init__(
        self,
        lam: float | None = None,
        prune: float = 0.5,
        retrain_epochs: int = 2,
        lr: float = 0.01,
        batch_size: int = 32,
    ) -> None:
        super().__init__(lam)
        if not 0 <= prune < 1:
            raise ValueError("prune must be in [0, 1)")
        self.prune, self.retrain_epochs = float(prune), int(retrain_epochs)
        self.lr, self.batch_size = float(lr), int(batch_size)
        self.owner: dict[str, torch.Tensor] = {}  # int16 owner per shared weight
        self.frozen_bias: list[str] = []
        self.capacity_log: list[dict] = []
        self._may_change: dict[str, torch.Tensor] = {}  # while training: entries allowed to move

    def capacity(self) -> float:
        """Fraction of the shared weights still free for later tasks."""
        return free_share(self.owner)

    def size_report(self, model):
        return {"free_share": self.capacity()}

    def before_task(self, model, task):
        require_mlp(model, self.name, growing_ok=False)
        for n, p in shared_weights(model).items():
            if n not in self.owner:
                self.owner[n] = torch.zeros(p.shape, dtype=torch.int16, device=p.device)
            if not bool((self.owner[n] == 0).any()):
                raise LLLError(
                    f"packnet has no free weights left in {n} for task {task.name!r} after {len(self.seen)} tasks "
                    f"(free capacity {self.capacity():.1%}); raise --option prune (now {self.prune}) or widen --hidden"
                )
        self._may_change = {n: o == 0 for n, o in self.owner.items()}
        return super().before_task(model, task)

    def after_backward(self, model):
        for n, p in trainable(model).items():
            if p.grad is None:
                continue
            if n in self._may_change:
                p.grad.mul_(self._may_change[n])
            elif n in self.frozen_bias:
                p.grad.zero_()

    @torch.no_grad()
    def _release(self, model) -> None:
        """Free the smallest-magnitude ``prune`` fraction of this task's weights, per layer."""
        for n, p in shared_weights(model).items():
            trained = self.owner[n] == 0
            release = smallest(p, trained, int(self.prune * int(trained.sum())))
            p.masked_fill_(release, 0.0)
            self._may_change[n] = trained & ~release

    def after_task(self, model, task):
        self._release(model)
        if self.retrain_epochs > 0:
            fit(model, self, task, self.retrain_epochs, self.lr, self.batch_size)
        k = len(self.seen) + 1
        for n, keep in self._may_change.items():
            self.owner[n][keep] = k
        self.frozen_bias = sorted(set(self.frozen_bias) | set(shared_biases(model)))
        self.capacity_log.append({"task": task.name, "free": self.capacity()})
        super().after_task(model, task)

    def predictor(self, model, task):
        if task.name not in self.seen:
            return super().predictor(model, task)
        k = self.seen.index(task.name) + 1
        params = dict(model.named_parameters())
        for n, o in self.owner.items():
            params[n] = params[n] * ((o > 0) & (o <= k))
        return lambda x: functional_call(model, params, (x, task.name))

    def extra_state(self):
        return {"owner": dict(self.owner), "frozen_bias": list(self.frozen_bias), "capacity_log": self.capacity_log[:]}

    def load_extra_state(self, state):
        self.owner = dict(state["owner"])
        self.frozen_bias = list(state["frozen_bias"])
        self.capacity_log = [dict(c) for c in state["capacity_log"]]
