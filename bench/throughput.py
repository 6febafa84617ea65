"""How much does lll's generic training loop cost next to a plain hand-written PyTorch loop?

Both loops do exactly the same work on the same data: the same MLP with the same initial weights,
SGD (lr 0.01, momentum 0.9), batch 32, the same per-epoch ``torch.randperm`` shuffling from the
same seed, gradient-norm clipping at 1.0. Repetitions alternate between the two (and which one
goes first) so machine load hits both alike; medians are reported. Because the work is identical,
the final weights must be identical bit for bit, which the script checks.

It then times one task-training (``train_task``, default TrainConfig, including the strategy's
``after_task`` work) for naive, EWC, SI, A-GEM and GEM, as the 1st task of a sequence (nothing to
protect yet) and as the 2nd and 5th (penalties / memories of 1 and 4 earlier tasks active), plus
what ``run_ordering`` adds per task (evaluation on every pool task, prefix hashing).

It deliberately measures the one-at-a-time loop in this process (``train_task`` and
``run_ordering``, no Ray, no scheduler, no lockstep): the cost of lll's loop itself. Lockstep and
the scheduler are measured by bench/population.py and bench/search_overhead.py.

    python bench/throughput.py            # ~2 minutes of one core
    python bench/throughput.py --clock wall   # wall-clock instead of this process's CPU time
    python bench/throughput.py --quick    # < 60 s, 2 epochs
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable

import common
import torch
from torch import nn

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.models import model_for_pool
from pipeline.runner import run_ordering
from pipeline.strategies import make_strategy
from pipeline.train import train_task
from tasks.pool import Task, TaskPool, seed_from
from tasks.registry import load_pool

DEVICE = torch.device("cpu")
# The clock every timing uses: this process's CPU time by default, so that other processes on a
# shared machine inflate the numbers far less than wall-clock time would (--clock wall to change).
CLOCK = [time.process_time]


def lll_model(pool: TaskPool, cfg: TrainConfig) -> nn.Module:
    return model_for_pool(pool, cfg.hidden, cfg.heads, cfg.init, seed_from(0, "init"))


def plain_model(reference: nn.Module, task: str) -> nn.Sequential:
    """The same network written by hand as one nn.Sequential, with the reference's initial weights."""
    linears = [m for m in reference.body if isinstance(m, nn.Linear)] + [reference.head(task)]
    layers: list[nn.Module] = [nn.Flatten()]
    for k, ref in enumerate(linears):
        lin = nn.Linear(ref.in_features, ref.out_features)
        with torch.no_grad():
            lin.weight.copy_(ref.weight)
            lin.bias.copy_(ref.bias)
        layers.append(lin)
        if k < len(linears) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def run_lll(pool: TaskPool, task: Task, cfg: TrainConfig, seed: int) -> tuple[float, nn.Module]:
    model = lll_model(pool, cfg)
    strategy = make_strategy(StrategyConfig(name="naive"))
    start = CLOCK[0]()
    model = train_task(model, task, strategy, cfg, seed, DEVICE)
    return CLOCK[0]() - start, model


def run_plain(pool: TaskPool, task: Task, cfg: TrainConfig, seed: int) -> tuple[float, nn.Module]:
    model = plain_model(lll_model(pool, cfg), task.name)
    start = CLOCK[0]()
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x, y = task.x_train, task.y_train
    n, bs = len(y), cfg.batch_size
    for _ in range(cfg.epochs):
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
    return CLOCK[0]() - start, model


def same_weights(a: nn.Module, b: nn.Sequential, task: str) -> bool:
    mine = [m for m in a.body if isinstance(m, nn.Linear)] + [a.head(task)]
    theirs = [m for m in b if isinstance(m, nn.Linear)]
    return all(
        torch.equal(p.weight, q.weight) and torch.equal(p.bias, q.bias) for p, q in zip(mine, theirs, strict=True)
    )


def compare_loops(pool: TaskPool, task: Task, cfg: TrainConfig, reps: int) -> float:
    seed = 1234
    run_lll(pool, task, cfg, seed)  # warm-up: first-call allocations and lazy initialisation
    run_plain(pool, task, cfg, seed)
    times: dict[str, list[float]] = {"lll": [], "plain": []}
    runners: dict[str, Callable] = {"lll": run_lll, "plain": run_plain}
    models: dict[str, nn.Module] = {}
    for rep in range(reps):
        for name in ("lll", "plain") if rep % 2 == 0 else ("plain", "lll"):
            seconds, models[name] = runners[name](pool, task, cfg, seed)
            times[name].append(seconds)
    samples = cfg.epochs * len(task.y_train)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"loop comparison on task {task.name!r}: {len(task.y_train)} samples x {cfg.epochs} epochs, batch "
        f"{cfg.batch_size}, SGD lr {cfg.lr} m {cfg.momentum}, clip {cfg.clip}, {reps} alternating reps, medians"
    )
    for k in ("lll", "plain"):
        spread = ", ".join(f"{t:.3f}" for t in times[k])
        print(f"  {k:5s}: {samples / med[k]:9.0f} samples/s  ({med[k] * 1000:.0f} ms per task; runs s: {spread})")
    ratio = med["plain"] / med["lll"]
    print(f"  ratio lll/plain throughput: {ratio:.3f}  (target >= 0.9)")
    print(f"  identical final weights: {same_weights(models['lll'], models['plain'], task.name)}")
    return ratio


def profile_lll(pool: TaskPool, task: Task, cfg: TrainConfig) -> None:
    prof = cProfile.Profile()
    prof.enable()
    run_lll(pool, task, cfg, 1234)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    print("profile of one lll task-training (top 15 by own time):")
    print(out.getvalue())


def time_strategies(pool: TaskPool, cfg: TrainConfig, names: list[str], reps: int) -> None:
    """ms per task-training at each position of the pool's own order, medians over ``reps``."""
    tasks = list(pool.tasks.values())
    per: dict[str, list[list[float]]] = {n: [[] for _ in tasks] for n in names}
    after: dict[str, list[list[float]]] = {n: [[] for _ in tasks] for n in names}
    for _ in range(reps):
        for name in names:  # round robin, so load drifts hit every strategy alike
            strategy = make_strategy(StrategyConfig(name=name))
            inner = strategy.after_task
            spent: list[float] = []

            def timed_after_task(model, task, inner=inner, spent=spent):
                t0 = CLOCK[0]()
                inner(model, task)
                spent.append(CLOCK[0]() - t0)

            strategy.after_task = timed_after_task  # type: ignore[method-assign]
            model = lll_model(pool, cfg)
            for i, task in enumerate(tasks):
                t0 = CLOCK[0]()
                model = train_task(model, task, strategy, cfg, seed_from(0, i), DEVICE)
                per[name][i].append(CLOCK[0]() - t0)
                after[name][i].append(spent[-1])
    show = sorted({0, 1, len(tasks) - 1})
    head = "".join(f"  task #{i + 1} (after_task)" for i in show)
    print(
        f"ms per task-training, {cfg.epochs} epochs x {len(tasks[0].y_train)} samples, default strategy "
        f"settings, medians of {reps}; task #k trains with k-1 earlier tasks protected"
    )
    print(f"  {'strategy':10s}{head}   x naive (task #{len(tasks)})")
    base = statistics.median(per[names[0]][-1]) if names[0] == "naive" else None
    for name in names:
        cells = "".join(
            f"  {statistics.median(per[name][i]) * 1000:8.0f} ({statistics.median(after[name][i]) * 1000:5.0f} ms)"
            for i in show
        )
        factor = f"{statistics.median(per[name][-1]) / base:6.1f}" if base else ""
        print(f"  {name:10s}{cells}   {factor}")


def runner_overhead(pool: TaskPool, cfg: TrainConfig) -> None:
    """What run_ordering adds around train_task: evaluation after each task, model build, hashing."""
    order = pool.names
    strategy_cfg = StrategyConfig(name="naive")
    t0 = CLOCK[0]()
    result = run_ordering(pool, order, strategy_cfg, cfg, seed=0)
    total = CLOCK[0]() - t0
    strategy = make_strategy(strategy_cfg)
    model = lll_model(pool, cfg)
    t0 = CLOCK[0]()
    for i, name in enumerate(order):
        model = train_task(model, pool[name], strategy, cfg, seed_from(0, order[: i + 1]), DEVICE)
    train_only = CLOCK[0]() - t0
    extra = (total - train_only) / len(order) * 1000
    print(
        f"run_ordering over the {len(order)}-task pool order: {total:.2f} s, train_task alone {train_only:.2f} s; "
        f"overhead {extra:.0f} ms per task (evaluation on all {len(order)} test sets, model build, hashing); "
        f"trained {result.trained}"
    )


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--pool", default="mixed-mnist")
    ap.add_argument("--task", default=None, help="task for the loop comparison (default: the pool's first)")
    ap.add_argument("--reps", type=int, default=5, help="alternating repetitions of the loop comparison")
    ap.add_argument("--strategy-reps", type=int, default=3)
    ap.add_argument("--strategies", default="naive,ewc,si,agem,gem")
    ap.add_argument("--epochs", type=int, default=None, help="override TrainConfig.epochs (default 10)")
    ap.add_argument("--train-per-task", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both loops")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time or wall-clock time")
    ap.add_argument("--profile", action="store_true", help="profile one lll task-training even if the ratio is fine")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 3 reps, 1 strategy rep: < 60 s")
    args = ap.parse_args()
    if args.quick:
        args.epochs = args.epochs or 2
        args.reps, args.strategy_reps = 3, 1

    torch.set_num_threads(args.threads)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"torch {torch.__version__}, CPU, torch.set_num_threads({args.threads}) for every loop; times are "
        f"{'process CPU' if args.clock == 'cpu' else 'wall-clock'} time"
    )
    pool = load_pool(args.pool, train_per_task=args.train_per_task)
    cfg = TrainConfig(device="cpu", **({"epochs": args.epochs} if args.epochs else {}))
    task = pool[args.task or pool.names[0]]

    ratio = compare_loops(pool, task, cfg, args.reps)
    if ratio < 0.9 or args.profile:
        profile_lll(pool, task, cfg)
    print()
    time_strategies(pool, cfg, [s.strip() for s in args.strategies.split(",")], args.strategy_reps)
    print()
    runner_overhead(pool, cfg)


if __name__ == "__main__":
    main()
