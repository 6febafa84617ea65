"""Shared machinery of the regulariser family: L'(θ) = L(θ) + λ Σ_i b_i (θ_i − θ^b_i)².

L2, EWC, online EWC, SI, MAS, RWalk and SCP differ only in how they compute the guard b_i after a
task, so they all subclass :class:`QuadraticPenalty` and implement :meth:`importance`; SI and RWalk,
whose guards come from the optimisation path, share :class:`PathIntegralPenalty`.

Several tasks' penalties Σ_k b_k (θ − a_k)² are kept consolidated as one B (θ − Ā)² (+ a constant
that has no gradient), with B = Σ_k b_k and Ā = Σ_k b_k a_k / B: the same gradients at the cost
of one penalty, however many tasks came before. ``decay`` < 1 gives the online-EWC recursion.

Convention: no ½ in front. A paper that writes (λ/2) Σ F (θ − θ*)² (EWC) has λ_paper = 2·λ_lll.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from pipeline.strategies.base import LockstepHooks, Strategy, trainable
from tasks.pool import Task


class QuadraticPenalty(Strategy):
    decay: float = 1.0  # γ: how much of the old importance survives each new task

    def __init__(self, lam: float | None = None) -> None:
        super().__init__(lam)
        self.B: dict[str, torch.Tensor] = {}  # consolidated importance
        self.A: dict[str, torch.Tensor] = {}  # consolidated anchor

    def importance(self, model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
        """b_i for the task just trained (model holds θ after the task)."""
        raise NotImplementedError

    def loss(self, model, x, y):
        base = super().loss(model, x, y)
        if not self.B:
            return base
        # Parameters born after the last task (a growing head's new block) have no guard yet.
        penalty = sum((self.B[n] * (p - self.A[n]).pow(2)).sum() for n, p in trainable(model).items() if n in self.B)
        return base + self.lam * penalty

    def after_task(self, model, task):
        b = self.importance(model, task)
        for n, p in trainable(model).items():
            a = p.detach().clone()
            if n not in self.B:
                self.B[n], self.A[n] = b[n].clone(), a
                continue
            old = self.decay * self.B[n]
            new_b = old + b[n]
            safe = torch.where(new_b > 0, new_b, torch.ones_like(new_b))
            self.A[n] = torch.where(new_b > 0, (old * self.A[n] + b[n] * a) / safe, a)
            self.B[n] = new_b
        super().after_task(model, task)

    def extra_state(self):
        return {"B": dict(self.B), "A": dict(self.A)}

    def load_extra_state(self, state):
        self.B, self.A = dict(state["B"]), dict(state["A"])


class QuadraticLockstep(LockstepHooks):
    """The stacked penalty: B and Ā stacked [K, ...] (zeros for a member with no past task, whose
    penalty is then exactly 0), λ per member."""

    def begin(self):
        st = self.st
        self.any = any(m.B for m in st.members)
        self.B = st.stack_dicts([m.B for m in st.members])
        self.A = st.stack_dicts([m.A for m in st.members])

    def loss(self, x, y):
        base = super().loss(x, y)
        if not self.any:
            return base
        st = self.st
        penalty = sum((self.B[n] * (p - self.A[n]).pow(2)).reshape(st.K, -1).sum(1) for n, p in st.params.items())
        return base + st.lam * penalty


class PathIntegralLockstep(QuadraticLockstep):
    """SI/RWalk's path integral ω, elementwise over stacked tensors."""

    def begin(self):
        super().begin()
        st = self.st
        self.omega = st.stack_dicts([m._omega for m in st.members])
        self.prev = st.stack_dicts([m._prev for m in st.members])
        self.grad: dict[str, torch.Tensor] = {}

    def observe_grad(self, name: str, g: torch.Tensor) -> None:
        """The stacked counterpart of :meth:`PathIntegralPenalty.observe_grad`."""

    def after_backward(self):
        st, lam = self.st, self.st.lam
        self.grad = {}
        for n, p in st.params.items():
            g = p.grad.detach().clone()
            if self.any:
                g -= 2 * lam.view(-1, *([1] * (g.dim() - 1))) * self.B[n] * (p.detach() - self.A[n])
            self.grad[n] = g
            self.observe_grad(n, g)

    def after_step(self):
        for n, p in self.st.params.items():
            now = p.detach()
            self.omega[n] -= self.grad[n] * (now - self.prev[n])
            self.prev[n].copy_(now)

    def end(self):
        st = self.st
        st.unstack_into(self.omega, [m._omega for m in st.members])
        st.unstack_into(self.prev, [m._prev for m in st.members])


class PathIntegralPenalty(QuadraticPenalty):
    """A quadratic penalty whose guard comes from the optimisation path (SI, RWalk).

    While a task trains it tracks ω_i = Σ_steps −g_i Δθ_i, where g is the gradient of the task's own
    loss (p.grad minus the penalty's 2λB(θ − Ā), like the SI reference code's ``unreg_grads``) and Δθ
    the step actually taken (momentum, clipping included); ``_start`` holds θ at the task's start.
    Subclasses turn ω into b_i in :meth:`importance` and may watch each task gradient in
    :meth:`observe_grad`."""

    def __init__(self, lam: float | None = None) -> None:
        super().__init__(lam)
        self._omega: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def before_task(self, model, task):
        params = trainable(model)
        self._omega = {n: torch.zeros_like(p) for n, p in params.items()}
        self._start = {n: p.detach().clone() for n, p in params.items()}
        self._prev = {n: p.detach().clone() for n, p in params.items()}
        return super().before_task(model, task)

    def observe_grad(self, name: str, g: torch.Tensor) -> None:
        """Called with each parameter's task gradient after every backward pass."""

    def after_backward(self, model):
        self._grad = {}
        for n, p in trainable(model).items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if n in self.B:
                g -= 2 * self.lam * self.B[n] * (p.detach() - self.A[n])
            self._grad[n] = g
            self.observe_grad(n, g)

    def after_step(self, model):
        for n, p in trainable(model).items():
            now = p.detach()
            if n in self._grad:
                self._omega[n] -= self._grad[n] * (now - self._prev[n])
            self._prev[n].copy_(now)


def per_sample_grad_stat(
    model: nn.Module,
    task: str,
    x: torch.Tensor,
    y: torch.Tensor,
    sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor],
    chunk: int = 256,
) -> dict[str, torch.Tensor]:
    """Mean over samples s of ``reduce(∂ sample_loss(f(x_s), y_s) / ∂θ)``, via torch.func.vmap.

    ``sample_loss`` maps one sample's logits and label to a scalar; ``reduce`` is applied to each
    per-sample gradient before averaging (square for the Fisher, abs for MAS).
    """
    params = {n: p.detach() for n, p in trainable(model).items()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one(p, xs, ys):
        out = functional_call(model, (p, buffers), (xs.unsqueeze(0), task))[0]
        return sample_loss(out, ys)

    grad_one = vmap(grad(one), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(0, len(x), chunk):
        g = grad_one(params, x[i : i + chunk], y[i : i + chunk])
        for n in total:
            total[n] += reduce(g[n]).sum(0)
    return {n: t / max(1, len(x)) for n, t in total.items()}


def fisher_diagonal(model: nn.Module, task: Task, n_samples: int) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information E_x E_{y~p(y|x)} [(∂ log p(y|x) / ∂θ)²], labels drawn from the
    model's own predictive distribution (Kirkpatrick et al., 2017) on up to ``n_samples`` inputs."""
    device = next(model.parameters()).device
    x = task.x_train[:n_samples].to(device)
    with torch.no_grad():
        y = torch.multinomial(F.softmax(model(x, task.name), dim=1), 1).squeeze(1)
    return per_sample_grad_stat(
        model, task.name, x, y, lambda out, t: F.cross_entropy(out.unsqueeze(0), t.unsqueeze(0)), torch.square
    )


def stacked_grad_stat(
    st,
    x: torch.Tensor,
    out_grad: Callable[[torch.Tensor], torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> list[dict[str, torch.Tensor]]:
    """:func:`per_sample_grad_stat` for all lockstep members at once (x [K, N, ...], each member's
    model through the head of the task it just trained), without materialising per-sample
    gradients: in a linear layer a sample's gradient is the outer product δ_s a_sᵀ, and square and
    abs factor over it, so mean_s reduce(δ a)_oi = mean_s reduce(δ)_o reduce(a)_i — one bmm per
    layer. ``out_grad(logits)`` is ∂ sample_loss / ∂ logits per sample. Per member, in the
    parameters' own layout."""
    p = {n: t.detach() for n, t in st.params.items()}
    h, inputs, outs = x.reshape(st.K, x.shape[1], -1), [], []
    for w, b in st.body:
        inputs.append(h)
        z = torch.baddbmm(p[b].unsqueeze(1), h, p[w]).requires_grad_()
        outs.append(z)
        h = torch.relu(z)
    head_w, head_b = st._head_weights(p)
    wk, bk = head_w[st._k, st.head], head_b[st._k, st.head]
    with torch.no_grad():
        logits = torch.baddbmm(bk.unsqueeze(1), h, wk)
    # back through the trained head by hand (the other heads get no gradient), autograd for the body
    delta_out = out_grad(logits)
    grads_h = torch.bmm(delta_out, wk.transpose(1, 2))
    deltas = list(torch.autograd.grad(h, outs, grads_h)) if outs else []
    n = x.shape[1]
    stats: dict[str, torch.Tensor] = {}
    for (w, b), a, d in zip(st.body, inputs, deltas, strict=True):
        stats[w] = torch.bmm(reduce(a).transpose(1, 2), reduce(d)) / n
        stats[b] = reduce(d).sum(1) / n
    h = h.detach()
    hw = torch.bmm(reduce(h).transpose(1, 2), reduce(delta_out)) / n
    hb = reduce(delta_out).sum(1) / n
    for j, (w, b) in enumerate(st.heads):
        mine = (st.head == j).view(-1, 1, 1).to(hw.dtype)
        stats[w], stats[b] = hw * mine, hb * mine[:, :, 0]
    per_member: list[dict[str, torch.Tensor]] = [{} for _ in range(st.K)]
    st.unstack_into(stats, per_member)
    return per_member


class ImportanceLockstep(QuadraticLockstep):
    """A QuadraticLockstep whose members' importance is computed for all of them at once
    (:meth:`stacked_importance`) and handed to each member's ordinary ``after_task``."""

    def stacked_importance(self) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def end(self):
        super().end()
        for m, b in zip(self.st.members, self.stacked_importance(), strict=True):
            m.importance = lambda model, task, b=b: b  # this member object ends with the task


class FisherLockstep(ImportanceLockstep):
    """:func:`fisher_diagonal` for all members: labels drawn from each member's own predictive
    distribution with its own random stream (the draws one-at-a-time training would make)."""

    def stacked_importance(self):
        st = self.st
        n = st.members[0].fisher_samples
        x = torch.stack([t.x_train[:n] for t in st.tasks]).to(st.device)

        def out_grad(logits):
            probs = F.softmax(logits, dim=-1)
            y = torch.stack(
                [torch.multinomial(probs[k].cpu(), 1, generator=g).squeeze(1) for k, g in enumerate(st.gens)]
            ).to(logits.device)
            return probs - F.one_hot(y, logits.shape[-1]).to(probs.dtype)

        return stacked_grad_stat(st, x, out_grad, torch.square)
