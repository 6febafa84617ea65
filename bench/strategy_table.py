"""One table, all strategies: ACC, BWT, FWT, parameters, stored bytes and seconds, mean ± std.

Every discovered strategy (default λ and options) is trained on the pool's own task order in
three scenarios, over several seeds:

    permuted-mnist     domain-incremental: 5 pixel permutations, one shared 10-way head
    split-mnist-class  class-incremental: 5 × 2 digits, original labels, one growing head
    split-mnist        task-incremental: 5 × 2 digits, one 2-way head per task

Strategies that need the task's identity to pick their parameters (pnn, packnet, cpg) do not
apply to the class-incremental scenario; their cells say n/a. Strategy-specific numbers go in the
notes column (Expert Gate's gate accuracy, PackNet's and CPG's free capacity, CPG's pruned share,
Net2Net's and CPG's widenings).

    python bench/strategy_table.py --quick                 # a few minutes: a smoke test
    nohup python bench/strategy_table.py --out table.json > table.md &   # the full table
    python bench/strategy_table.py --strategies cpg --merge bench/out/strategy_table.md   # add rows

Runs one process, one thread (torch.set_num_threads(1)): on a shared CPU more threads only
fight each other. The JSON (--out) is rewritten after every run, so a long run can be watched
and an interrupted one keeps what it finished.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import common
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from pipeline.strategies import STRATEGIES
from tasks.errors import LLLError
from tasks.registry import load_pool

SCENARIOS = {
    "permuted-mnist": "domain-incremental",
    "split-mnist-class": "class-incremental",
    "split-mnist": "task-incremental",
}
METRICS = ("acc", "bwt", "fwt", "params", "stored_bytes", "seconds")


def notes(strategy, model, pool) -> dict[str, float]:
    """Strategy-specific numbers worth a column."""
    out: dict[str, float] = {}
    if hasattr(strategy, "gate_accuracy"):
        acc = strategy.gate_accuracy(model, list(pool.tasks.values()))
        out["gate_acc"] = sum(acc.values()) / max(1, len(acc))
    if hasattr(strategy, "capacity"):
        out["free_capacity"] = strategy.capacity()
    if hasattr(strategy, "compacting"):
        out["pruned"] = statistics.fmean(c["pruned"] for c in strategy.compacting)
    if hasattr(strategy, "growth"):
        out["widenings"] = len(strategy.growth)
    return out


def one_run(pool, name: str, train: TrainConfig, seed: int) -> dict:
    try:
        r = run_ordering(pool, pool.names, StrategyConfig(name=name), train, seed=seed)
    except LLLError as exc:
        return {"error": str(exc)}
    m = r.rmatrix.metrics()
    last = r.sizes[-1]
    return {
        "acc": m["acc"],
        "bwt": m["bwt"],
        "fwt": m["fwt"],
        "params": last["params"],
        "stored_bytes": last["stored_bytes"],
        "seconds": r.seconds,
        "notes": notes(r.strategy, r.model, pool),
        "R": r.rmatrix.values.tolist(),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for sc in dict.fromkeys(r["scenario"] for r in runs):
        table[sc] = {}
        for name in dict.fromkeys(r["strategy"] for r in runs if r["scenario"] == sc):
            rs = [r for r in runs if r["scenario"] == sc and r["strategy"] == name]
            ok = [r for r in rs if "error" not in r]
            if not ok:
                table[sc][name] = {"error": rs[0]["error"]}
                continue
            row = {k: mean_std([r[k] for r in ok]) for k in METRICS}
            for k in ok[0]["notes"]:
                row[k] = mean_std([r["notes"][k] for r in ok])
            row["seeds"] = len(ok)
            table[sc][name] = row
    return table


def pct(ms: tuple[float, float]) -> str:
    return f"{ms[0] * 100:.1f} ± {ms[1] * 100:.1f}"


def markdown(summary: dict, config: dict) -> str:
    lines = [
        f"{config['train_per_task']} training / {config['test_per_task']} test images per task, "
        f"{config['epochs']} epochs, hidden {config['hidden']}, seeds {config['seeds']}; "
        "ACC/BWT/FWT in percentage points, mean ± std over seeds.",
    ]
    for sc, rows in summary.items():
        lines += ["", f"### {sc} ({SCENARIOS[sc]})", ""]
        lines += ["| strategy | ACC | BWT | FWT | params | stored KiB | seconds | notes |", "|" + "---|" * 8]
        for name, row in rows.items():
            if "error" in row:
                lines.append(f"| {name} | n/a | n/a | n/a | | | | {row['error'].split(';')[0]} |")
                continue
            extra = ", ".join(
                f"{k} {row[k][0] * 100:.0f}%" if k != "widenings" else f"{k} {row[k][0]:.1f}"
                for k in ("gate_acc", "free_capacity", "pruned", "widenings")
                if k in row
            )
            acc, bwt, fwt = (pct(row[k]) for k in ("acc", "bwt", "fwt"))
            secs = f"{row['seconds'][0]:.1f} ± {row['seconds'][1]:.1f}"
            size = f"{row['params'][0]:,.0f} | {row['stored_bytes'][0] / 1024:,.0f}"
            lines.append(f"| {name} | {acc} | {bwt} | {fwt} | {size} | {secs} | {extra} |")
    return "\n".join(lines)


def merge_markdown(old: str, new: str) -> str:
    """``old`` with the table rows of ``new`` merged in: a strategy's row in a scenario is replaced,
    a new one is inserted at its place in discovery order; everything else of ``old`` stays."""
    if old.splitlines()[0] != new.splitlines()[0]:
        raise SystemExit("--merge: the settings line differs from the table's; run with the same settings")

    def sections(text: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        current = None
        for line in text.splitlines():
            if line.startswith("### "):
                current = out.setdefault(line, {})
            elif current is not None and line.startswith("| ") and not line.startswith("| strategy "):
                current[line.split("|")[1].strip()] = line
        return out

    new_rows, rank = sections(new), {n: i for i, n in enumerate(STRATEGIES)}
    lines, out, i = old.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line not in new_rows:
            continue
        while i < len(lines) and not lines[i].startswith("| ") and not lines[i].startswith("|-"):
            out.append(lines[i])
            i += 1
        rows: dict[str, str] = {}
        while i < len(lines) and lines[i].startswith("|"):
            if lines[i].startswith("| ") and not lines[i].startswith("| strategy "):
                rows[lines[i].split("|")[1].strip()] = lines[i]
            else:
                out.append(lines[i])
            i += 1
        rows.update(new_rows[line])
        out += [rows[n] for n in sorted(rows, key=lambda n: rank.get(n, len(rank)))]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="200 images per task, 2 epochs: a smoke test")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated [default: all]")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated [default: all three]")
    ap.add_argument("--train-per-task", type=int, default=None, help="[default: 1000; quick: 200]")
    ap.add_argument("--test-per-task", type=int, default=None, help="[default: 500; quick: 200]")
    ap.add_argument("--epochs", type=int, default=None, help="[default: TrainConfig's 10; quick: 2]")
    ap.add_argument("--out", type=Path, default=None, help="write runs and summary as JSON here")
    ap.add_argument(
        "--merge", type=Path, default=None, help="merge the rows run here into this table (markdown), in place"
    )
    args = ap.parse_args(argv)

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in strategies:
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r}; choose from {', '.join(STRATEGIES)}")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    default_train = TrainConfig()
    config = {
        "train_per_task": args.train_per_task or (200 if args.quick else 1000),
        "test_per_task": args.test_per_task or (200 if args.quick else 500),
        "epochs": args.epochs or (2 if args.quick else default_train.epochs),
        "hidden": list(default_train.hidden),
        "seeds": args.seeds,
        "strategies": strategies,
        "scenarios": scenarios,
    }
    train = TrainConfig(epochs=config["epochs"])
    torch.set_num_threads(1)

    start = time.perf_counter()
    runs: list[dict] = []
    total = len(scenarios) * len(strategies) * args.seeds
    for sc in scenarios:
        pool = load_pool(sc, train_per_task=config["train_per_task"], test_per_task=config["test_per_task"])
        for name in strategies:
            for seed in range(args.seeds):
                res = one_run(pool, name, train, seed)
                runs.append({"scenario": sc, "strategy": name, "seed": seed, **res})
                done = len(runs)
                status = res.get("error", "").split(";")[0] or f"ACC {res['acc'] * 100:.1f} in {res['seconds']:.0f}s"
                print(f"[{done}/{total}] {sc} {name} seed {seed}: {status}", file=sys.stderr, flush=True)
                if args.out is not None:
                    elapsed = time.perf_counter() - start
                    payload = {"config": config, "seconds": elapsed, "runs": runs, "summary": summarise(runs)}
                    args.out.write_text(json.dumps(payload, indent=1))
    elapsed = time.perf_counter() - start
    table = markdown(summarise(runs), config)
    print(table)
    print(f"\n{len(runs)} runs in {elapsed / 60:.1f} min")
    if args.merge is not None:
        args.merge.write_text(merge_markdown(args.merge.read_text(), table))
        print(f"merged into {args.merge}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
