"""Lockstep (population) training: K compatible task-trainings as one stacked model.

See docs/architecture.md, "Population (lockstep) training". Weights are stacked [K, in, out] and
each layer is one ``torch.baddbmm``; every member has its own minibatches (its own task and data
order from its task seed), optimiser state (SGD/Adam over stacked tensors are elementwise, hence per member), gradient
clipping (its own norm), λ and random stream. The loss is the sum of the members' losses, so each
member's gradient is its own. Only the inner loop is stacked: ``before_task``/``after_task`` run
per member on an ordinary model with the real Strategy; each strategy's stacked piece sits next to
its code (``Strategy.lockstep``, a :class:`~pipeline.strategies.base.LockstepHooks`).

A member's computation never depends on K or on the other members (per-slice bmm, elementwise
updates, per-row reductions), so lockstep results are the same for every K, bit for bit; measured
on this CPU (MKL, AVX2) at 1 and 2 threads, widths whose slices are not 64-byte aligned included,
and tested in tests/test_lockstep.py. One reduction does depend on K at 2+ threads — a row longer
than torch's grain size (32768) is split between threads only when K is small — but it is the
penalty's value, which only the divergence check reads; no gradient comes from it. Lockstep differs
from one-at-a-time training by floating-point rounding (bmm vs mm, summation order), which is why
units.lockstep_key, not the population, decides which path a step takes: a step of a stackable
strategy trains in lockstep even alone (K=1), in a search with any ``--population`` and in ``lll run``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.prefix import EpochCallback, Learner, PrefixState, Step, learner_from, record_task, train_one
from pipeline.strategies.base import Strategy, trainable
from pipeline.train import TrainingDiverged, make_optimizer
from tasks.errors import LLLError
from tasks.pool import Task, TaskPool, seed_from

#: Most members trained at once on a CPU / a GPU. On this 2-core CPU K=8 was best for naive and SI and
#: within 20% of K=32 for EWC; naive was slower per member at K=32 and 128 (bench/population.py).
CPU_CAP, GPU_CAP = 8, 1024
#: A generous per-member budget: stacked weights, gradients, optimiser and strategy state, batch
#: activations, and a member's own copy of replay/joint memories (bytes).
MEMBER_BYTES = 64 << 20


def free_memory(device: torch.device) -> int:
    """Bytes free for this worker: the GPU's free memory, or MemAvailable on Linux (no psutil)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def parse_population(value: int | str) -> int | str:
    """``auto`` or a positive integer; anything else is a one-line error."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        k = int(value)
        if isinstance(value, float | str) and float(value) != k:
            raise ValueError
    except (TypeError, ValueError):
        raise LLLError(f"--population must be a positive integer or 'auto', got {value!r}; e.g. 8") from None
    if k < 1:
        raise LLLError(f"--population must be at least 1, got {k}; use 1 for one model at a time, or 'auto'")
    return k


def choose_population(value: int | str, device: torch.device, member_bytes: int = MEMBER_BYTES) -> tuple[int, str]:
    """(K, note): K members trained at once on ``device``. ``auto`` takes as many as half the free
    memory holds, capped; an explicit K that does not fit is reduced, and the note says so."""
    value = parse_population(value)
    free = free_memory(device)
    fits = max(1, free // 2 // member_bytes)
    cap = GPU_CAP if device.type == "cuda" else CPU_CAP
    if value == "auto":
        k = int(min(cap, fits))
        return k, f"auto: K={k} on {device.type} ({free >> 20} MiB free, cap {cap})"
    if value > fits:
        return int(fits), f"population {value} reduced to {fits} to fit {free >> 20} MiB free on {device.type}"
    return int(value), ""


# ---- the stacked model -------------------------------------------------------------------------


def _is_weight(name: str, t: torch.Tensor) -> bool:
    return name.endswith("weight") and t.dim() == 2


class Stack:
    """K members of one MLP as stacked tensors: a weight [out, in] becomes [K, in, out] (so a layer is
    one ``torch.baddbmm``), a bias [out] becomes [K, out]. Member k's numbers never mix with member
    j's: every op is per member (bmm slices, elementwise, per-row reductions), so a member's result
    does not depend on K or on who else is in the stack.
    """

    def __init__(self, learners: list[Learner], tasks: list[Task], gens: list[torch.Generator], device) -> None:
        self.K, self.device, self.tasks, self.gens = len(learners), device, tasks, gens
        self.models = [lr.model for lr in learners]
        self.members: list[Strategy] = [lr.strategy for lr in learners]
        first = self.models[0]
        self.shapes = {n: p.shape for n, p in trainable(first).items()}
        per_member = [{n: p.detach() for n, p in trainable(m).items()} for m in self.models]
        self.params = {n: t.requires_grad_() for n, t in self.stack_dicts(per_member).items()}
        self.body = [
            (f"body.{i}.weight", f"body.{i}.bias") for i, m in enumerate(first.body) if isinstance(m, nn.Linear)
        ]
        self.heads = [(f"heads.{j}.weight", f"heads.{j}.bias") for j in range(len(first.heads))]
        self.head_index: dict[str, int] = dict(first._head_index)
        self.head = torch.tensor([self.head_index[t.name] for t in tasks], device=device)
        self.lam = torch.tensor([float(s.lam or 0.0) for s in self.members], device=device)
        self._k = torch.arange(self.K, device=device)

    # -- per-member state <-> stacked
    def stack(self, name: str, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        """Stack one parameter's per-member tensors (None: zeros) in the stacked layout."""
        shape = self.shapes[name]
        full = [t.to(self.device) if t is not None else torch.zeros(shape, device=self.device) for t in tensors]
        out = torch.stack(full)
        return out.transpose(1, 2).contiguous() if len(shape) == 2 and name.endswith("weight") else out

    def unstack(self, name: str, t: torch.Tensor) -> list[torch.Tensor]:
        t = t.detach()
        if _is_weight(name, t[0]):
            t = t.transpose(1, 2)
        return [t[k].clone() for k in range(self.K)]

    def stack_dicts(self, dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """name → [K, ...] for every parameter; a member without an entry gets zeros."""
        return {n: self.stack(n, [d.get(n) for d in dicts]) for n in self.shapes}

    def unstack_into(self, stacked: dict[str, torch.Tensor], dicts: list[dict[str, torch.Tensor]]) -> None:
        for n, t in stacked.items():
            for d, v in zip(dicts, self.unstack(n, t), strict=True):
                d[n] = v

    # -- the stacked forward pass
    def features(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        p = self.params if params is None else params
        h = x.reshape(self.K, x.shape[1], -1)
        for w, b in self.body:
            h = torch.relu(torch.baddbmm(p[b].unsqueeze(1), h, p[w]))
        return h

    def _head_weights(self, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """All heads: W [K, H, width, C], b [K, H, C]."""
        return torch.stack([p[w] for w, _ in self.heads], 1), torch.stack([p[b] for _, b in self.heads], 1)

    def forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Each member's logits [K, B, C] through the head of the task it trains now."""
        p = self.params if params is None else params
        feats = self.features(x, p)
        if len(self.heads) == 1:
            w, b = self.heads[0]
            return torch.baddbmm(p[b].unsqueeze(1), feats, p[w])
        W, bias = self._head_weights(p)
        return torch.baddbmm(bias[self._k, self.head].unsqueeze(1), feats, W[self._k, self.head])

    def all_heads(self, feats: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of every head [K, H, S, C] from features [K, S, width]."""
        W, bias = self._head_weights(self.params if params is None else params)
        return torch.matmul(feats.unsqueeze(1), W) + bias.unsqueeze(2)

    def mixed_logits(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Logits [K, S, C] where sample (k, s) answers through head ``heads[k, s]`` (memory batches)."""
        feats = self.features(x)
        if len(self.heads) == 1:
            w, b = self.heads[0]
            return torch.baddbmm(self.params[b].unsqueeze(1), feats, self.params[w])
        logits = self.all_heads(feats).transpose(1, 2)  # [K, S, H, C]
        index = heads[:, :, None, None].expand(-1, -1, 1, logits.shape[-1])
        return logits.gather(2, index).squeeze(2)

    def ce(self, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-member cross-entropy [K]: the batch mean, or Σ weight·CE when weights are given."""
        each = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        each = each.view(y.shape)
        return each.mean(1) if weight is None else (each * weight).sum(1)

    def pad(self, batches: list[tuple[torch.Tensor, ...] | None]) -> tuple[torch.Tensor, ...] | None:
        """Per-member (x, y, head, weight) batches of different sizes (None: none) → x [K, S, ...],
        y, heads and weights [K, S], padded with weight 0; None if no member has a batch."""
        real = [b for b in batches if b is not None and len(b[1])]
        if not real:
            return None
        size = max(len(b[1]) for b in real)
        x = real[0][0].new_zeros((self.K, size, *real[0][0].shape[1:]))
        y = torch.zeros((self.K, size), dtype=torch.long, device=self.device)
        h = torch.zeros((self.K, size), dtype=torch.long, device=self.device)
        w = torch.zeros((self.K, size), device=self.device)
        for k, b in enumerate(batches):
            if b is not None and len(b[1]):
                n = len(b[1])
                x[k, :n], y[k, :n], h[k, :n], w[k, :n] = b
        return x, y, h, w

    def memory_loss(self, batches: list[tuple[torch.Tensor, ...] | None]) -> torch.Tensor | None:
        """Per-member Σ weight·CE over memory batches through each sample's own head [K] (None: no
        member has one); padding weighs 0."""
        padded = self.pad(batches)
        if padded is None:
            return None
        x, y, h, w = padded
        return self.ce(self.mixed_logits(x, h), y, w)

    def member_heads(self, names: list[str], t: torch.Tensor) -> torch.Tensor:
        """A memory's task indices (into its own ``names``) → head indices of the model."""
        lut = torch.tensor([self.head_index[n] for n in names], device=t.device, dtype=torch.long)
        return lut[t]

    def flat_grad(self) -> torch.Tensor:
        """Each member's whole gradient as one row [K, P]."""
        return torch.cat([p.grad.reshape(self.K, -1) for p in self.params.values()], 1)

    def set_flat_grad(self, g: torch.Tensor) -> None:
        i = 0
        for p in self.params.values():
            n = p[0].numel()
            p.grad = g[:, i : i + n].reshape(p.shape).clone()
            i += n

    def write_back(self) -> None:
        """The trained stacked weights into each member's own model."""
        for n, t in self.params.items():
            for m, v in zip(self.models, self.unstack(n, t), strict=True):
                dict(m.named_parameters())[n].data.copy_(v)


# ---- the stacked training loop -------------------------------------------------------------------


def clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` per member: each member's gradient scaled by its own total norm."""
    K = params[0].shape[0]
    norms = torch.stack([p.grad.reshape(K, -1).norm(2, dim=1) for p in params], 1).norm(2, dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.view(K, *([1] * (p.dim() - 1))))


def with_rng(gen: torch.Generator, seed: int, device: torch.device, fn: Callable[[], object]) -> object:
    """Run a per-member hook (before/after_task) on the member's own random stream, exactly where
    one-at-a-time training would be in it (its global RNG, seeded per task, is replaced by ``gen``)."""
    torch.default_generator.set_state(gen.get_state())
    if device.type == "cuda":
        torch.cuda.manual_seed(seed_from(seed, "lockstep-cuda"))
    try:
        return fn()
    finally:
        gen.set_state(torch.default_generator.get_state())


def diverged(task: Task, epoch: int, lam: float | None, lr: float) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged on task {task.name!r} (epoch {epoch + 1}): the loss became NaN/inf; "
        f"lower --lambda (now {lam}) or --lr (now {lr})"
    )


def train_lockstep(
    pool: TaskPool, steps: list[Step], on_epoch: EpochCallback | None = None
) -> list[PrefixState | LLLError]:
    """Train compatible steps (see pipeline/units.py, ``lockstep_key``) as one stacked model; per
    step its new state, or why it failed. The same protocol as ``train_task`` per member: seed from
    (seed, prefix), fresh optimiser, per-member data order, clipping, λ and divergence check.

    A member whose strategy swaps its model in ``before_task`` (an expansion strategy) cannot stack:
    it is trained one at a time instead, exactly as it would be alone, and the rest stack without it.
    """
    device = steps[0].device
    saved_rng = torch.get_rng_state()
    try:
        members = []
        for step in steps:
            lr = learner_from(step.start, step.strategy_cfg, device)
            task, sd = pool[step.prefix[-1]], seed_from(step.seed, list(step.prefix))
            gen = torch.Generator().manual_seed(sd)
            swapped = with_rng(gen, sd, device, lambda lr=lr, task=task: lr.strategy.before_task(lr.model, task))
            members.append((lr, task, gen, sd) if swapped is None or swapped is lr.model else None)
        stacked = [k for k, m in enumerate(members) if m is not None]
        out: list[PrefixState | LLLError | None] = [None] * len(steps)
        if stacked:
            results = _train_stack(pool, [steps[k] for k in stacked], [members[k] for k in stacked], on_epoch)
            for k, r in zip(stacked, results, strict=True):
                out[k] = r
        for k, m in enumerate(members):
            if m is None:
                try:
                    out[k] = train_one(pool, steps[k], on_epoch)
                except LLLError as exc:  # TrainingDiverged included
                    out[k] = exc
        return out  # type: ignore[return-value]
    finally:
        torch.set_rng_state(saved_rng)


def _train_stack(pool: TaskPool, steps: list[Step], members: list, on_epoch: EpochCallback | None) -> list:
    """The stacked inner loop over members (learner, task, generator, task seed) whose
    ``before_task`` has run."""
    device, cfg = steps[0].device, steps[0].train_cfg
    learners = [m[0] for m in members]
    tasks = [m[1] for m in members]
    gens = [m[2] for m in members]
    for lr in learners:
        lr.model.train()
    st = Stack(learners, tasks, gens, device)
    hooks = type(learners[0].strategy).lockstep(st)
    hooks.begin()
    params = list(st.params.values())
    optimizer = make_optimizer(cfg, params)
    unique = list(dict.fromkeys(t.name for t in tasks))
    X = torch.stack([pool[n].x_train for n in unique]).to(device)
    Y = torch.stack([pool[n].y_train for n in unique]).to(device)
    which = torch.tensor([unique.index(t.name) for t in tasks], device=device).unsqueeze(1)
    n, bs = len(tasks[0].y_train), cfg.batch_size
    failed: dict[int, LLLError] = {}
    for epoch in range(cfg.epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        total = torch.zeros(st.K, device=device)
        for i in range(0, n, bs):
            idx = perms[:, i : i + bs]
            x, y = X[which, idx], Y[which, idx]
            optimizer.zero_grad(set_to_none=True)
            losses = hooks.loss(x, y)
            losses.sum().backward()
            hooks.after_backward()
            if cfg.clip is not None:
                clip_per_member(params, cfg.clip)
            optimizer.step()
            hooks.after_step()
            total += losses.detach()
        for k in torch.nonzero(~torch.isfinite(total)).flatten().tolist():
            failed.setdefault(k, diverged(tasks[k], epoch, st.members[k].lam, cfg.lr))
        if on_epoch is not None:
            for step in steps:
                on_epoch(step, epoch + 1)
    if failed:  # a diverged member's result is dropped; zero it so the batched importance stays finite
        with torch.no_grad():
            for p in params:
                p[list(failed)] = 0.0
    st.write_back()
    hooks.end()
    out: list[PrefixState | LLLError] = []
    for k, (lr, task, gen, sd) in enumerate(members):
        if k in failed:
            out.append(failed[k])
            continue
        with_rng(gen, sd, device, lambda lr=lr, task=task: lr.strategy.after_task(lr.model, task))
        record_task(lr, pool, device)
        out.append(lr.snapshot())
    return out
