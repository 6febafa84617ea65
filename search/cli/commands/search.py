"""`lll search`: the curriculum search (Optuna on Ray workers, recorded in MLflow)."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Annotated, Any

import typer

from search.cli.choices import list_of, one_of
from search.cli.commands.common import HEADS_HELP, LLLError, err, merge, out, parse_ints, parse_options, validated


def parse_strategy_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--option ewc:fisher_samples=500`` → {"ewc": {"fisher_samples": 500}}."""
    outd: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if ":" not in item.split("=", 1)[0]:
            raise LLLError(f"--option {item!r} must look like STRATEGY:KEY=VALUE, e.g. --option replay:memory_size=200")
        name, kv = item.split(":", 1)
        outd.setdefault(name.strip(), {}).update(parse_options([kv]))
    return outd


def search(
    pool: Annotated[str | None, typer.Option(help="Pool ({pools}) or YAML file [default: mixed-mnist]")] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            parser=list_of("strategies", "strategy"), help="Comma-separated: {strategies} [default: ewc,si,agem]"
        ),
    ] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Fix λ (otherwise searched per strategy)")] = None,
    option: Annotated[list[str] | None, typer.Option(help="STRATEGY:KEY=VALUE (repeatable)")] = None,
    objective: Annotated[
        str | None,
        typer.Option(parser=one_of("objectives", "--objective"), help="{objectives} (both: Pareto) [default: acc]"),
    ] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in the study [default: 24; exhaustive: T!]")] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="Stop starting trials S s after start (wall clock, worker boot included)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Ray worker actors [default: one per CPU]")] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker actor")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per worker (fractions share a GPU)")] = 0.0,
    seeds: Annotated[int | None, typer.Option(help="Seeds per candidate (objective = mean) [default: 2]")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed of sampler and training [default: 0]")] = None,
    study: Annotated[str | None, typer.Option(help="Study name [default: POOL-DATE-TIME]")] = None,
    storage: Annotated[
        str, typer.Option(help="Optuna storage: journal:///FILE or a SQLAlchemy URL")
    ] = "journal:///optuna.journal",
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI")] = "sqlite:///mlflow.db",
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (HOST:PORT)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue --study where it stopped")] = False,
    exhaustive: Annotated[bool, typer.Option(help="Every ordering of a small pool (T ≤ 7)")] = False,
    prune: Annotated[bool, typer.Option(help="Stop clearly worse orderings early")] = True,
    cache_mb: Annotated[int, typer.Option(help="Per-worker prefix cache size in MiB (0 = off)")] = 1024,
    checkpoints: Annotated[
        str | None, typer.Option(parser=one_of("checkpoints", "--checkpoints"), help="{checkpoints} [default: final]")
    ] = None,
    order: Annotated[str | None, typer.Option(help="Fix the order; search strategies/λ only")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per task [default: 10]")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden sizes, e.g. 50,50,50")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate [default: 0.01]")] = None,
    optimizer: Annotated[
        str | None, typer.Option(parser=one_of("optimizers", "--optimizer"), help="{optimizers} [default: sgd]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [default: 32]")] = None,
    heads: Annotated[str | None, typer.Option(parser=one_of("heads", "--heads"), help=HEADS_HELP)] = None,
    model: Annotated[
        str | None, typer.Option(help="{models} | module:function [default: the pool's, else mlp]")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Where workers train: auto | cpu | cuda | cuda:N [default: auto]")
    ] = None,
    train_per_task: Annotated[int | None, typer.Option(help="Training images per task")] = None,
    test_per_task: Annotated[int | None, typer.Option(help="Test images per task")] = None,
    data_dir: Annotated[str | None, typer.Option(help="MNIST IDX folder (full MNIST)")] = None,
    download: Annotated[bool, typer.Option(help="Download MNIST into --data-dir when missing")] = False,
    seed_from_graph: Annotated[
        bool, typer.Option(help="Measure the task-affinity graph first; try its best orderings first")
    ] = False,
    population: Annotated[
        str | None,
        typer.Option(help="Task-trainings a worker trains at once as one stacked model (K), or auto [default: auto]"),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(
            parser=one_of("samplers", "--sampler"),
            help="{samplers} (model: a GP over orderings) [default: model; both: tpe; resume: stored]",
        ),
    ] = None,
    validate: Annotated[
        int | None,
        typer.Option(help="At the end, retrain the top K orderings on held-out seeds (0 = off; try 3) [default: 0]"),
    ] = 0,
    heldout_seeds: Annotated[
        str | None, typer.Option(help="Held-out seeds for --validate, e.g. 100,101,102 [default: 3 unused seeds]")
    ] = None,
) -> None:
    """Search task orderings × strategy × λ with Optuna on Ray workers; record every trial in MLflow."""
    from search.study.launch import SearchRequest, prepare, run_search

    if sampler is not None:
        from search.study.storage import check_sampler

        check_sampler(sampler, objective or "acc")
    if trials is not None and trials < 1:
        raise LLLError("--trials must be at least 1")
    if seeds is not None and seeds < 1:
        raise LLLError("--seeds must be at least 1")
    train = merge(
        {},
        model=model,
        epochs=epochs,
        hidden=parse_ints(hidden, "--hidden"),
        lr=lr,
        optimizer=optimizer,
        batch_size=batch_size,
        heads=heads,
        device=device,
    )
    from pipeline.config import TrainConfig

    validated(TrainConfig, train, "settings")
    if device is not None and not ray_address:  # local workers see this machine's GPUs
        from pipeline.train import pick_device

        pick_device(device)
    if not resume:  # a new study starts from the pool's training defaults; flags override them
        from search.cli.commands.run import pool_train_defaults

        train = {**pool_train_defaults(pool, data_dir), **train}
        from pipeline.models import check_model_name

        check_model_name(train.get("model"))  # imported now: fails before Ray, and is shipped to workers
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
        population=population,
        sampler=sampler,
        validate=validate,
        heldout_seeds=parse_ints(heldout_seeds, "--heldout-seeds"),
    )
    if seed_from_graph:
        err.print("measuring the task-affinity graph (every single task and pair) to seed the study ...")
    prepared = prepare(req)  # every check that can fail does so before the progress bar and Ray start
    with search_progress() as on_progress:
        the_study, summary, rec = run_search(req, on_progress, prepared)
    print_search_summary(the_study.study_name, summary, rec, tracking_uri, storage)


def progress_text(p: dict) -> str:
    """``best-ACC Pareto trial #12: ACC 66.9 BWT -2.8, pruned 3``: one trial's OWN ACC and BWT."""
    parts = []
    if p["best_acc"] is not None:
        parts.append(
            f"{p['best_label']} #{p['best_trial']}: ACC {p['best_acc'] * 100:.1f} BWT {p['best_bwt'] * 100:+.1f}"
        )
    if p["pruned"]:
        parts.append(f"pruned {p['pruned']}")
    if p["failed"]:
        parts.append(f"failed {p['failed']}")
    return ", ".join(parts)


class PlainProgress:
    """Progress for logs (stderr not a terminal: CI, nohup, a pipe): one plain line every
    ``every`` trials or ``seconds`` seconds, and one at the end."""

    def __init__(self, every: int | None = None, seconds: float = 30.0) -> None:
        import time

        self.every, self.seconds, self.clock = every, seconds, time.monotonic
        self.last_done, self.last_time = -1, self.clock()
        self.last: dict | None = None

    def __call__(self, p: dict) -> None:
        """``every`` defaults to a tenth of the budget, between 1 and 10 trials."""
        self.last = p
        every = self.every or max(1, min(10, p["total"] // 10))
        if self.last_done < 0 or p["done"] - self.last_done >= every or self.clock() - self.last_time >= self.seconds:
            self.emit(p)

    def emit(self, p: dict) -> None:
        total = f"/{p['total']}" if p["total"] < 10**6 else ""
        extra = progress_text(p)
        err.print(
            f"trials {p['done']}{total} after {p.get('elapsed', 0):.0f} s" + (f" ({extra})" if extra else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        self.last_done, self.last_time = p["done"], self.clock()

    def close(self) -> None:
        if self.last is not None and self.last["done"] != self.last_done:
            self.emit(self.last)


@contextlib.contextmanager
def search_progress():
    """A progress bar on a terminal; plain periodic lines otherwise (see :class:`PlainProgress`)."""
    if not err.is_terminal:
        plain = PlainProgress()
        try:
            yield plain
        finally:
            plain.close()
        return
    from rich import progress as rp

    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TimeElapsedColumn())
    eta = (rp.TextColumn("ETA"), rp.TimeRemainingColumn())
    with rp.Progress(*columns, *eta, console=err, transient=False) as progress:
        bar = progress.add_task("trials", total=None)

        def on_progress(p: dict) -> None:
            extra = progress_text(p)
            total = p["total"] if p["total"] < 10**6 else None
            desc = f"trials ({extra})" if extra else "trials"
            progress.update(bar, completed=p["done"], total=total, description=desc)

        yield on_progress


def workers_line(infos: list[dict]) -> str | None:
    """Which device and population K ran, and whether K was reduced to fit memory."""
    if not infos:
        return None
    kinds = Counter((str(i.get("device", "?")), int(i.get("population", 1))) for i in infos)
    ran = ", ".join(f"{n} on {d} with K={k}" for (d, k), n in sorted(kinds.items()))
    notes = sorted({str(i["population_note"]) for i in infos if "reduced" in str(i.get("population_note", ""))})
    return f"workers: {ran} (K = task-trainings trained at once)" + (f"; {notes[0]}" if notes else "")


def timing_line(t: dict[str, float]) -> str:
    """Where the command's time went, on the driver's main thread: start-up (process start until
    every worker is ready: Ray, workers importing torch and loading the pool, the study, the MLflow
    run), Optuna's ask and tell, waiting for workers (training), closing (the study's artifacts);
    the MLflow writes run on their own thread alongside."""
    return (
        f"driver time: start-up {t.get('startup', 0):.1f} s, ask {t.get('ask', 0):.1f} s, "
        f"tell {t.get('tell', 0):.1f} s, waiting for workers {t.get('wait', 0):.1f} s, "
        f"closing {t.get('close', 0):.1f} s; recording {t.get('record', 0):.1f} s on its own thread"
        + (f"; validation on held-out seeds {t['validate']:.1f} s" if t.get("validate") else "")
    )


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
            + (f"; {s.rebuilt} more rebuilt a prefix on another worker" if s.rebuilt else "")
        )
    line = workers_line(s.workers)
    if line:
        out.print(line, markup=False, highlight=False)
    if s.timing:
        out.print(timing_line(s.timing), markup=False, highlight=False)
    for f in s.failures[:5]:
        out.print(f"  failed: {f}", markup=False)
    if rec is not None:
        lam = rec["params"].get("lambda")
        how = rec["strategy"] if lam is None else f"{rec['strategy']}, λ={lam:g}"
        out.print(f"recommended order: {' → '.join(rec['order'])}  ({how})")
        std = f" ± {rec['acc_std'] * 100:.1f}" if rec.get("acc_std") else ""
        out.print(f"  ACC {rec['acc'] * 100:.2f}{std}   BWT {rec['bwt'] * 100:+.2f}   FWT {rec['fwt'] * 100:+.2f}")
        out.print(f"  {rec['confidence']['note']}", markup=False)
        if s.validation is not None:
            from search.study.validation import validation_lines

            for line in validation_lines(s.validation):
                out.print(line, markup=False, highlight=False, soft_wrap=True)
        out.print(f"  re-run it: {rec['rerun']}", markup=False, soft_wrap=True)
    from pipeline.tracking import mask_url

    # Commands are printed unwrapped (soft_wrap) so that they can be copied whole.
    extra = "" if storage == "journal:///optuna.journal" else f" --storage '{mask_url(storage)}'"
    out.print(f"export it: lll export --study {name}{extra} --out order.json", markup=False, soft_wrap=True)
    out.print(f"browse runs: lll ui --study {name}{extra}", markup=False, soft_wrap=True)
    out.print(f"resume/extend: lll search --study {name}{extra} --resume --trials N", markup=False, soft_wrap=True)
