"""The lecture's bAbI experiment: question-answering tasks learned one after another forget.

Trains the pool's tasks in order twice with the same memory network and settings: sequentially
(strategy ``naive``: each task only sees its own data) and jointly (strategy ``joint``: each task
also trains on every earlier task's data, i.e. multi-task training on tasks 1..t). It plots

* left: test accuracy on one watched task after each task of the sequence — under naive training
  it rises when the watched task is trained and collapses when a later task with different
  answers is trained; under joint training it stays;
* right: the final accuracy on every task, naive vs joint, with the majority-answer baseline.

Joint runs twice: warm-started (task t continues from the model after task t−1, lll's default) and
with ``joint:restart=true`` (every task from the same initialisation: the multi-task model of tasks
1..t, the textbook upper bound). Two-hop qa15, trained last, separates them.

The watched task defaults to bAbI task 5 if the pool has it (the lecture's example), else task 6,
else the second task of the order; ``--watch NAME`` picks another.

    python bench/babi_forgetting.py                                  # generated pool, offline
    python bench/babi_forgetting.py --pool babi-20 --data-dir DIR    # the real 1k tasks
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import common
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import RunResult, run_ordering
from tasks.errors import LLLError
from tasks.pool import TaskPool
from tasks.registry import load_pool


def default_watch(pool: TaskPool, order: list[str]) -> str:
    """bAbI task 5, else 6, else the second task — never the last one (nothing comes after it)."""
    number = {t.name: t.babi_task for t in pool.spec.tasks}
    for k in (5, 6):
        for name in order[:-1]:
            if number.get(name) == k:
                return name
    return order[1] if len(order) > 1 else order[0]


def majority(pool: TaskPool, name: str) -> float:
    """Accuracy of always giving the task's most frequent test answer."""
    y = pool[name].y_test
    return int(torch.bincount(y).max()) / len(y)


def plot(
    pool: TaskPool,
    order: list[str],
    watch: str,
    naive: RunResult,
    joint: RunResult,
    multitask: RunResult,
    path: Path,
    title: str,
) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    xs = list(range(len(order) + 1))
    labels = ["init", *order]
    left.plot(xs, [r[watch] for r in naive.rows], "o-", color="tab:red", label="sequential (naive)")
    left.plot(xs, [r[watch] for r in joint.rows], "s-", color="tab:blue", label="joint (warm start)")
    left.plot(xs, [r[watch] for r in multitask.rows], "^-", color="tab:green", label="joint (restart: multi-task)")
    left.axvline(order.index(watch) + 1, color="grey", ls=":", lw=1)
    left.axhline(majority(pool, watch), color="grey", ls="--", lw=1, label="majority answer")
    left.set_xticks(xs, labels, rotation=45, ha="right")
    left.set_xlabel("after training task")
    left.set_ylabel(f"test accuracy on {watch}")
    left.set_ylim(-0.02, 1.02)
    left.set_title(f"accuracy on {watch} along the sequence")
    left.legend(loc="best", fontsize=8)

    width = 0.28
    pos = range(len(order))
    right.bar([p - width for p in pos], [naive.rows[-1][n] for n in order], width, color="tab:red", label="naive")
    right.bar(list(pos), [joint.rows[-1][n] for n in order], width, color="tab:blue", label="joint (warm start)")
    last = [multitask.rows[-1][n] for n in order]
    right.bar([p + width for p in pos], last, width, color="tab:green", label="joint (restart)")
    for p, n in zip(pos, order, strict=True):
        right.plot([p - 0.45, p + 0.45], [majority(pool, n)] * 2, color="grey", ls="--", lw=1)
    right.set_xticks(list(pos), order, rotation=45, ha="right")
    right.set_ylim(0, 1.02)
    right.set_ylabel("final test accuracy")
    right.set_title("after the whole sequence (dashes: majority answer)")
    right.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="babi-gen", help="babi-gen (offline), babi-20 or babi-10k (need --data-dir)")
    ap.add_argument("--data-dir", default=None, help="folder holding tasks_1-20_v1-2/ (real bAbI)")
    ap.add_argument("--download", action="store_true", help="download bAbI into --data-dir when missing")
    ap.add_argument("--order", default=None, help="comma-separated task order [default: the pool's]")
    ap.add_argument("--watch", default=None, help="task whose accuracy is followed [default: see above]")
    # Training settings default to the pool's own defaults (its `train:`), i.e. what `lll run` uses.
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--optimizer", default=None, choices=["adam", "sgd"])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--hidden", default="50,50,50", help="memory width per hop (d = 50, 3 hops)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-per-task", type=int, default=None)
    ap.add_argument("--test-per-task", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the model's ops are tiny: 1 is fastest)")
    ap.add_argument("--out", default="bench/out/babi_forgetting.png", help="where to save the figure")
    ap.add_argument("--json", default=None, help="also write both R matrices and the settings here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        pool = load_pool(args.pool, args.data_dir, args.download, args.train_per_task, args.test_per_task)
        order = pool.resolve_order(args.order)
        watch = args.watch or default_watch(pool, order)
        pool[watch]  # a clear error for an unknown name
        given = {"epochs": args.epochs, "optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size}
        cfg = TrainConfig(
            **{**pool.spec.train, **{k: v for k, v in given.items() if v is not None}},
            hidden=tuple(int(h) for h in args.hidden.split(",")),
            device="cpu",
        )
    except LLLError as exc:
        raise SystemExit(f"error: {exc}") from None
    n_train = len(pool[order[0]].y_train)
    print(f"pool {pool.name}: {pool.note}")
    print(f"order: {', '.join(order)}; watching {watch}; {n_train} training questions per task")
    print(f"training: {cfg.model_dump(exclude={'device', 'heads'})}, seed {args.seed}, {args.threads} thread(s)")

    results: dict[str, RunResult] = {}
    runs = {
        "naive": StrategyConfig(name="naive"),
        "joint": StrategyConfig(name="joint"),  # warm start: task t starts from the model after t-1
        "joint_restart": StrategyConfig(name="joint", options={"restart": True}),  # multi-task from the init
    }
    for name, scfg in runs.items():
        start = time.perf_counter()
        results[name] = run_ordering(pool, order, scfg, cfg, seed=args.seed)
        print(f"{name}: trained in {time.perf_counter() - start:.1f} s")
    naive, joint, multitask = results["naive"], results["joint"], results["joint_restart"]

    print(f"\naccuracy on {watch} (%) after each task:")
    print(f"{'after':>8} {'naive':>7} {'joint':>7} {'restart':>8}")
    for label, rn, rj, rm in zip(["init", *order], naive.rows, joint.rows, multitask.rows, strict=True):
        print(f"{label:>8} {rn[watch] * 100:7.1f} {rj[watch] * 100:7.1f} {rm[watch] * 100:8.1f}")

    print("\nfinal accuracy per task (%):")
    print(f"{'task':>8} {'naive':>7} {'joint':>7} {'restart':>8} {'majority':>9}")
    for n in order:
        last = [r.rows[-1][n] * 100 for r in (naive, joint, multitask)]
        print(f"{n:>8} {last[0]:7.1f} {last[1]:7.1f} {last[2]:8.1f} {majority(pool, n) * 100:9.1f}")
    for name, r in results.items():
        m = r.rmatrix.metrics()
        print(f"{name}: ACC {m['acc'] * 100:.1f}  BWT {m['bwt'] * 100:+.1f}  forgetting {m['forgetting'] * 100:.1f}")

    title = (
        f"bAbI pool {pool.name}: sequential vs joint training of a memory network "
        f"({cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs/task, {n_train} questions/task, "
        f"seed {args.seed})"
    )
    plot(pool, order, watch, naive, joint, multitask, Path(args.out), title)
    print(f"\nwrote {args.out}")
    if args.json:
        payload = {
            "pool": pool.name,
            "order": order,
            "watch": watch,
            "train": cfg.model_dump(mode="json"),
            "seed": args.seed,
            **{name: {"rows": r.rows, **r.rmatrix.to_dict()} for name, r in results.items()},
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
