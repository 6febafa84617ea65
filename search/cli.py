"""The `lll` command line. Every subcommand runs offline on one machine with its defaults.

Bad input never shows a traceback: it is one line ``error: <problem>; <fix>`` and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from tasks.errors import LLLError

HEADS_HELP = "shared | per-task | growing (class-incremental) [default: the pool's]"
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="lll: which task order makes a continual learner forget least? Train, measure, search.",
)
out = Console()
err = Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
def load_yaml_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LLLError(f"cannot read config {path}: {exc.strerror}; check the --config path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        why = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
        raise LLLError(f"config {path} is not valid YAML{at}{why}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LLLError(f"config {path} must be a YAML mapping of settings")
    return data


def validated(model: type[BaseModel], data: dict[str, Any], where: str, flags: dict[str, str] | None = None) -> Any:
    """Validate settings. The first problem becomes one line naming the flag that sets it (from
    ``flags``: setting path → flag) or else the setting's path in ``where``, and the fix."""
    from tasks.pool import explain_validation_error, first_error

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        path, problem = explain_validation_error(exc, model, data)
        flag = (flags or {}).get(".".join(str(p) for p in first_error(exc)["loc"]))
        if flag is None:
            raise LLLError(f"{where}: {path}: {problem}") from None
        also = f" (or `{path}` in {where})" if where != "settings" else ""
        raise LLLError(f"{flag}{also}: {problem}") from None


class OneLineUsageErrors(typer.core.TyperCommand):
    """Typer's own usage errors (unknown option, bad value, extra argument) as one ``error:`` line
    with exit code 2, like every other bad input, instead of a usage box."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            if not hasattr(exc, "format_message") or type(exc).__name__ == "NoArgsIsHelpError":
                raise
            raise LLLError(f"{exc.format_message()}; see `lll {ctx.info_name} --help`") from None


def config_section(base: dict[str, Any], key: str, where: str, shorthand: str | None = None) -> dict[str, Any]:
    """A nested mapping of a config file (``strategy:``, ``train:``); ``key: value`` alone means
    ``{shorthand: value}`` when a shorthand is given (``strategy: ewc``)."""
    value = base.get(key)
    if value is None:
        return {}
    if shorthand is not None and isinstance(value, str):
        return {shorthand: value}
    if not isinstance(value, dict):
        raise LLLError(f"{where}: `{key}:` must be a mapping of settings (got {value!r}); see `lll run --help`")
    return dict(value)


def merge(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Flags override the config file; a flag left at None keeps the file's (or default) value."""
    outd = dict(base)
    for k, v in overrides.items():
        if v is not None:
            outd[k] = v
    return outd


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``--option memory_size=200`` → {"memory_size": 200} (values parsed as YAML scalars)."""
    opts: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise LLLError(f"--option {item!r} must look like KEY=VALUE, e.g. --option memory_size=200")
        k, v = item.split("=", 1)
        try:  # safe_load: a `!!python/...` tag is refused, never run
            opts[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None) or type(exc).__name__
            raise LLLError(f"--option {item!r}: the value is not a plain YAML scalar or list ({why})") from None
    return opts


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise LLLError(f"{flag} takes comma-separated integers, e.g. {flag} 50,50,50") from None


def print_rmatrix(r) -> None:
    table = Table(title="R: test accuracy (%) — rows: after training, columns: task tested")
    table.add_column("", style="bold")
    for t in r.tasks:
        table.add_column(t, justify="right")
    for label, row in zip(r.row_labels(), r.values, strict=True):
        table.add_row(label, *[f"{v * 100:.1f}" for v in row])
    out.print(table)
    m = r.metrics()
    out.print(
        f"ACC {m['acc'] * 100:.2f}   BWT {m['bwt'] * 100:+.2f}   FWT {m['fwt'] * 100:+.2f}   "
        f"forgetting {m['forgetting'] * 100:.2f}   (percentage points)"
    )


def print_sizes(tasks, sizes: list[dict[str, int]]) -> None:
    """Parameter efficiency: model size and stored strategy state after each task."""
    if not sizes:
        return
    cells = [
        f"{t}: {s['params']:,} params, {s['stored_bytes'] / 1024:,.0f} KiB stored"
        for t, s in zip(tasks, sizes, strict=False)
    ]
    out.print("after each task — " + "; ".join(cells))


# ---------------------------------------------------------------------------------------------
# lll pools
# ---------------------------------------------------------------------------------------------
@app.command(cls=OneLineUsageErrors)
def pools() -> None:
    """List the built-in task pools (any pool can also be a YAML file: see README)."""
    from tasks.registry import BUILTIN_POOLS, DEFAULT_POOL, builtin_spec

    table = Table(title="Built-in task pools")
    for col in ("pool", "tasks", "source", "heads", "description"):
        table.add_column(col)
    for name in BUILTIN_POOLS:
        spec = builtin_spec(name)
        label = f"{name} (default)" if name == DEFAULT_POOL else name
        table.add_row(label, ", ".join(t.name for t in spec.tasks), spec.source, spec.heads, spec.description)
    out.print(table)


# ---------------------------------------------------------------------------------------------
# lll run
# ---------------------------------------------------------------------------------------------
RUN_FLAGS = {
    "pool": "--pool",
    "order": "--order",
    "strategy.name": "--strategy",
    "strategy.lam": "--lambda",
    "strategy.options": "--option",
    "seed": "--seed",
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


def preflight_run(cfg: Any, out_path: Path | None) -> None:
    """Catch the usual mistakes (pool, order, data folder, output path, strategy) before any data
    is loaded or model trained: cheapest checks first, so a typo answers in well under a second."""
    from tasks.pool import check_order
    from tasks.registry import resolve_pool_spec
    from tasks.sources import locate_mnist

    spec = resolve_pool_spec(cfg.pool, cfg.data_dir, cfg.train_per_task, cfg.test_per_task)
    check_order([t.name for t in spec.tasks], cfg.order, spec.name)
    if spec.source == "mnist" and cfg.data_dir is not None and not cfg.download:
        locate_mnist(cfg.data_dir)
    if out_path is not None and not out_path.expanduser().resolve().parent.is_dir():
        raise LLLError(f"--out {out_path}: folder {out_path.parent} does not exist; create it or choose another path")
    from pipeline.strategies import make_strategy

    make_strategy(cfg.strategy)


@app.command(cls=OneLineUsageErrors)
def run(
    pool: Annotated[
        str | None, typer.Option(help="Built-in pool name or pool YAML file [default: mixed-mnist]")
    ] = None,
    order: Annotated[str | None, typer.Option(help="Comma-separated task order [default: the pool's]")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="naive, joint, l2, ewc, online-ewc, si, mas, gem, agem, lwf, replay")
    ] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Strategy strength λ [default: the strategy's]")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Strategy option KEY=VALUE (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="Global seed [default: 0]")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per task [default: 10]")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden sizes, e.g. 50,50,50")] = None,
    heads: Annotated[str | None, typer.Option(help=HEADS_HELP)] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd | adam [default: sgd]")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate [default: 0.01]")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum [default: 0.9]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [default: 32]")] = None,
    init: Annotated[str | None, typer.Option(help="he | torch [default: he]")] = None,
    clip: Annotated[float | None, typer.Option(help="Gradient-norm clip, 0 = off [default: 1.0]")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda [default: auto]")] = None,
    train_per_task: Annotated[int | None, typer.Option(help="Training images per task [default: 1000]")] = None,
    test_per_task: Annotated[int | None, typer.Option(help="Test images per task [default: 500]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder with MNIST IDX files (switches to full MNIST)")] = None,
    download: Annotated[bool, typer.Option(help="Download MNIST into --data-dir when missing")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write R and metrics as JSON here")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI [default: sqlite:///mlflow.db]")] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not record the run in MLflow")] = False,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment [default: lll-run]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with any of these settings")] = None,
) -> None:
    """Train one task ordering with one strategy; print R and ACC/BWT/FWT; record it in MLflow."""
    import json

    from pipeline.config import RunConfig

    base = load_yaml_config(config)
    where = str(config) if config else "settings"
    strat = merge(config_section(base, "strategy", where, shorthand="name"), name=strategy, lam=lam)
    if option:
        strat["options"] = {**config_section(strat, "options", where), **parse_options(option)}
    hidden_sizes = parse_ints(hidden, "--hidden")
    train = merge(
        config_section(base, "train", where),
        epochs=epochs,
        hidden=hidden_sizes,
        heads=heads,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        init=init,
        device=device,
    )
    if clip is not None:
        train["clip"] = clip if clip > 0 else None
    order_list = [s.strip() for s in order.split(",") if s.strip()] if order else None
    if isinstance(base.get("order"), str):  # `order: a,b,c` in a config file, as on the command line
        base["order"] = [s.strip() for s in base["order"].split(",") if s.strip()]
    cfg_dict = merge(
        {k: v for k, v in base.items() if k not in ("strategy", "train")},
        pool=pool,
        order=order_list,
        seed=seed,
        data_dir=data_dir,
        train_per_task=train_per_task,
        test_per_task=test_per_task,
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    cfg_dict.update(strategy=strat, train=train, download=download or base.get("download", False))
    if no_track:
        cfg_dict["tracking_uri"] = None
    cfg = validated(RunConfig, cfg_dict, where, RUN_FLAGS)
    preflight_run(cfg, out_path)
    result, run_id = execute_run(cfg)
    print_rmatrix(result.rmatrix)
    print_sizes(result.rmatrix.tasks, result.sizes)
    if out_path is not None:
        payload = {
            **result.rmatrix.to_dict(),
            "strategy": cfg.strategy.name,
            "params": {
                "pool": cfg.pool,
                "order": list(result.rmatrix.tasks),
                "lambda": result.strategy.lam,
                "seed": cfg.seed,
                "options": cfg.strategy.options,
                "train": cfg.train.model_dump(mode="json"),
            },
            "sizes": result.sizes,
            "mlflow_run_id": run_id,
        }
        try:
            out_path.write_text(json.dumps(payload, indent=2))
        except OSError as exc:
            raise LLLError(f"cannot write --out {out_path} ({exc.strerror}); choose another path") from None
        out.print(f"wrote {out_path}")
    if run_id:
        from pipeline.tracking import mask_url

        out.print(f"recorded in MLflow run {run_id} ({mask_url(cfg.tracking_uri)}); browse with: lll ui", markup=False)


def execute_run(cfg):
    """Build the pool, train the ordering with a progress bar, record it. Returns (result, run_id)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.runner import run_ordering
    from pipeline.strategies import make_strategy
    from pipeline.tracking import check_tracking_uri
    from pipeline.trial import record_result, trial_params
    from tasks.registry import load_pool

    make_strategy(cfg.strategy)  # bad strategy/λ/options fail before any data is loaded
    if cfg.tracking_uri:
        check_tracking_uri(cfg.tracking_uri)
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
        tasks_bar = progress.add_task("tasks", total=len(order))
        epochs_bar = progress.add_task("epochs", total=cfg.train.epochs)

        def on_epoch(name: str, e: int) -> None:
            progress.update(epochs_bar, completed=e, description=f"epochs of {name}")

        def on_task(i: int, name: str, row: dict) -> None:
            progress.update(tasks_bar, completed=i, description=f"tasks (last: {name})")
            progress.reset(epochs_bar, total=cfg.train.epochs)

        result = run_ordering(the_pool, order, cfg.strategy, cfg.train, cfg.seed, on_task=on_task, on_epoch=on_epoch)
    run_id = None
    if cfg.tracking_uri:
        params = trial_params(the_pool, order, cfg.strategy, cfg.train, cfg.seed)
        params["lambda"] = result.strategy.lam
        run_id = record_result(
            cfg.tracking_uri, cfg.experiment, f"{cfg.strategy.name} {','.join(order)}", result, params
        )
    return result, run_id


# ---------------------------------------------------------------------------------------------
# lll search / export / report / ui
# ---------------------------------------------------------------------------------------------
def parse_strategy_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--option ewc:fisher_samples=500`` → {"ewc": {"fisher_samples": 500}}."""
    outd: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if ":" not in item.split("=", 1)[0]:
            raise LLLError(f"--option {item!r} must look like STRATEGY:KEY=VALUE, e.g. --option replay:memory_size=200")
        name, kv = item.split(":", 1)
        outd.setdefault(name.strip(), {}).update(parse_options([kv]))
    return outd


@app.command(cls=OneLineUsageErrors)
def search(
    pool: Annotated[str | None, typer.Option(help="Pool name or YAML file [default: mixed-mnist]")] = None,
    strategies: Annotated[str | None, typer.Option(help="Comma-separated strategies [default: ewc,si,agem]")] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Fix λ (otherwise searched per strategy)")] = None,
    option: Annotated[list[str] | None, typer.Option(help="STRATEGY:KEY=VALUE (repeatable)")] = None,
    objective: Annotated[str | None, typer.Option(help="acc | bwt | both (Pareto) [default: acc]")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in the study [default: 24; exhaustive: T!]")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop starting trials after S seconds")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray worker actors [default: one per CPU]")] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker actor")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per worker (fractions share a GPU)")] = 0.0,
    seeds: Annotated[int | None, typer.Option(help="Seeds per candidate (objective = mean) [default: 2]")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed of sampler and training [default: 0]")] = None,
    study: Annotated[str | None, typer.Option(help="Study name [default: POOL-DATE-TIME]")] = None,
    storage: Annotated[str, typer.Option(help="Optuna storage (SQLAlchemy URL)")] = "sqlite:///optuna.db",
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI")] = "sqlite:///mlflow.db",
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (HOST:PORT)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue --study where it stopped")] = False,
    exhaustive: Annotated[bool, typer.Option(help="Every ordering of a small pool (T ≤ 7)")] = False,
    prune: Annotated[bool, typer.Option(help="Stop clearly worse orderings early")] = True,
    cache_mb: Annotated[int, typer.Option(help="Per-worker prefix cache size in MiB (0 = off)")] = 1024,
    checkpoints: Annotated[str | None, typer.Option(help="all | final | none [default: final]")] = None,
    order: Annotated[str | None, typer.Option(help="Fix the order; search strategies/λ only")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per task [default: 10]")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden sizes, e.g. 50,50,50")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate [default: 0.01]")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd | adam [default: sgd]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [default: 32]")] = None,
    heads: Annotated[str | None, typer.Option(help=HEADS_HELP)] = None,
    train_per_task: Annotated[int | None, typer.Option(help="Training images per task")] = None,
    test_per_task: Annotated[int | None, typer.Option(help="Test images per task")] = None,
    data_dir: Annotated[str | None, typer.Option(help="MNIST IDX folder (full MNIST)")] = None,
    download: Annotated[bool, typer.Option(help="Download MNIST into --data-dir when missing")] = False,
    seed_from_graph: Annotated[
        bool, typer.Option(help="Measure the task-affinity graph first; try its best orderings first")
    ] = False,
) -> None:
    """Search task orderings × strategy × λ with Optuna on Ray workers; record every trial in MLflow."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from search.launch import SearchRequest, prepare, run_search

    if objective is not None and objective not in ("acc", "bwt", "both"):
        raise LLLError(f"--objective {objective!r} is not one of acc, bwt, both")
    if checkpoints is not None and checkpoints not in ("all", "final", "none"):
        raise LLLError(f"--checkpoints {checkpoints!r} is not one of all, final, none")
    if trials is not None and trials < 1:
        raise LLLError("--trials must be at least 1")
    if seeds is not None and seeds < 1:
        raise LLLError("--seeds must be at least 1")
    train = merge(
        {},
        epochs=epochs,
        hidden=parse_ints(hidden, "--hidden"),
        lr=lr,
        optimizer=optimizer,
        batch_size=batch_size,
        heads=heads,
    )
    from pipeline.config import TrainConfig

    validated(TrainConfig, train, "settings")
    req = SearchRequest(
        pool=pool,
        strategies=[s.strip() for s in strategies.split(",") if s.strip()] if strategies else None,
        lam=lam,
        options=parse_strategy_options(option),
        objective=objective,
        trials=trials,
        time_budget=time_budget,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        seeds=seeds,
        seed=seed,
        study=study,
        storage=storage,
        tracking_uri=tracking_uri,
        ray_address=ray_address,
        resume=resume,
        exhaustive=exhaustive,
        prune=prune,
        checkpoints=checkpoints,
        train=train,
        data_dir=data_dir,
        download=download,
        train_per_task=train_per_task,
        test_per_task=test_per_task,
        order=[s.strip() for s in order.split(",")] if order else None,
        cache_mb=cache_mb,
        seed_from_graph=seed_from_graph,
    )
    if seed_from_graph:
        err.print("measuring the task-affinity graph (every single task and pair) to seed the study ...")
    prepared = prepare(req)  # every check that can fail does so before the progress bar and Ray start
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        bar = progress.add_task("trials", total=None)

        def on_progress(p: dict) -> None:
            best = ""
            if p["best_acc"] is not None:
                best = f"best ACC {p['best_acc'] * 100:.1f} BWT {p['best_bwt'] * 100:+.1f}"
            total = p["total"] if p["total"] < 10**6 else None
            progress.update(
                bar,
                completed=p["done"],
                total=total,
                description=f"trials ({best}{', pruned ' + str(p['pruned']) if p['pruned'] else ''})",
            )

        the_study, summary, rec = run_search(req, on_progress, prepared)
    print_search_summary(the_study.study_name, summary, rec, tracking_uri, storage)


def print_search_summary(name: str, summary, rec: dict | None, tracking_uri: str, storage: str) -> None:
    s = summary
    out.print(
        f"study {name}: {s.complete} complete, {s.pruned} pruned, {s.failed} failed"
        + (f", {s.retried} retried after a lost worker" if s.retried else "")
        + (
            f", {s.recovered} recovered and {s.requeued} re-queued from the interrupted run"
            if s.recovered or s.requeued
            else ""
        )
        + f" in {s.seconds:.0f} s"
    )
    total = s.trained + s.reused
    if total:
        out.print(
            f"task-trainings: {s.trained} run, {s.reused} reused from the prefix cache "
            f"({s.reused / total * 100:.0f}% saved), {s.saved_by_pruning} skipped by pruning"
        )
    for f in s.failures[:5]:
        out.print(f"  failed: {f}", markup=False)
    if rec is not None:
        lam = rec["params"].get("lambda")
        how = rec["strategy"] if lam is None else f"{rec['strategy']}, λ={lam:g}"
        out.print(f"recommended order: {' → '.join(rec['order'])}  ({how})")
        std = f" ± {rec['acc_std'] * 100:.1f}" if rec.get("acc_std") else ""
        out.print(f"  ACC {rec['acc'] * 100:.2f}{std}   BWT {rec['bwt'] * 100:+.2f}   FWT {rec['fwt'] * 100:+.2f}")
        out.print(f"  {rec['confidence']['note']}", markup=False)
        out.print(f"  re-run it: {rec['rerun']}", markup=False, soft_wrap=True)
    from pipeline.tracking import mask_url

    # Commands are printed unwrapped (soft_wrap) so that they can be copied whole.
    extra = "" if storage == "sqlite:///optuna.db" else f" --storage '{mask_url(storage)}'"
    out.print(f"export it: lll export --study {name}{extra} --out order.json", markup=False, soft_wrap=True)
    out.print(f"browse runs: lll ui --study {name}{extra}", markup=False, soft_wrap=True)
    out.print(f"resume/extend: lll search --study {name}{extra} --resume --trials N", markup=False, soft_wrap=True)


def _open_study(study: str, storage: str):
    from search.study import load_study, open_storage

    return load_study(study, open_storage(storage))


@app.command(cls=OneLineUsageErrors)
def export(
    study: Annotated[str, typer.Option(help="Study name")],
    storage: Annotated[str, typer.Option(help="Optuna storage URL")] = "sqlite:///optuna.db",
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the recommendation JSON here")] = None,
) -> None:
    """Write the recommended task order of a study (with its Pareto alternatives) as JSON."""
    import json

    from search.recommend import recommendation

    rec = recommendation(_open_study(study, storage))
    text = json.dumps(rec, indent=2)
    if out_path is None:
        out.print_json(text)
    else:
        out_path.write_text(text)
        out.print(f"wrote {out_path}: {' → '.join(rec['order'])} ({rec['strategy']}), ACC {rec['acc'] * 100:.2f}")


@app.command(cls=OneLineUsageErrors)
def report(
    study: Annotated[str, typer.Option(help="Study name")],
    storage: Annotated[str, typer.Option(help="Optuna storage URL")] = "sqlite:///optuna.db",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the plots")] = Path("report"),
) -> None:
    """Draw a study's plots (Pareto front, ACC distribution, history, recommended R) to a folder."""
    from search.report import write_report

    files = write_report(_open_study(study, storage), out_dir)
    for f in files:
        out.print(f"wrote {f}")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow ui`` command and environment `lll ui` runs.

    The store URI goes through the environment (MLFLOW_BACKEND_STORE_URI), not argv, so a database
    password never shows in ``ps``; MLflow's background job runners (not used by lll) stay off,
    which saves seven processes and half the start-up time."""
    import os
    import shutil

    exe = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return [exe, "ui", "--host", host, "--port", str(port), "--workers", "1"], env


def ui_store(study: str | None, storage: str, tracking_uri: str | None) -> str:
    """The tracking store to browse: --tracking-uri, else the one the study logged to, else the default."""
    from pipeline.tracking import DEFAULT_TRACKING_URI, mask_url, sqlite_path

    uri = tracking_uri
    if study is not None and uri is None:
        settings = _open_study(study, storage).user_attrs
        if settings.get("tracking_uri_masked"):
            raise LLLError(
                f"study {study!r} logged to {settings.get('tracking_uri')}, which needs a password; "
                "pass it with --tracking-uri"
            )
        if "tracking_uri" in settings and not settings["tracking_uri"]:
            raise LLLError(f"study {study!r} was run without MLflow tracking; there are no runs to browse")
        uri = settings.get("tracking_uri")
    uri = uri or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if db is not None and not db.expanduser().is_file():
        raise LLLError(
            f"no MLflow store at {db} (from {mask_url(uri)}); run `lll ui` in the folder the search ran in, "
            "or pass --tracking-uri sqlite:///PATH/mlflow.db"
        )
    return uri


def study_runs_url(uri: str, study: str, host: str, port: int) -> str:
    """The UI page listing a study's runs. MLflow 3 opens on its GenAI view unless asked for the
    model-training one (``workflowType=machine_learning``), where runs are."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_experiment_by_name(study)
    page = f"#/experiments/{exp.experiment_id}/runs" if exp is not None else "#/experiments"
    return f"http://{host}:{port}/{page}?workflowType=machine_learning"


@app.command(cls=OneLineUsageErrors)
def ui(
    study: Annotated[str | None, typer.Option(help="Open the MLflow store this study logged to")] = None,
    storage: Annotated[str, typer.Option(help="Optuna storage URL (with --study)")] = "sqlite:///optuna.db",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store [default: sqlite:///mlflow.db]")] = None,
    host: Annotated[str, typer.Option(help="Bind address (127.0.0.1 keeps it private)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 5000,
) -> None:
    """Open the MLflow UI on the store a study used (default: the embedded sqlite:///mlflow.db)."""
    import socket
    import subprocess

    from pipeline.tracking import mask_url

    uri = ui_store(study, storage, tracking_uri)
    if uri.startswith(("http://", "https://")):
        out.print(f"study runs are on the tracking server: open {mask_url(uri)} in a browser", markup=False)
        return
    try:  # a busy port fails here, in one line, not in a uvicorn traceback
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        raise LLLError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from None
    if host not in LOOPBACK:
        err.print(
            f"warning: the MLflow UI on {host} is reachable from other machines and has no login; "
            "prefer --host 127.0.0.1 with an SSH tunnel",
            markup=False,
        )
    cmd, env = ui_command(uri, host, port)
    out.print(f"MLflow UI for {mask_url(uri)} at http://{host}:{port} (Ctrl-C to stop)", markup=False, soft_wrap=True)
    if study is not None:
        out.print(f"runs of study {study}: {study_runs_url(uri, study, host, port)}", markup=False, soft_wrap=True)
    try:
        raise SystemExit(subprocess.call(cmd, env=env))
    except FileNotFoundError:
        raise LLLError("the `mlflow` command is not installed in this environment; pip install mlflow") from None


# ---------------------------------------------------------------------------------------------
# lll affinity
# ---------------------------------------------------------------------------------------------
@app.command(cls=OneLineUsageErrors)
def affinity(
    pool: Annotated[str | None, typer.Option(help="Pool name or YAML file [default: mixed-mnist]")] = None,
    study: Annotated[str | None, typer.Option(help="Take pool/settings from this study; harvest its trials")] = None,
    storage: Annotated[str, typer.Option(help="Optuna storage URL (with --study)")] = "sqlite:///optuna.db",
    out_path: Annotated[Path, typer.Option("--out", help="GraphML file (a PNG is written beside it)")] = Path(
        "affinity.graphml"
    ),
    recommend: Annotated[bool, typer.Option(help="Print the best-scoring ordering and its score")] = False,
    strategy: Annotated[str | None, typer.Option(help="Strategy to measure with [default: naive / study's]")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds to measure [default: 1 / the study's]")] = None,
    seed: Annotated[int | None, typer.Option(help="First seed [default: 0 / the study's]")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray worker actors [default: one per CPU]")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per task [default: 10 / the study's]")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store [default: the study's; none without]")] = None,
    measure: Annotated[bool, typer.Option(help="Run the single/pair orderings (--no-measure: study only)")] = True,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (HOST:PORT)")] = None,
    data_dir: Annotated[str | None, typer.Option(help="MNIST IDX folder (full MNIST)")] = None,
    top: Annotated[int, typer.Option(help="How many orderings --recommend lists")] = 3,
) -> None:
    """Measure how tasks help (transfer) or hurt (interference) each other; write the task-affinity
    graph as GraphML + PNG; with --recommend, the ordering the graph scores best."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.affinity_runs import AffinityRequest, prepare_affinity, run_affinity, summary_lines

    req = AffinityRequest(
        pool=pool,
        study=study,
        storage=storage,
        out=str(out_path),
        strategy=strategy,
        seeds=seeds,
        seed=seed,
        workers=workers,
        epochs=epochs,
        tracking_uri=tracking_uri,
        measure=measure,
        ray_address=ray_address,
        data_dir=data_dir,
        top=top,
    )
    prepared = prepare_affinity(req)  # bad input fails here, before the progress bar and Ray start
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("affinity runs", total=None)

        def on_progress(done: int, total: int, what: str) -> None:
            progress.update(bar, completed=done, total=total, description=f"affinity runs (last: {what})")

        result = run_affinity(req, on_progress, prepared)
    for line in summary_lines(result, recommend):
        out.print(line, markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def main() -> None:
    try:
        app(standalone_mode=True)
    except LLLError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; everything already recorded is kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
