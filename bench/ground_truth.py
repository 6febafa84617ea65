"""The 7-task ground truths: every ordering of mixed-mnist-7, trained through lll's scheduler.

Two configs (``--config``):

* ``defaults`` — the pool's training defaults (1,000 training / 500 test images per task, 10 epochs,
  the default MLP and SGD; each task alone is learned at 57-94 %); naive on seeds 0-3, EWC (its
  default λ and options) on seeds 0-1. This is the truth that judges a recommendation: an ordering's
  true value is its ACC averaged over all these seeds; benchmarks split the seeds into seeds a
  search may use and held-out seeds that judge it.
* ``cheap`` — 400/200 images and 3 epochs (EWC λ 30 and ``fisher_samples=100``): the earlier, noisier
  truth, trained one model at a time by an older version of this script; its file is kept as is.

Every ordering goes through :func:`common.train_orderings`: Ray worker actors, the one scheduler
(prefix affinity, lockstep batches of compatible units), each worker's prefix cache — the code
``lll search --exhaustive`` runs, without the Optuna/MLflow recording (its per-trial cost would
dominate 5,040 trials per seed). Leaves are submitted in lexicographic order, so every strategy-seed
costs about 7 + 42 + 210 + 840 + 2,520 + 5,040 + 5,040 = 13,699 task-trainings. Each finished
ordering is appended to ``bench/out/ground_truth_parts/<config>/<strategy>_s<seed>.jsonl``, so a run
killed at any point resumes where it stopped (a state after a prefix is a pure function of the
prefix, so the numbers are the same). ``merge`` writes ``bench/out/ground_truth_mixed-mnist-7_<config>
.json.gz`` (``_defaults``; the cheap truth keeps its old name): config, per strategy-seed the ACC/BWT
of every ordering and the accuracy row after every prefix, and the measured cost.

usage:
    python bench/ground_truth.py estimate                          # time ~200 task-trainings per strategy
    python bench/ground_truth.py run --strategy naive --seeds 0,1,2,3 [--workers 2]
    python bench/ground_truth.py run --strategy ewc --seeds 0,1
    python bench/ground_truth.py merge                             # parts → the .json.gz (keeps finished seeds)
    python bench/ground_truth.py report [--config cheap]           # seed-to-seed Spearman, noise vs ordering effect
    python bench/ground_truth.py run --quick --strategy naive --seeds 0   # 4-task smoke test, tiny data
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import common
import numpy as np

PARTS = common.OUT / "ground_truth_parts"
POOL = "mixed-mnist-7"
CONFIGS: dict[str, dict] = {
    "defaults": {
        "pool": POOL,
        "train_per_task": None,  # the pool's own (1,000 / 500)
        "test_per_task": None,
        "train": {},  # TrainConfig defaults: 10 epochs, MLP 50-50-50, SGD lr 0.01 momentum 0.9
        "strategies": {"naive": {"lam": None, "options": {}}, "ewc": {"lam": None, "options": {}}},
        "seeds": {"naive": [0, 1, 2, 3], "ewc": [0, 1]},
        "population": "auto",
    },
    "cheap": {
        "pool": POOL,
        "train_per_task": 400,
        "test_per_task": 200,
        "train": {"epochs": 3},
        "strategies": {"naive": {"lam": None, "options": {}}, "ewc": {"lam": None, "options": {"fisher_samples": 100}}},
        "seeds": {"naive": [0, 1], "ewc": [0, 1]},
        "population": 1,
    },
}
QUICK = {"train_per_task": 60, "test_per_task": 40, "train": {"epochs": 1}, "tasks": 4}


def out_path(config: str) -> Path:
    return common.TRUTHS[config]


def load_pool(cfg: dict, quick: bool = False):
    from tasks.pool import PoolSpec
    from tasks.registry import resolve_pool_spec

    spec = resolve_pool_spec(cfg["pool"], None, cfg["train_per_task"], cfg["test_per_task"])
    if quick:
        d = spec.model_dump(mode="json")
        d.update(train_per_task=QUICK["train_per_task"], test_per_task=QUICK["test_per_task"])
        d["tasks"] = d["tasks"][: QUICK["tasks"]]
        spec = PoolSpec.model_validate(d)
    return spec


def configs_json(cfg: dict, strategy: str, quick: bool) -> tuple[str, str]:
    from pipeline.config import StrategyConfig, TrainConfig

    train = {**cfg["train"], **(QUICK["train"] if quick else {}), "device": "cpu"}
    s = cfg["strategies"][strategy]
    return (
        StrategyConfig(name=strategy, lam=s["lam"], options=s["options"]).model_dump_json(),
        TrainConfig(**train).model_dump_json(),
    )


def part_path(parts: Path, strategy: str, seed: int) -> Path:
    return parts / f"{strategy}_s{seed}.jsonl"


def read_part(path: Path) -> dict[tuple[str, ...], dict]:
    """Finished orderings of one strategy-seed (a line cut by a kill is skipped: retrained)."""
    done: dict[tuple[str, ...], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "order" in rec:
                done[tuple(rec["order"])] = rec
    return done


def metrics(order: tuple[str, ...], rows: list[dict[str, float]]) -> tuple[float, float]:
    from pipeline.rmatrix import RMatrix

    m = RMatrix.from_rows(list(order), rows).metrics()
    return m["acc"], m["bwt"]


def cmd_run(args) -> None:
    cfg = CONFIGS[args.config]
    spec = load_pool(cfg, args.quick)
    names = [t.name for t in spec.tasks]
    parts = Path(args.parts) / (args.config + ("-quick" if args.quick else ""))
    parts.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else cfg["seeds"][args.strategy]
    sj, tj = configs_json(cfg, args.strategy, args.quick)
    population = args.population or cfg["population"]
    for seed in seeds:
        path = part_path(parts, args.strategy, seed)
        done = read_part(path)
        todo = [o for o in common.all_orderings(names) if o not in done]
        print(
            f"[{time.strftime('%H:%M:%S')}] {args.strategy} seed {seed}: {len(done)} done, {len(todo)} to train",
            flush=True,
        )
        if not todo:
            continue
        t0, n = time.perf_counter(), 0
        with path.open("a") as f:

            def on_done(order, res, f=f, t0=t0, total=len(todo)):
                nonlocal n
                rows = [{k: round(v, 5) for k, v in r.items()} for r in res["rows"]]
                acc, bwt = metrics(order, res["rows"])
                f.write(json.dumps({"order": list(order), "acc": acc, "bwt": bwt, "rows": rows}) + "\n")
                f.flush()
                n += 1
                if n % 500 == 0:
                    rate = n / (time.perf_counter() - t0)
                    print(f"  {n}/{total} orderings, {rate:.2f}/s", flush=True)

            stats = common.train_orderings(
                spec.model_dump_json(), todo, sj, tj, seed, on_done, workers=args.workers, population=population
            )
        with path.open("a") as f:  # a closing line: the cost of this session's share
            f.write(json.dumps({"done": True, "trained": stats["trained"], "wall_s": stats["wall_s"],
                                "orderings": len(todo), "workers": len(stats["workers"]),
                                "population": [w.get("population") for w in stats["workers"]],
                                "finished_at": time.time()}) + "\n")  # fmt: skip
        print(
            f"  {args.strategy} seed {seed}: {stats['trained']} task-trainings in {stats['wall_s']:.0f} s", flush=True
        )


def cmd_estimate(args) -> None:
    """Train the first orderings of each strategy on a seed no truth uses, and project the cost."""
    cfg = CONFIGS[args.config]
    spec = load_pool(cfg)
    names = [t.name for t in spec.tasks]
    for strategy in cfg["strategies"]:
        sj, tj = configs_json(cfg, strategy, False)
        orders = common.all_orderings(names)[: args.orderings]
        stats = common.train_orderings(spec.model_dump_json(), orders, sj, tj, 999, lambda o, r: None,
                                       workers=args.workers, population=cfg["population"])  # fmt: skip
        per = stats["wall_s"] / max(1, stats["trained"])
        seeds = len(cfg["seeds"][strategy])
        print(
            f"{strategy}: {stats['trained']} task-trainings in {stats['wall_s']:.1f} s wall on {args.workers} workers "
            f"({per:.3f} s each, boot included) → one seed ≈ 13,699 × {per:.3f} = {13699 * per / 3600:.2f} h; "
            f"{seeds} seeds ≈ {seeds * 13699 * per / 3600:.2f} h",
            flush=True,
        )


def merge(config: str, parts: Path) -> dict:
    """Every finished strategy-seed of ``parts`` as one document (orderings in lexicographic order)."""
    cfg = CONFIGS[config]
    names = [t.name for t in load_pool(cfg).tasks]
    orderings = common.all_orderings(names)
    runs, missing, timing = {}, [], {}
    for strategy, seeds in cfg["seeds"].items():
        for seed in seeds:
            path = part_path(parts, strategy, seed)
            recs = read_part(path)
            key = f"{strategy}/seed{seed}"
            if len(recs) < len(orderings):
                missing.append(f"{key} ({len(recs)}/{len(orderings)})")
                continue
            closing = [json.loads(line) for line in path.read_text().splitlines() if '"done"' in line]
            timing[key] = {"wall_s": sum(c["wall_s"] for c in closing), "trained": sum(c["trained"] for c in closing)}
            tree: dict[str, list[float]] = {}
            acc, bwt = [], []
            for o in orderings:
                rec = recs[o]
                acc.append(rec["acc"])
                bwt.append(rec["bwt"])
                for i in range(len(o) + 1):
                    tree.setdefault(",".join(o[:i]), [rec["rows"][i][n] for n in names])
            runs[key] = {"strategy": strategy, "seed": seed, "acc": acc, "bwt": bwt, "rows": tree}
    return {
        "config": {**cfg, "name": config},
        "tasks": names,
        "orderings": [",".join(o) for o in orderings],
        "runs": runs,
        "missing": missing,
        "timing": timing,
        "path": "bench/common.py train_orderings: Ray workers, search.study.scheduler, lockstep (population auto)",
        "rows_note": "rows[prefix] = test accuracy on every pool task (in `tasks` order) after training that prefix",
        "command": __doc__.split("usage:")[1].strip(),
    }


def cmd_merge(args) -> None:
    """Parts win; a strategy-seed without complete parts keeps what an earlier merge recorded."""
    doc = merge(args.config, Path(args.parts) / args.config)
    out = out_path(args.config)
    if out.exists():
        old = common.load_truth(out)
        for key, run in old["runs"].items():
            if key not in doc["runs"]:
                doc["runs"][key] = run
                doc["missing"] = [m for m in doc["missing"] if not m.startswith(key + " ")]
                doc["timing"].setdefault(key, old.get("timing", {}).get(key))
    with gzip.open(out, "wt") as f:
        json.dump(doc, f)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB): {sorted(doc['runs'])}; missing {doc['missing']}")


def cmd_report(args) -> None:
    """Seed-to-seed Spearman and Pearson, the per-seed noise and the ordering effect, per strategy."""
    doc = common.load_truth(args.config)
    for strategy in sorted({r["strategy"] for r in doc["runs"].values()}):
        runs = common.seed_runs(doc, strategy)
        seeds = sorted(runs)
        mean = common.seed_mean(doc, strategy)
        print(f"{strategy}: seeds {seeds}; seed-mean ACC {100 * mean.min():.1f}-{100 * mean.max():.1f}, "
              f"ordering effect (std of the seed mean) {100 * mean.std():.2f} points")  # fmt: skip
        if len(seeds) < 2:
            continue
        stack = np.stack([runs[s] for s in seeds])
        noise = stack.std(axis=0, ddof=1).mean()
        pairs = [(a, b) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]
        rho = [common.spearman(runs[a], runs[b]) for a, b in pairs]
        r = [float(np.corrcoef(runs[a], runs[b])[0, 1]) for a, b in pairs]
        top = max(1, len(mean) // 100)
        shared = [len(set(np.argsort(-runs[a])[:top]) & set(np.argsort(-runs[b])[:top])) for a, b in pairs]
        print(f"  per-seed noise (mean std over seeds) {100 * noise:.2f} points; seed-to-seed Spearman "
              f"{np.mean(rho):.2f} (pairs {', '.join(f'{x:.2f}' for x in rho)}), Pearson {np.mean(r):.2f}; "
              f"top-1% orderings shared by two seeds: {shared} of {top}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("usage:")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the orderings of one strategy on some seeds (resumes)")
    r.add_argument("--config", choices=sorted(CONFIGS), default="defaults")
    r.add_argument("--strategy", choices=["naive", "ewc"], required=True)
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--population", default=None, help="lockstep K (default: the config's)")
    r.add_argument("--parts", default=str(PARTS))
    r.add_argument("--quick", action="store_true", help="4 tasks, tiny data: a smoke test")
    e = sub.add_parser("estimate", help="time the first orderings of each strategy and project the cost")
    e.add_argument("--config", choices=sorted(CONFIGS), default="defaults")
    e.add_argument("--orderings", type=int, default=40)
    e.add_argument("--workers", type=int, default=2)
    m = sub.add_parser("merge", help="parts → bench/out/ground_truth_mixed-mnist-7_<config>.json.gz")
    m.add_argument("--config", choices=["defaults"], default="defaults")
    m.add_argument("--parts", default=str(PARTS))
    p = sub.add_parser("report", help="seed-to-seed agreement and noise of a merged truth")
    p.add_argument("--config", choices=sorted(CONFIGS), default="defaults")
    args = ap.parse_args(argv)
    {"run": cmd_run, "estimate": cmd_estimate, "merge": cmd_merge, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
