"""`lll run`: train one ordering, print R, record it in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from search.cli.choices import one_of
from search.cli.commands.common import (
    LLLError,
    config_section,
    err,
    load_yaml_config,
    merge,
    out,
    parse_ints,
    parse_options,
    print_rmatrix,
    print_sizes,
    validated,
)
from search.cli.options import BatchSize, Download, Epochs, Heads, Hidden, Lr, Optimizer

RUN_FLAGS = {
    "pool": "--pool",
    "order": "--order",
    "strategy.name": "--strategy",
    "strategy.lam": "--lambda",
    "strategy.options": "--option",
    "seed": "--seed",
    "seeds": "--seeds",
    "train.model": "--model",
    "train.epochs": "--epochs",
    "train.hidden": "--hidden",
    "train.heads": "--heads",
    "train.optimizer": "--optimizer",
    "train.lr": "--lr",
    "train.momentum": "--momentum",
    "train.batch_size": "--batch-size",
    "train.init": "--init",
    "train.clip": "--clip",
    "train.device": "--device",
    "train_per_task": "--train-per-task",
    "test_per_task": "--test-per-task",
    "data_dir": "--data-dir",
    "tracking_uri": "--tracking-uri",
    "experiment": "--experiment",
}


def pool_train_defaults(pool: str | None, data_dir: str | None = None) -> dict[str, Any]:
    """The pool's own training defaults (its YAML's `train:` section), checked; flags and
    --config override them."""
    from pipeline.config import TrainConfig
    from tasks.registry import DEFAULT_POOL, resolve_pool_spec

    spec = resolve_pool_spec(pool or DEFAULT_POOL, data_dir)
    validated(TrainConfig, dict(spec.train), f"pool {spec.name}: train")
    return dict(spec.train)


def preflight_run(cfg: Any, out_path: Path | None) -> None:
    """Catch the usual mistakes (pool, order, data folder, output path, strategy) before any data
    is loaded or model trained: cheapest checks first, so a typo answers in well under a second."""
    from pipeline.models import check_model_name
    from tasks.pool import check_order
    from tasks.registry import resolve_pool_spec
    from tasks.sources import locate_mnist

    spec = resolve_pool_spec(cfg.pool, cfg.data_dir, cfg.train_per_task, cfg.test_per_task)
    if spec.tasks:  # a python source may leave its tasks to the factory
        check_order([t.name for t in spec.tasks], cfg.order, spec.name)
    check_model_name(cfg.train.model)
    if spec.source == "mnist" and cfg.data_dir is not None and not cfg.download:
        locate_mnist(cfg.data_dir)
    if out_path is not None and not out_path.expanduser().resolve().parent.is_dir():
        raise LLLError(f"--out {out_path}: folder {out_path.parent} does not exist; create it or choose another path")
    from pipeline.strategies import make_strategy

    make_strategy(cfg.strategy)


def run(
    pool: Annotated[
        str | None, typer.Option(help="Built-in pool ({pools}) or pool YAML file [default: mixed-mnist]")
    ] = None,
    order: Annotated[str | None, typer.Option(help="Comma-separated task order [default: the pool's]")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(parser=one_of("strategies", "strategy"), help="{strategies} [default: naive]"),
    ] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Strategy strength λ [default: the strategy's]")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Strategy option KEY=VALUE (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="Global seed [default: 0]")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Train on each of these seeds, e.g. 0,1,2; report the mean R (not with --seed)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="{models} | module:function (your own) [default: the pool's, else mlp]")
    ] = None,
    epochs: Epochs = None,
    hidden: Hidden = None,
    heads: Heads = None,
    optimizer: Optimizer = None,
    lr: Lr = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum [default: 0.9]")] = None,
    batch_size: BatchSize = None,
    init: Annotated[str | None, typer.Option(parser=one_of("inits", "--init"), help="{inits} [default: he]")] = None,
    clip: Annotated[float | None, typer.Option(help="Gradient-norm clip, 0 = off [default: 1.0]")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda [default: auto]")] = None,
    train_per_task: Annotated[int | None, typer.Option(help="Training images per task [default: 1000]")] = None,
    test_per_task: Annotated[int | None, typer.Option(help="Test images per task [default: 500]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder with MNIST IDX files (switches to full MNIST)")] = None,
    download: Download = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write R and metrics as JSON here")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI [default: sqlite:///mlflow.db]")] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not record the run in MLflow")] = False,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment [default: lll-run]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with any of these settings")] = None,
) -> None:
    """Train one task ordering with one strategy; print R and ACC/BWT/FWT; record it in MLflow."""
    flags = dict(locals())  # every flag by name: the config file, then the flags, then validation
    cfg = run_config(flags)
    preflight_run(cfg, out_path)
    report_run(cfg, out_path, *execute_run(cfg))


TRAIN_FLAGS = ("model", "epochs", "heads", "optimizer", "lr", "momentum", "batch_size", "init", "device")
RUN_KEYS = ("pool", "seed", "data_dir", "train_per_task", "test_per_task", "tracking_uri", "experiment")


def run_config(f: dict[str, Any]) -> Any:
    """The validated RunConfig of `lll run`'s flags ``f``: the pool's training defaults, overridden
    by the --config file, overridden by the flags."""
    from pipeline.config import RunConfig

    config = f["config"]
    base = load_yaml_config(config)
    where = str(config) if config else "settings"
    strat = merge(config_section(base, "strategy", where, shorthand="name"), name=f["strategy"], lam=f["lam"])
    if f["option"]:
        strat["options"] = {**config_section(strat, "options", where), **parse_options(f["option"])}
    the_pool = f["pool"] or base.get("pool")
    train = merge(
        {
            **pool_train_defaults(the_pool, f["data_dir"] or base.get("data_dir")),
            **config_section(base, "train", where),
        },
        hidden=parse_ints(f["hidden"], "--hidden"),
        **{k: f[k] for k in TRAIN_FLAGS},
    )
    if f["clip"] is not None:
        train["clip"] = f["clip"] if f["clip"] > 0 else None
    order = f["order"]
    order_list = [s.strip() for s in order.split(",") if s.strip()] if order else None
    if isinstance(base.get("order"), str):  # `order: a,b,c` in a config file, as on the command line
        base["order"] = [s.strip() for s in base["order"].split(",") if s.strip()]
    cfg_dict = merge(
        {k: v for k, v in base.items() if k not in ("strategy", "train")},
        order=order_list,
        seeds=parse_ints(f["seeds"], "--seeds"),
        **{k: f[k] for k in RUN_KEYS},
    )
    cfg_dict.update(strategy=strat, train=train, download=f["download"] or base.get("download", False))
    if f["no_track"]:
        cfg_dict["tracking_uri"] = None
    if cfg_dict.get("seeds") is not None and (f["seed"] is not None or "seed" in base):
        raise LLLError("--seed and --seeds both given; use --seeds 0,1,2 alone (or --seed N for one seed)")
    return validated(RunConfig, cfg_dict, where, RUN_FLAGS)


def report_run(cfg: Any, out_path: Path | None, results: list, run_id: str | None) -> None:
    """Print R (or the seed mean), the sizes, write ``--out`` and say where MLflow has the run."""
    import json

    seed_list = cfg.seeds or [cfg.seed]
    result = results[0]
    if len(results) == 1:
        print_rmatrix(result.rmatrix)
        summary = result.rmatrix.to_dict()
    else:
        summary = print_seed_mean(results, seed_list)
    print_sizes(result.rmatrix.tasks, result.sizes)
    if out_path is not None:
        payload = {
            **summary,
            "strategy": cfg.strategy.name,
            "params": {
                "pool": cfg.pool,
                "order": list(result.rmatrix.tasks),
                "lambda": result.strategy.lam,
                "seed": seed_list[0],
                "seeds": seed_list,
                "options": cfg.strategy.options,
                "train": cfg.train.model_dump(mode="json"),
            },
            "sizes": result.sizes,
            "mlflow_run_id": run_id,
        }
        if len(results) > 1:
            payload["per_seed"] = [{"seed": s, **r.rmatrix.to_dict()} for s, r in zip(seed_list, results, strict=True)]
        try:
            out_path.write_text(json.dumps(payload, indent=2))
        except OSError as exc:
            raise LLLError(f"cannot write --out {out_path} ({exc.strerror}); choose another path") from None
        out.print(f"wrote {out_path}")
    if run_id:
        from pipeline.tracking import mask_url

        out.print(f"recorded in MLflow run {run_id} ({mask_url(cfg.tracking_uri)}); browse with: lll ui", markup=False)


def print_seed_mean(results: list, seeds: list[int]) -> dict[str, Any]:
    """The mean R over seeds, the seed-mean metrics (as the search computes them) and each seed's."""
    from pipeline.rmatrix import RMatrix
    from search.study.recording import seed_metrics

    mean = RMatrix.mean([r.rmatrix for r in results])
    print_rmatrix(mean, f"mean R over seeds {','.join(map(str, seeds))}: test accuracy (%)")
    m = seed_metrics([r.rmatrix for r in results])
    each = ", ".join(f"seed {s}: {r.rmatrix.acc() * 100:.2f}" for s, r in zip(seeds, results, strict=True))
    out.print(
        f"seed mean: ACC {m['acc'] * 100:.2f} ± {m['acc_std'] * 100:.2f}   BWT {m['bwt'] * 100:+.2f} ± "
        f"{m['bwt_std'] * 100:.2f}   FWT {m['fwt'] * 100:+.2f}   (ACC per {each})",
        markup=False,
    )
    return {**mean.to_dict(), **m}


def execute_run(cfg):
    """Build the pool, train the ordering on each seed with a progress bar, record it in one
    MLflow run. Returns (results, run_id)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.runner import run_seeds
    from pipeline.strategies import make_strategy
    from pipeline.tracking import check_tracking_uri, prewarm
    from pipeline.workers import WORKER_THREADS
    from search.study.recording import run_result_record, write
    from tasks.registry import load_pool

    make_strategy(cfg.strategy)  # bad strategy/λ/options fail before any data is loaded
    if cfg.tracking_uri:
        check_tracking_uri(cfg.tracking_uri)
        prewarm(cfg.tracking_uri)  # MLflow's store opens while the ordering trains
    the_pool = load_pool(cfg.pool, cfg.data_dir, cfg.download, cfg.train_per_task, cfg.test_per_task)
    order = the_pool.resolve_order(cfg.order)
    if the_pool.note:
        err.print(f"note: {the_pool.note}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        seeds = cfg.seeds or [cfg.seed]
        tasks_bar = progress.add_task("tasks", total=len(order) * len(seeds))
        epochs_bar = progress.add_task("epochs", total=cfg.train.epochs)

        def on_epoch(name: str, e: int) -> None:
            progress.update(epochs_bar, completed=e, description=f"epochs of {name}")

        done = iter(range(1, len(order) * len(seeds) + 1))

        def on_task(s: int, i: int, name: str, row: dict) -> None:
            at = f"seed {s}: " if len(seeds) > 1 else ""
            progress.update(tasks_bar, completed=next(done), description=f"{at}tasks (last: {name})")
            progress.reset(epochs_bar, total=cfg.train.epochs)

        # The search's own path (units, lockstep where the strategy stacks, the seeds side by side)
        # with a search worker's one intra-op thread (the CNN's kernels round differently with
        # more), so an exported rerun gives the search's R bit for bit.
        threads = torch.get_num_threads()
        torch.set_num_threads(WORKER_THREADS)
        try:
            results = run_seeds(the_pool, order, cfg.strategy, cfg.train, seeds, on_task=on_task, on_epoch=on_epoch)
        finally:
            torch.set_num_threads(threads)
    run_id = None
    if cfg.tracking_uri:
        name = f"{cfg.strategy.name} {','.join(order)}"
        rec = run_result_record(cfg.experiment, name, the_pool, order, cfg.strategy, cfg.train, seeds, results)
        run_id = write(cfg.tracking_uri, rec)
    return results, run_id
