"""Learning without Forgetting (Li & Hoiem, 2016): distil the old model on the new task's inputs.

No old data is stored. Before a new task the current model is frozen as the teacher; while the
new task trains, the outputs the teacher gave for past tasks' heads (the shared head, in the
domain-incremental setting) on the *new* inputs are kept close with a temperature-T distillation:

    loss = CE + λ Σ_{old heads h} T² · KL(softmax(teacher_h(x)/T) ‖ softmax(student_h(x)/T))

Class-incremental (one growing head): the old outputs are the units the head had after the last
task, so the distillation covers the old classes only; the new classes' units are learned by CE.

Options: ``temperature`` (T, default 2).
"""

import copy

import torch
import torch.nn.functional as F

from pipeline.strategies.base import LockstepHooks, Strategy


class LwFLockstep(LockstepHooks):
    """The teacher is the stacked weights at the task's start; a [K, H] mask says which heads each
    member distils (its old heads, as :meth:`LwF._old_heads`)."""

    def begin(self):
        st = self.st
        self.teacher = {n: p.detach().clone() for n, p in st.params.items()}
        self.mask = torch.zeros((st.K, len(st.heads)), device=st.device)
        for k, (m, model) in enumerate(zip(st.members, st.models, strict=True)):
            if m.teacher is not None:
                for h in m._old_heads(model):
                    self.mask[k, st.head_index[h]] = 1.0
            m.teacher = None  # the stacked copy above is the one used
        self.any = bool(self.mask.any())
        self.t = st.members[0].temperature

    def loss(self, x, y):
        base = super().loss(x, y)
        if not self.any:
            return base
        st, t = self.st, self.t
        student = st.all_heads(st.features(x))
        with torch.no_grad():
            teacher = st.all_heads(st.features(x, self.teacher), self.teacher)
        kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1), reduction="none")
        kd = (kl.sum((-1, -2)) / x.shape[1] * self.mask).sum(1) * t * t
        return base + st.lam * kd


class LwF(Strategy):
    name = "lwf"
    lockstep = LwFLockstep
    default_lam = 1.0  # tuned on mixed-mnist (docs/results.md, "Default λ")
    lam_range = (0.1, 10.0)

    def __init__(self, lam: float | None = None, temperature: float = 2.0) -> None:
        super().__init__(lam)
        self.temperature = float(temperature)
        self.teacher: torch.nn.Module | None = None  # rebuilt from the model before each task
        self.widths: dict[str, int] = {}  # outputs each finished task's head had (a growing head grows)

    def before_task(self, model, task):
        if self.seen:
            self.teacher = copy.deepcopy(model).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        return super().before_task(model, task)

    def _old_heads(self, model) -> list[str]:
        if getattr(model, "shared_head", False):
            return [self.seen[-1]] if self.seen else []
        return list(self.seen)

    def loss(self, model, x, y):
        base = super().loss(model, x, y)
        if self.teacher is None:
            return base
        t = self.temperature
        feats = model.features(x)
        with torch.no_grad():
            teacher_feats = self.teacher.features(x)
        kd = x.new_zeros(())
        for h in self._old_heads(model):
            w = self.widths.get(h)
            student = F.log_softmax(model.head(h)(feats)[:, :w] / t, dim=1)
            teacher = F.softmax(self.teacher.head(h)(teacher_feats)[:, :w] / t, dim=1)
            kd = kd + F.kl_div(student, teacher, reduction="batchmean") * t * t
        return base + self.lam * kd

    def after_task(self, model, task):
        with torch.no_grad():
            self.widths[task.name] = int(
                model(task.x_train[:1].to(next(model.parameters()).device), task.name).shape[1]
            )
        super().after_task(model, task)

    def extra_state(self):
        return {"widths": dict(self.widths)}

    def load_extra_state(self, state):
        self.widths = dict(state.get("widths", {}))
