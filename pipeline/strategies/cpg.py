"""CPG — Compacting, Picking and Growing (Hung et al., NeurIPS 2019): PackNet's pruning + PNN's growth.

Like PackNet, every shared weight (hidden layers, and the head when it is shared) has an owner:
0 = free, k = the k-th task trained. Task k

* **picks** from the weights of tasks 1..k−1, all frozen: a real-valued mask over them (one score
  per weight, initialised to 0.01 and thresholded at 0.005, as in the paper's code) is learned
  with Adam together with the free weights. The forward pass uses W·(free + old·[score > 0.005]);
  the threshold's gradient is passed straight through to the scores.
* **grows** if its training accuracy stays below ``accuracy_goal`` after training: every hidden
  layer gets ``grow_by`` new units (He-initialised incoming weights, zero outgoing weights: no
  output changes; the new weights are free, so they are task k's) and training continues for
  ``grow_epochs``; at most ``max_grow`` times per task.
* **compacts** its own weights: by steps of ``prune_step`` (of the weights it trained, per layer,
  smallest magnitude first, up to ``max_prune``) the weights are released (set to 0, free again
  for later tasks) and the rest retrained for ``retrain_epochs``, as long as training accuracy
  stays within ``prune_tolerance`` of the unpruned model's; the first step that falls below is
  undone. The kept weights become task k's, frozen from then on.

At test time task k is answered with its own weights, the weights of earlier tasks its mask
picked, and its own copy of the shared layers' biases (stored per task: biases cannot be split
between tasks, and storing them is cheap). Later tasks never change any of these, so BWT is
exactly 0. Task-incremental (the task's identity picks the masks), so it does not apply to a
class-incremental growing head. Stored state: the owners (2 bytes per shared weight), one picking
mask per task (1 bit per shared weight) and the per-task biases. After every task the runner
reports ``params_used`` (parameters some task answers with), ``params_grown`` and ``free_share``.

Choosing the two thresholds: the paper's goal is the accuracy a model trained on the task alone
reaches, and its tolerance is 0. lll decides on training accuracy (never on test data): a fresh
50-50-50 MLP reaches 96–97% training accuracy on a 1,000-image permuted-MNIST task in 10 epochs, so
the default goal is 0.95 (also the paper code's own training-accuracy bar) and the default
tolerance 0 (bench/cpg_thresholds.py: more tolerance frees more weights at no gain in accuracy).

No λ. Options: ``prune_tolerance`` (default 0), ``accuracy_goal`` (0.95), ``grow_by`` (units
per hidden layer, 16), ``max_grow`` (per task, 2), ``prune_step`` (0.1), ``max_prune`` (0.9),
``retrain_epochs`` (per pruning step, 1), ``grow_epochs`` (3), ``mask_lr`` (Adam, 5e-4), ``lr`` and
``batch_size`` of the extra training (0.01, 32; SGD with TrainConfig's other defaults).
"""

import torch
import torch.nn.functional as F
from torch.func import functional_call

from pipeline.expansion import (
    fit,
    free_share,
    pack_bits,
    pad_to,
    require_mlp,
    shared_biases,
    shared_weights,
    smallest,
    train_accuracy,
    unpack_bits,
    widen,
)
from pipeline.strategies.base import Strategy

MASK_INIT, THRESHOLD = 1e-2, 5e-3  # the paper code's piggymask init and binarizer threshold


class PickingMask:
    """The real-valued mask a new task learns over the earlier tasks' weights, with its own Adam
    (the training loop's optimiser only sees the model). Binary in the forward pass (score above
    the threshold), straight-through in the backward pass."""

    def __init__(self, weights: dict[str, torch.Tensor], old: dict[str, torch.Tensor], lr: float) -> None:
        self.lr = lr
        self.scores = {n: torch.full_like(w, MASK_INIT, requires_grad=True) for n, w in weights.items() if old[n].any()}
        self.opt = torch.optim.Adam(self.scores.values(), lr=lr) if self.scores else None

    def factor(self, n: str) -> torch.Tensor | float:
        s = self.scores.get(n)
        return 0.0 if s is None else (s > THRESHOLD).to(s.dtype) + s - s.detach()

    def step(self) -> None:
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

    def pad(self, shapes: dict[str, torch.Size]) -> None:
        """After widening (new entries are never earlier tasks'); Adam restarts on the new shapes."""
        if self.scores:
            with torch.no_grad():
                scores = {n: pad_to(s.detach(), shapes[n], MASK_INIT) for n, s in self.scores.items()}
            self.scores = {n: s.requires_grad_(True) for n, s in scores.items()}
            self.opt = torch.optim.Adam(self.scores.values(), lr=self.lr)

    def fixed(self, old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The binary picks (0/1 floats), restricted to the earlier tasks' entries."""
        return {n: (s.detach() > THRESHOLD).float() * old[n] for n, s in self.scores.items()}


class CPG(Strategy):
    name = "cpg"

    def __init__(
        self,
        lam: float | None = None,
        prune_tolerance: float = 0.0,
        accuracy_goal: float = 0.95,
        grow_by: int = 16,
        max_grow: int = 2,
        prune_step: float = 0.1,
        max_prune: float = 0.9,
        retrain_epochs: int = 1,
        grow_epochs: int = 3,
        mask_lr: float = 5e-4,
        lr: float = 0.01,
        batch_size: int = 32,
    ) -> None:
        super().__init__(lam)
        if prune_tolerance < 0:
            raise ValueError(f"prune_tolerance must be ≥ 0 (an accuracy drop), got {prune_tolerance}")
        if not 0 <= accuracy_goal <= 1:
            raise ValueError(f"accuracy_goal must be a training accuracy in [0, 1], got {accuracy_goal}")
        if grow_by < 1 or max_grow < 0:
            raise ValueError("grow_by must be ≥ 1 and max_grow ≥ 0")
        if not (prune_step > 0 and 0 <= max_prune < 1):
            raise ValueError("need prune_step > 0 and 0 ≤ max_prune < 1 (0: no compacting)")
        if retrain_epochs < 0 or grow_epochs < 0 or mask_lr < 0:
            raise ValueError("retrain_epochs, grow_epochs and mask_lr must be ≥ 0")
        self.prune_tolerance, self.accuracy_goal = float(prune_tolerance), float(accuracy_goal)
        self.grow_by, self.max_grow = int(grow_by), int(max_grow)
        self.prune_step, self.max_prune = float(prune_step), float(max_prune)
        self.retrain_epochs, self.grow_epochs = int(retrain_epochs), int(grow_epochs)
        self.mask_lr, self.lr, self.batch_size = float(mask_lr), float(lr), int(batch_size)
        self.owner: dict[str, torch.Tensor] = {}  # int16 owner per shared weight
        self.picks: dict[str, dict[str, torch.Tensor]] = {}  # task → packed bits over earlier tasks' weights
        self.biases: dict[str, dict[str, torch.Tensor]] = {}  # task → its shared-layer biases
        self.growth: list[dict] = []  # one entry per growing step
        self.compacting: list[dict] = []  # per task: share pruned, training accuracy before / after
        self.params_grown = 0
        # while a task trains: its own entries, earlier tasks' entries, the mask being learned / fixed
        self._own: dict[str, torch.Tensor] = {}
        self._old: dict[str, torch.Tensor] = {}
        self._mask: PickingMask | None = None
        self._pick: dict[str, torch.Tensor] = {}

    # ---- the current task's view of the network ---------------------------------------------
    def _params(self, model) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        for n, own in self._own.items():
            pick = self._mask.factor(n) if self._mask is not None else self._pick.get(n, 0.0)
            params[n] = params[n] * (own + self._old[n] * pick)
        return params

    def loss(self, model, x, y):
        return F.cross_entropy(functional_call(model, self._params(model), (x, self.task)), y)

    @torch.no_grad()
    def _train_acc(self, model, task) -> float:
        device = next(model.parameters()).device
        params = self._params(model)
        return train_accuracy(lambda x: functional_call(model, params, (x, task.name)), task, device)

    # ---- hooks ---------------------------------------------------------------------------------
    def before_task(self, model, task):
        require_mlp(model, self.name, growing_ok=False)
        for n, p in shared_weights(model).items():
            if n not in self.owner:
                self.owner[n] = torch.zeros(p.shape, dtype=torch.int16, device=p.device)
        self._own = {n: (o == 0).float() for n, o in self.owner.items()}
        self._old = {n: (o > 0).float() for n, o in self.owner.items()}
        self._mask, self._pick = PickingMask(shared_weights(model), self._old, self.mask_lr), {}
        return super().before_task(model, task)

    def after_backward(self, model):
        params = dict(model.named_parameters())
        for n, own in self._own.items():
            if params[n].grad is not None:
                params[n].grad.mul_(own)  # earlier tasks' weights and released ones do not move

    def after_step(self, model):
        if self._mask is not None:
            self._mask.step()

    def after_task(self, model, task):
        acc = self._grow(model, task)
        self._pick, self._mask = self._mask.fixed(self._old), None  # picking ends; compacting keeps it fixed
        self._compact(model, task, acc)
        k = len(self.seen) + 1
        for n, own in self._own.items():
            self.owner[n][own.bool()] = k
        self.picks[task.name] = {n: pack_bits(p.bool()) for n, p in self._pick.items()}
        biases = shared_biases(model)
        self.biases[task.name] = {n: p.detach().clone() for n, p in model.named_parameters() if n in biases}
        self._own, self._old, self._pick = {}, {}, {}
        super().after_task(model, task)

    # ---- growing --------------------------------------------------------------------------------
    def _grow(self, model, task) -> float:
        """Widen and train on while the task misses the goal; returns the final training accuracy."""
        acc = self._train_acc(model, task)
        for _ in range(self.max_grow):
            if acc >= self.accuracy_goal:
                break
            before, n_before = list(model.spec["hidden"]), sum(p.numel() for p in model.parameters())
            for i, h in enumerate(before):
                widen(model, i, h + self.grow_by, fresh=True)
            self._pad_masks(model)
            self.params_grown += sum(p.numel() for p in model.parameters()) - n_before
            fit(model, self, task, self.grow_epochs, self.lr, self.batch_size)
            new_acc = self._train_acc(model, task)
            log = {"task": task.name, "hidden_before": before, "hidden_after": list(model.spec["hidden"])}
            self.growth.append({**log, "acc_before": acc, "acc_after": new_acc})
            acc = new_acc
        return acc

    def _pad_masks(self, model) -> None:
        """After widening: the new entries are free (the current task's); earlier tasks never see them."""
        params = dict(model.named_parameters())
        for n, o in self.owner.items():
            shape = params[n].shape
            if o.shape == shape:
                continue
            self.owner[n] = pad_to(o, shape, 0)
            self._own[n], self._old[n] = pad_to(self._own[n], shape, 1.0), pad_to(self._old[n], shape, 0.0)
            for picks in self.picks.values():
                if n in picks:
                    picks[n] = pack_bits(pad_to(unpack_bits(picks[n], o.shape), shape, False))
        for biases in self.biases.values():
            for n, b in biases.items():
                biases[n] = pad_to(b, params[n].shape, 0.0)
        self._mask.pad({n: p.shape for n, p in params.items()})

    # ---- compacting -----------------------------------------------------------------------------
    def _compact(self, model, task, acc: float) -> None:
        total = {n: int(own.sum()) for n, own in self._own.items()}
        floor, share, kept_acc = acc - self.prune_tolerance, 0.0, acc
        while share + self.prune_step <= self.max_prune + 1e-9:
            saved = {n: p.detach().clone() for n, p in model.named_parameters()}
            saved_own = dict(self._own)
            release_to(model, self._own, share + self.prune_step, total)
            if self.retrain_epochs > 0:
                fit(model, self, task, self.retrain_epochs, self.lr, self.batch_size)
            new_acc = self._train_acc(model, task)
            if new_acc < floor:  # one step too far: undo it
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        p.copy_(saved[n])
                self._own = saved_own
                break
            share, kept_acc = share + self.prune_step, new_acc
        self.compacting.append({"task": task.name, "pruned": share, "acc_before": acc, "acc_after": kept_acc})

    # ---- test time ------------------------------------------------------------------------------
    def predictor(self, model, task):
        if task.name not in self.seen:
            return super().predictor(model, task)
        k = self.seen.index(task.name) + 1
        params = dict(model.named_parameters())
        for n, o in self.owner.items():
            use = o == k
            if n in self.picks[task.name]:
                use = use | unpack_bits(self.picks[task.name][n], o.shape)
            params[n] = params[n] * use
        params.update(self.biases[task.name])
        return lambda x: functional_call(model, params, (x, task.name))

    # ---- sizes and state ------------------------------------------------------------------------
    def capacity(self) -> float:
        """Fraction of the shared weights still free for later tasks."""
        return free_share(self.owner)

    def size_report(self, model):
        free = sum(int((o == 0).sum()) for o in self.owner.values())
        used = sum(p.numel() for p in model.parameters()) - free
        return {"params_used": used, "params_grown": self.params_grown, "free_share": self.capacity()}

    def extra_state(self):
        return {
            "owner": dict(self.owner),
            "picks": {t: dict(p) for t, p in self.picks.items()},
            "biases": {t: dict(b) for t, b in self.biases.items()},
            "growth": [dict(g) for g in self.growth],
            "compacting": [dict(c) for c in self.compacting],
            "params_grown": self.params_grown,
        }

    def load_extra_state(self, state):
        self.owner = dict(state["owner"])
        self.picks = {t: dict(p) for t, p in state["picks"].items()}
        self.biases = {t: dict(b) for t, b in state["biases"].items()}
        self.growth = [dict(g) for g in state["growth"]]
        self.compacting = [dict(c) for c in state["compacting"]]
        self.params_grown = int(state["params_grown"])


@torch.no_grad()
def release_to(model, own: dict[str, torch.Tensor], share: float, total: dict[str, int]) -> None:
    """Release a task's smallest weights (set to 0, free again; ``own`` updated in place) until
    ``share`` of the ``total`` it trained in each layer is free."""
    for n, p in shared_weights(model).items():
        mine = own[n].bool()
        release = smallest(p, mine, max(0, round(share * total[n]) - (total[n] - int(mine.sum()))))
        p.masked_fill_(release, 0.0)
        own[n] = (mine & ~release).float()
