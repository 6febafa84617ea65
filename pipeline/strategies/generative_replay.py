"""Deep generative replay (Shin et al., 2017): replay generated inputs instead of stored ones.

A small task-conditioned VAE (vae.py) learns to generate the inputs of every task seen so far.
While a task trains, each batch is joined by as many generated inputs of past tasks (task drawn
uniformly), answered by the model as it was before this task — from the head of the task the
input was generated for, among the old classes only when the head has grown — and trained on that
head, all of it (so a grown head also learns that old inputs are none of the new classes):

    loss = CE(new batch) + λ · replay(generated batch)        (λ weighs replay as in `replay`)

``soft: true`` (default) makes replay a temperature-2 distillation of the old model's outputs,
T²·KL(softmax(old/T) ‖ softmax(new/T)) ("DGR + distillation", van de Ven & Tolias 2018), which
copes far better with blurry generated inputs; ``soft: false`` is the paper's hard labels,
CE(new(x̃), argmax old(x̃)). After the task the generator is trained on the new inputs plus
inputs replayed by its previous copy, weighted 1 : m for m past tasks (the paper's ratio
r = 1/t). No real input of a past task is stored: the stored state is the generator's weights
(counted in stored bytes).

Options: ``soft`` (default true), ``gen_hidden`` (VAE hidden units, default 256), ``latent``
(default 16), ``gen_epochs`` (default 20), ``gen_lr`` (Adam, default 1e-3), ``gen_batch`` (64).
"""

import copy

import torch
import torch.nn.functional as F

from pipeline.strategies.base import Strategy
from pipeline.strategies.vae import TaskVAE
from tasks.errors import LLLError

TEMPERATURE = 2.0  # of the soft (distillation) replay


class GenerativeReplay(Strategy):
    name = "generative-replay"
    default_lam = 1.0
    lam_range = (0.1, 10.0)

    def __init__(
        self,
        lam: float | None = None,
        gen_hidden: int = 256,
        latent: int = 16,
        gen_epochs: int = 20,
        gen_lr: float = 1e-3,
        gen_batch: int = 64,
        soft: bool = True,
    ) -> None:
        super().__init__(lam)
        if min(gen_hidden, latent, gen_batch) <= 0 or gen_epochs < 0:
            raise ValueError("gen_hidden, latent and gen_batch must be positive, gen_epochs ≥ 0")
        self.gen_hidden, self.latent, self.gen_epochs = int(gen_hidden), int(latent), int(gen_epochs)
        self.gen_lr, self.gen_batch, self.soft = float(gen_lr), int(gen_batch), bool(soft)
        self.generator: TaskVAE | None = None
        self.input_shape: list[int] = []
        self.widths: dict[str, int] = {}  # outputs each past task's head had when it finished
        self.teacher: torch.nn.Module | None = None  # the model before this task (rebuilt per task)

    def before_task(self, model, task):
        x = task.x_train
        if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 1:
            raise LLLError("generative-replay's VAE generates images with values in [0, 1]; use an image pool")
        self.teacher = None
        if self.seen:
            self.teacher = copy.deepcopy(model).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        return super().before_task(model, task)

    def _replay(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` generated inputs of past tasks and their task indices."""
        t = torch.randint(len(self.seen), (n,), device=device)
        return self.generator.sample(t).view(n, *self.input_shape), t

    def loss(self, model, x, y):
        base = super().loss(model, x, y)
        if self.generator is None or self.teacher is None:
            return base
        rx, rt = self._replay(len(y), x.device)
        replay = x.new_zeros(())
        for k in torch.unique(rt).tolist():
            m, name = rt == k, self.seen[k]
            out = model(rx[m], name)
            with torch.no_grad():
                old = self.teacher(rx[m], name)[:, : self.widths[name]]
            if self.soft:  # a grown head's new classes get probability 0 in the target
                t = TEMPERATURE
                target = F.pad(F.softmax(old / t, 1), (0, out.shape[1] - old.shape[1]))
                replay = replay + F.kl_div(F.log_softmax(out / t, 1), target, reduction="sum") * t * t
            else:
                replay = replay + F.cross_entropy(out, old.argmax(1), reduction="sum")
        return base + self.lam * replay / len(y)

    def _train_generator(self, task, device: torch.device) -> None:
        x = task.x_train.to(device)
        old = None
        if self.generator is None:
            self.input_shape = list(x.shape[1:])
            self.generator = TaskVAE(x[0].numel(), self.gen_hidden, self.latent, 1).to(device)
        else:
            old = copy.deepcopy(self.generator).eval()
            self.generator.add_task()
        new_index = self.generator.config["n_tasks"] - 1
        opt = torch.optim.Adam(self.generator.parameters(), lr=self.gen_lr)
        m = new_index  # past tasks
        for _ in range(self.gen_epochs):
            perm = torch.randperm(len(x), device=device)
            for i in range(0, len(x), self.gen_batch):
                batch = x[perm[i : i + self.gen_batch]]
                loss = self.generator.loss(batch, torch.full((len(batch),), new_index, device=device))
                if old is not None:
                    t = torch.randint(m, (len(batch),), device=device)
                    loss = (loss + m * self.generator.loss(old.sample(t), t)) / (1 + m)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def after_task(self, model, task):
        with torch.no_grad():
            device = next(model.parameters()).device
            self.widths[task.name] = int(model(task.x_train[:1].to(device), task.name).shape[1])
        self._train_generator(task, device)
        self.teacher = None
        super().after_task(model, task)

    def extra_state(self):
        if self.generator is None:
            return {}
        return {
            "generator": self.generator.state_dict(),
            "config": dict(self.generator.config),
            "input_shape": list(self.input_shape),
            "widths": dict(self.widths),
        }

    def load_extra_state(self, state):
        if not state:
            self.generator = None
            return
        cfg = state["config"]
        self.generator = TaskVAE(cfg["input_dim"], cfg["hidden"], cfg["latent"], cfg["n_tasks"], cfg["embed"])
        self.generator.load_state_dict(state["generator"])
        self.generator.to(state["generator"]["tasks"].device)
        self.input_shape = list(state["input_shape"])
        self.widths = dict(state["widths"])
