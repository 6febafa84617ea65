"""Net2Net widening (Chen et al., 2016) as capacity on demand: grow only when a task does not fit.

Each task is first trained as usual. If the network's training accuracy on the task then stays
below ``threshold``, every hidden layer is widened function-preservingly (Net2WiderNet: new
units copy random existing units, each copy gets an equal share of the outgoing weights, and
``noise`` perturbs the copies' incoming weights to break their symmetry; see
pipeline/expansion.py) and training continues for ``extra_epochs``; repeated at most
``max_widenings`` times per task. Every widening is logged in ``growth`` (task, hidden sizes
before and after, training accuracy before and after) and the model's spec follows the growth.

Net2Net is about capacity, not forgetting: old tasks are not protected beyond what the widening
itself preserves. No λ. Options: ``threshold`` (training accuracy, default 0.95), ``widen_by``
(fraction of units added per layer, default 0.5), ``noise`` (default 0.01), ``max_widenings``
(per task, default 1), ``extra_epochs`` (default 3), ``lr`` and ``batch_size`` of that extra
training (defaults 0.01, 32; SGD with TrainConfig's other defaults).
"""

from pipeline.expansion import fit, require_mlp, train_accuracy, widen_all
from pipeline.strategies.base import Strategy


class Net2Net(Strategy):
    name = "net2net"

    def __init__(
        self,
        lam: float | None = None,
        threshold: float = 0.95,
        widen_by: float = 0.5,
        noise: float = 0.01,
        max_widenings: int = 1,
        extra_epochs: int = 3,
        lr: float = 0.01,
        batch_size: int = 32,
    ) -> None:
        super().__init__(lam)
        if widen_by <= 0 or noise < 0 or max_widenings < 0:
            raise ValueError("widen_by must be > 0, noise ≥ 0 and max_widenings ≥ 0")
        self.threshold, self.widen_by, self.noise = float(threshold), float(widen_by), float(noise)
        self.max_widenings, self.extra_epochs = int(max_widenings), int(extra_epochs)
        self.lr, self.batch_size = float(lr), int(batch_size)
        self.growth: list[dict] = []

    def before_task(self, model, task):
        require_mlp(model, self.name)
        return super().before_task(model, task)

    def _train_acc(self, model, task) -> float:
        device = next(model.parameters()).device
        return train_accuracy(lambda x: model(x, task.name), task, device)

    def after_task(self, model, task):
        acc = self._train_acc(model, task)
        for _ in range(self.max_widenings):
            if acc >= self.threshold:
                break
            before, after = widen_all(model, self.widen_by, self.noise)
            fit(model, self, task, self.extra_epochs, self.lr, self.batch_size)
            new_acc = self._train_acc(model, task)
            log = {"task": task.name, "hidden_before": before, "hidden_after": after}
            self.growth.append({**log, "acc_before": acc, "acc_after": new_acc})
            acc = new_acc
        super().after_task(model, task)

    def extra_state(self):
        return {"growth": [dict(g) for g in self.growth]}

    def load_extra_state(self, state):
        self.growth = [dict(g) for g in state["growth"]]
