"""Scientific tests of the continual-learning strategies on the tiny pool.

Each strategy is trained once (module-scoped fixture) at its *default* λ, and the results are shared:
naive must forget, every other strategy must forget clearly less, joint training must be the upper
bound on ACC. The test runs seed 0; the margins below are about half the smallest margin measured
over seeds 0–3 with these exact settings, so a pass is not a coin flip.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.models import MLP, he_init
from pipeline.runner import RunResult, run_ordering
from pipeline.strategies import STRATEGIES, make_strategy
from pipeline.strategies.si import SI
from tasks.errors import LLLError
from tasks.pool import TaskPool, build_pool
from tasks.registry import load_pool

CORE = ["naive", "joint", "l2", "ewc", "online-ewc", "si", "mas", "gem", "agem", "lwf", "replay"]
# Strategies that keep state beyond the model between tasks (importance, anchors, memories).
STATEFUL = ["joint", "l2", "ewc", "online-ewc", "si", "mas", "gem", "agem", "replay"]
# How much higher than naive's each strategy's BWT must be (accuracy fraction, seed 0). Smallest margins
# measured over seeds 0–3: l2 0.10, agem 0.04 (A-GEM's one-constraint projection is weakest with this
# large step), mas 0.14, all others ≥ 0.17.
BWT_MARGIN = {name: 0.08 for name in CORE} | {"l2": 0.05, "agem": 0.02, "mas": 0.07}
# Memories scaled to the tiny pool (900 training images instead of the default pool's 5,000), keeping
# the default pool's fractions: replay keeps 10% of the stream, GEM / A-GEM ~25% of each task.
# With the defaults (500 and 256 per task) replay and GEM would hold most of the data and tie joint.
OPTIONS = {"replay": {"memory_size": 90}, "gem": {"memory_size": 77}, "agem": {"memory_size": 77}}


@pytest.fixture(scope="module")
def pool(tiny_pool: TaskPool) -> TaskPool:
    """The tiny pool with all 1,000 test images per task, so BWT is not dominated by test-set noise."""
    return build_pool(tiny_pool.spec.model_copy(update={"test_per_task": 1000}))


@pytest.fixture(scope="module")
def strong_train(fast_train: TrainConfig) -> TrainConfig:
    """fast_train with a larger step: the tiny pool's tasks are learned to ~85% and naive clearly forgets."""
    return fast_train.model_copy(update={"epochs": 10, "lr": 0.05})


@pytest.fixture(scope="module")
def results(pool: TaskPool, strong_train: TrainConfig) -> dict[str, RunResult]:
    """Every core strategy trained once (pool order, seed 0, default λ)."""
    return {
        name: run_ordering(
            pool, pool.names, StrategyConfig(name=name, options=OPTIONS.get(name, {})), strong_train, seed=0
        )
        for name in CORE
    }


@pytest.mark.slow
def test_naive_forgets(results: dict[str, RunResult]) -> None:
    r = results["naive"].rmatrix
    learned = [r.values[i + 1, i] for i in range(r.T)]
    assert min(learned) > 0.7, f"each task should be learned first: {learned}"
    assert r.bwt() < -0.2, r.values


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CORE if n != "naive"])
def test_strategy_forgets_less_than_naive(results: dict[str, RunResult], name: str) -> None:
    naive, r = results["naive"].rmatrix, results[name].rmatrix
    assert r.bwt() > naive.bwt() + BWT_MARGIN[name], f"{name}: BWT {r.bwt():.3f} vs naive {naive.bwt():.3f}"


@pytest.mark.slow
def test_joint_has_the_best_acc(results: dict[str, RunResult]) -> None:
    accs = {name: res.rmatrix.acc() for name, res in results.items()}
    best_other = max(v for k, v in accs.items() if k != "joint")
    assert accs["joint"] > best_other, accs


def same_state(a: Any, b: Any) -> bool:
    """Deep equality where tensors must match exactly (values, dtype and shape)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same_state, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.slow
@pytest.mark.parametrize("name", CORE)
def test_state_dict_survives_weights_only_load(results: dict[str, RunResult], name: str) -> None:
    strategy = results[name].strategy
    state = strategy.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert same_state(loaded, state)

    fresh = make_strategy(StrategyConfig(name=name, options=OPTIONS.get(name, {})))
    fresh.load_state_dict(loaded)
    assert same_state(fresh.state_dict(), state)
    assert fresh.seen == list(results[name].rmatrix.tasks)
    if name in STATEFUL:
        assert fresh.stored_bytes() == strategy.stored_bytes() > 0


@pytest.mark.slow
def test_noisy_then_clean_forgets_noisy() -> None:
    """The lecture's example at the default training settings: after learning clean digits, accuracy
    on the noisy ones drops. The drop varies with the seed (3–16 points measured over seeds 0–3:
    clean training partly transfers to noisy digits), so three seeds are checked together."""
    pool = load_pool("noisy-clean", test_per_task=1000)
    drops = []
    for seed in range(3):
        r = run_ordering(pool, ["noisy", "clean"], StrategyConfig(name="naive"), TrainConfig(), seed=seed).rmatrix
        assert r.values[1, 0] > 0.5, r.values  # noisy was learned
        drops.append(r.values[1, 0] - r.values[2, 0])
    assert min(drops) > 0, drops
    assert sum(drops) / len(drops) > 0.04, drops


def test_si_path_integral() -> None:
    """ω sums −g·Δθ along the path: with small full-batch SGD steps, Σω ≈ the drop in loss; the guard
    is b = ω / (Δ² + ξ), clamped at 0; and g is the task loss's gradient, without SI's own penalty."""
    torch.manual_seed(0)
    model = MLP(8, [16], {"t": 3}, shared_head=True)
    he_init(model)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    task = type("T", (), {"name": "t"})()  # the hooks only read task.name
    si = SI(xi=0.1)
    si.before_task(model, task)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch.no_grad():
        start = F.cross_entropy(model(x, "t"), y).item()
    for _ in range(200):
        opt.zero_grad()
        si.loss(model, x, y).backward()
        si.after_backward(model)
        opt.step()
        si.after_step(model)
    with torch.no_grad():
        end = F.cross_entropy(model(x, "t"), y).item()
    omega = sum(w.sum().item() for w in si._omega.values())
    assert start - end > 0.1
    assert omega == pytest.approx(start - end, rel=0.02)

    b = si.importance(model, task)
    for n, p in model.named_parameters():
        delta = p.detach() - si._start[n]
        assert torch.allclose(b[n], (si._omega[n] / (delta**2 + 0.1)).clamp(min=0))
    assert any((v > 0).any() for v in b.values())

    # On the next task ω integrates the task loss's gradient only, not the penalty's.
    si.after_task(model, task)
    model.head("t").weight.data += 0.5  # move away from the anchor so the penalty has a gradient
    si.before_task(model, task)
    opt.zero_grad()
    si.loss(model, x, y).backward()
    si.after_backward(model)
    task_grads = torch.autograd.grad(F.cross_entropy(model(x, "t"), y), list(model.parameters()))
    total = [p.grad for p in model.parameters()]
    for (n, _), g in zip(model.named_parameters(), task_grads, strict=True):
        assert torch.allclose(si._grad[n], g, atol=1e-6), n
    assert not all(torch.allclose(g, full, atol=1e-6) for g, full in zip(task_grads, total, strict=True))


def test_default_lambdas_sit_inside_their_search_range() -> None:
    for name, cls in STRATEGIES.items():
        if cls.default_lam is None:
            continue
        assert cls.lam_range is not None, name
        lo, hi = cls.lam_range
        assert 0 < lo < cls.default_lam < hi, (name, cls.default_lam, cls.lam_range)


def test_make_strategy_rejects_bad_configs() -> None:
    with pytest.raises(LLLError, match="unknown strategy 'ewcc'"):
        make_strategy(StrategyConfig(name="ewcc"))
    with pytest.raises(LLLError, match=r"no option fisher_sample\b.*fisher_samples"):
        make_strategy(StrategyConfig(name="ewc", options={"fisher_sample": 10}))
    with pytest.raises(LLLError, match="no option memory_size"):
        make_strategy(StrategyConfig(name="naive", options={"memory_size": 10}))
    with pytest.raises(LLLError, match="λ must be ≥ 0"):
        make_strategy(StrategyConfig.model_construct(name="ewc", lam=-1.0, options={}))
    with pytest.raises(LLLError, match="gamma"):
        make_strategy(StrategyConfig(name="online-ewc", options={"gamma": 2.0}))
    with pytest.raises(LLLError, match="memory_size"):
        make_strategy(StrategyConfig(name="replay", options={"memory_size": 0}))
    assert make_strategy(StrategyConfig(name="ewc", lam=0.0)).lam == 0.0  # 0 is allowed (= naive)


def test_joint_restart_starts_every_task_from_the_same_initialisation(tiny_pool: TaskPool) -> None:
    """joint:restart=true: before every task the weights are the first task's starting weights again
    (row t of R is the multi-task model of tasks 1..t); the kept initialisation survives a saved
    state (prefix cache, checkpoints); without it joint warm-starts; a non-boolean is one line."""
    from pipeline.runner import MemoryPrefixCache

    a, b, c = (tiny_pool[n] for n in tiny_pool.names)
    for restart in (True, False):
        model = MLP(a.x_train[0].numel(), (16,), {t: 10 for t in tiny_pool.names}, shared_head=True)
        he_init(model)
        s = make_strategy(StrategyConfig(name="joint", options={"restart": restart}))
        s.before_task(model, a)
        w0 = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        s.after_task(model, a)
        fresh = make_strategy(StrategyConfig(name="joint", options={"restart": restart}))
        fresh.load_state_dict(s.state_dict())  # as a cached prefix or a checkpoint restores it
        fresh.before_task(model, b)
        same = all(torch.equal(v, w0[k]) for k, v in model.state_dict().items())
        assert same is restart
    train = TrainConfig(epochs=1, hidden=(16,))
    cfg = StrategyConfig(name="joint", options={"restart": True})
    order = [a.name, b.name, c.name]
    alone = run_ordering(tiny_pool, order, cfg, train, seed=3)
    cache = MemoryPrefixCache()
    run_ordering(tiny_pool, order[:2], cfg, train, seed=3, cache=cache)
    reused = run_ordering(tiny_pool, order, cfg, train, seed=3, cache=cache)
    assert reused.trained == 1 and torch.equal(torch.tensor(reused.rmatrix.values), torch.tensor(alone.rmatrix.values))
    with pytest.raises(LLLError, match="restart must be true or false"):
        make_strategy(StrategyConfig(name="joint", options={"restart": 2}))
