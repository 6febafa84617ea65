"""How lll's EWC Fisher compares in scale with Avalanche's (docs/strategies.md, "λ across libraries").

lll's Fisher is per sample: F_i = mean_s (∂ log p(y_s|x_s) / ∂θ_i)², labels drawn from the model
(pipeline/strategies/quadratic.py: fisher_diagonal). Avalanche's EWCPlugin averages, over the
minibatches of the task's training set (its training batch size B, no shuffling), the *square of the
minibatch's mean* gradient, with the true labels. For per-sample gradients that are uncorrelated and
average to ~0 (a trained model), the square of a mean of B of them is ~1/B of their mean square, so
Avalanche's importance is ~F/B and the same penalty strength needs a λ about B times larger there.

This script trains one task (Avalanche's permuted-MNIST protocol: SGD lr 0.1, no momentum, batch 10,
no clipping, 1 epoch) and prints the three estimates side by side, and the largest λ for which plain
SGD on the penalty alone is stable (lr · 2λF_max < 2).

    python bench/ewc_fisher_scale.py [--pool permuted-mnist] [--batch 10] [--seed 0]
"""

from __future__ import annotations

import common
import torch
import torch.nn.functional as F

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.prefix import initial_learner
from pipeline.strategies.base import trainable
from pipeline.strategies.quadratic import fisher_diagonal
from pipeline.train import train_task
from tasks.pool import seed_from
from tasks.registry import load_pool


def minibatch_fisher(model, task, batch: int) -> dict[str, torch.Tensor]:
    """Avalanche's EWCPlugin.compute_importances: mean over minibatches of (∂ mean CE / ∂θ)²."""
    params = trainable(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    x, y = task.x_train, task.y_train
    n_batches = 0
    for i in range(0, len(y), batch):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + batch], task.name), y[i : i + batch]).backward()
        for n, p in params.items():
            if p.grad is not None:
                total[n] += p.grad.detach().pow(2)
        n_batches += 1
    model.zero_grad(set_to_none=True)
    return {n: t / n_batches for n, t in total.items()}


def flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in d.values()])


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="permuted-mnist")
    ap.add_argument("--batch", type=int, default=10, help="Avalanche's train_mb_size (its Fisher's batch)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    pool = load_pool(a.pool)
    cfg = TrainConfig(lr=a.lr, momentum=0.0, batch_size=a.batch, clip=None, epochs=1)
    device = torch.device("cpu")
    learner = initial_learner(pool, StrategyConfig(name="naive"), cfg, a.seed, device)
    first = pool.names[0]
    learner.model = train_task(learner.model, pool[first], learner.strategy, cfg, seed_from(a.seed, [first]), device)
    model, task = learner.model, pool[first]
    print(f"pool {a.pool}, task {first} trained 1 epoch (SGD lr {a.lr}, batch {a.batch}, no clipping), seed {a.seed}")
    lll = flat(fisher_diagonal(model, task, 1000))
    rows = [("lll: per sample, labels sampled from the model", lll)]
    rows.append(("per sample (B=1), true labels", flat(minibatch_fisher(model, task, 1))))
    rows.append((f"Avalanche: minibatch B={a.batch}, true labels", flat(minibatch_fisher(model, task, a.batch))))
    print(f"{'estimate':48} {'sum':>10} {'max':>9} {'lll/this (sum)':>15} {'λ_max (SGD)':>12}")
    for name, f in rows:
        lam_max = 1.0 / (a.lr * float(f.max()))
        ratio = float(lll.sum() / f.sum())
        print(f"{name:48} {float(f.sum()):10.3f} {float(f.max()):9.4f} {ratio:15.2f} {lam_max:12.2f}")
    print("λ_max: the largest λ for which SGD on the penalty λ·F·(θ−θ*)² alone does not oscillate apart")


if __name__ == "__main__":
    main()
