"""`lll search`: the curriculum search (Optuna on Ray workers, recorded in MLflow)."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Annotated, Any

import typer

from search.cli.choices import list_of, one_of
from search.cli.commands.common import LLLError, err, merge, out, parse_ints, parse_options, validated
from search.cli.options import (
    BatchSize,
    DataDir,
    Download,
    Epochs,
    Heads,
    HeldoutSeeds,
    Hidden,
    Lr,
    Optimizer,
    Pool,
    RayAddress,
    Workers,
)


def parse_strategy_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--option ewc:fisher_samples=500`` → {"ewc": {"fisher_samples": 500}}."""
    outd: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if ":" not in item.split("=", 1)[0]:
            raise LLLError(f"--option {item!r} must look like STRATEGY:KEY=VALUE, e.g. --option replay:memory_size=200")
        name, kv = item.split(":", 1)
        outd.setdefault(name.strip(), {}).update(parse_options([kv]))
    return outd


# The flags only `lll search` has (the shared ones are in search/cli/options.py).
FixLambda = Annotated[float | None, typer.Option("--lambda", help="Fix λ (otherwise searched per strategy)")]
StrategyOptions = Annotated[list[str] | None, typer.Option(help="STRATEGY:KEY=VALUE (repeatable)")]
Strategies = Annotated[
    str | None,
    typer.Option(parser=list_of("strategies", "strategy"), help="Comma-separated: {strategies} [default: ewc,si,agem]"),
]
Objective = Annotated[
    str | None,
    typer.Option(parser=one_of("objectives", "--objective"), help="{objectives} (both: Pareto) [default: acc]"),
]
Trials = Annotated[int | None, typer.Option(help="Trials in the study [default: 24; exhaustive: T!]")]
TimeBudget = Annotated[
    float | None, typer.Option(help="Stop starting trials S s after start (wall clock, worker boot included)")
]
CpusPerWorker = Annotated[float, typer.Option(help="CPUs per worker actor")]
GpusPerWorker = Annotated[float, typer.Option(help="GPUs per worker (fractions share a GPU)")]
SeedsPerCandidate = Annotated[
    int | None, typer.Option(help="Seeds a new ordering starts with (objective = mean) [default: 1]")
]
MaxSeeds = Annotated[
    int | None,
    typer.Option(
        help="Re-evaluate promising orderings on more seeds, up to M each [default: 2 for one objective; "
        "--seeds (off) with --exhaustive or --objective both]"
    ),
]
BaseSeed = Annotated[int | None, typer.Option(help="Base seed of sampler and training [default: 0]")]
NewStudy = Annotated[str | None, typer.Option(help="Study name [default: POOL-DATE-TIME]")]
SearchStorage = Annotated[str, typer.Option(help="Optuna storage: journal:///FILE or a SQLAlchemy URL")]
TrackingUri = Annotated[str, typer.Option(help="MLflow tracking URI")]
Resume = Annotated[bool, typer.Option(help="Continue --study where it stopped")]
Exhaustive = Annotated[bool, typer.Option(help="Every ordering of a small pool (T ≤ 7)")]
Prune = Annotated[
    bool,
    typer.Option(
        help="Stop an ordering whose running accuracy is in the bottom quarter at that step. Off by default: "
        "on the ground truths it stopped most of the best orderings (docs/results.md, pruning)"
    ),
]
CacheMb = Annotated[int, typer.Option(help="Per-worker prefix cache size in MiB (0 = off)")]
Checkpoints = Annotated[
    str | None, typer.Option(parser=one_of("checkpoints", "--checkpoints"), help="{checkpoints} [default: final]")
]
FixOrder = Annotated[str | None, typer.Option(help="Fix the order; search strategies/λ only")]
Model = Annotated[str | None, typer.Option(help="{models} | module:function [default: the pool's, else mlp]")]
Device = Annotated[str | None, typer.Option(help="Where workers train: auto | cpu | cuda | cuda:N [default: auto]")]
TrainPerTask = Annotated[int | None, typer.Option(help="Training images per task")]
TestPerTask = Annotated[int | None, typer.Option(help="Test images per task")]
SeedFromGraph = Annotated[
    bool, typer.Option(help="Measure the task-affinity graph first; try its best orderings first")
]
Population = Annotated[
    str | None,
    typer.Option(help="Task-trainings a worker trains at once as one stacked model (K), or auto [default: auto]"),
]
Sampler = Annotated[
    str | None,
    typer.Option(
        parser=one_of("samplers", "--sampler"),
        help="{samplers} (model: a GP over orderings) [default: model; both: tpe; resume: stored]",
    ),
]
Validate = Annotated[
    int | None,
    typer.Option(help="At the end, retrain the top K orderings on held-out seeds (0 = off) [default: 3]"),
]


def search(
    pool: Pool = None,
    strategies: Strategies = None,
    lam: FixLambda = None,
    option: StrategyOptions = None,
    objective: Objective = None,
    trials: Trials = None,
    time_budget: TimeBudget = None,
    workers: Workers = None,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    seeds: SeedsPerCandidate = None,
    max_seeds: MaxSeeds = None,
    seed: BaseSeed = None,
    study: NewStudy = None,
    storage: SearchStorage = "journal:///optuna.journal",
    tracking_uri: TrackingUri = "sqlite:///mlflow.db",
    ray_address: RayAddress = None,
    resume: Resume = False,
    exhaustive: Exhaustive = False,
    prune: Prune = False,
    cache_mb: CacheMb = 1024,
    checkpoints: Checkpoints = None,
    order: FixOrder = None,
    epochs: Epochs = None,
    hidden: Hidden = None,
    lr: Lr = None,
    optimizer: Optimizer = None,
    batch_size: BatchSize = None,
    heads: Heads = None,
    model: Model = None,
    device: Device = None,
    train_per_task: TrainPerTask = None,
    test_per_task: TestPerTask = None,
    data_dir: DataDir = None,
    download: Download = False,
    seed_from_graph: SeedFromGraph = False,
    population: Population = None,
    sampler: Sampler = None,
    validate: Validate = None,
    heldout_seeds: HeldoutSeeds = None,
) -> None:
    """Search task orderings × strategy × λ with Optuna on Ray workers; record every trial in MLflow."""
    from search.study.launch import prepare, run_search

    req = search_request(dict(locals()))  # every flag by name
    if seed_from_graph:
        err.print("measuring the task-affinity graph (every single task and pair) to seed the study ...")
    prepared = prepare(req)  # every check that can fail does so before the progress bar and Ray start
    if seed_from_graph:
        err.print(seeding_line(prepared[0].user_attrs.get("graph_orderings", []), prepared[1].sampler))
    with search_progress() as on_progress:
        the_study, summary, rec = run_search(req, on_progress, prepared)
    print_search_summary(the_study.study_name, summary, rec, tracking_uri, storage)


def seeding_line(kept: list[dict], sampler: str) -> str:
    """What --seed-from-graph did with the graph (search/study/graph_seed.py)."""
    enqueued = [r for r in kept if r.get("enqueued")]
    if enqueued:
        return f"graph: its zero-shot pick is trusted; {len(enqueued)} of its orderings are the first trials"
    use = "the model sampler uses the graph as a feature" if sampler == "model" else f"--sampler {sampler} ignores it"
    return f"graph: its zero-shot pick is not trusted (lll affinity --recommend says why); nothing enqueued, {use}"


TRAIN_FLAGS = (
    "model",
    "epochs",
    "hidden",
    "lr",
    "optimizer",
    "batch_size",
    "heads",
    "device",
)  # the order settings store them in
# flags that reach the SearchRequest under their own name, as typed
REQUEST_KEYS = (
    "pool",
    "lam",
    "objective",
    "trials",
    "time_budget",
    "workers",
    "cpus_per_worker",
    "gpus_per_worker",
    "seeds",
    "max_seeds",
    "seed",
    "study",
    "storage",
    "tracking_uri",
    "ray_address",
    "resume",
    "exhaustive",
    "prune",
    "checkpoints",
    "data_dir",
    "download",
    "train_per_task",
    "test_per_task",
    "cache_mb",
    "seed_from_graph",
    "population",
    "sampler",
    "validate",
)


def search_request(f: dict[str, Any]):
    """The SearchRequest of `lll search`'s flags ``f``, after the checks that need no pool or Ray."""
    from search.study.launch import SearchRequest

    if f["sampler"] is not None:
        from search.study.storage import check_sampler

        check_sampler(f["sampler"], f["objective"] or "acc")
    if f["trials"] is not None and f["trials"] < 1:
        raise LLLError("--trials must be at least 1")
    if f["seeds"] is not None and f["seeds"] < 1:
        raise LLLError("--seeds must be at least 1")
    train = search_train(f)
    strategies, order = f["strategies"], f["order"]
    return SearchRequest(
        **{k: f[k] for k in REQUEST_KEYS},
        strategies=[s.strip() for s in strategies.split(",") if s.strip()] if strategies else None,
        options=parse_strategy_options(f["option"]),
        train=train,
        order=[s.strip() for s in order.split(",")] if order else None,
        heldout_seeds=parse_ints(f["heldout_seeds"], "--heldout-seeds"),
    )


def search_train(f: dict[str, Any]) -> dict[str, Any]:
    """The training settings of the flags, checked; a new study starts from the pool's training
    defaults, which the flags override (a resumed one keeps what it stored)."""
    from pipeline.config import TrainConfig

    flags = {**f, "hidden": parse_ints(f["hidden"], "--hidden")}
    train = merge({}, **{k: flags[k] for k in TRAIN_FLAGS})
    validated(TrainConfig, train, "settings")
    if f["device"] is not None and not f["ray_address"]:  # local workers see this machine's GPUs
        from pipeline.train import pick_device

        pick_device(f["device"])
    if not f["resume"]:
        from pipeline.models import check_model_name
        from search.cli.commands.run import pool_train_defaults

        train = {**pool_train_defaults(f["pool"], f["data_dir"]), **train}
        check_model_name(train.get("model"))  # imported now: fails before Ray, and is shipped to workers
    return train


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
    the MLflow writes run on their own thread alongside (several for a server: the time any was writing)."""
    return (
        f"driver time: start-up {t.get('startup', 0):.1f} s, ask {t.get('ask', 0):.1f} s, "
        f"tell {t.get('tell', 0):.1f} s, waiting for workers {t.get('wait', 0):.1f} s, "
        f"closing {t.get('close', 0):.1f} s; recording {t.get('record_wall', t.get('record', 0)):.1f} s "
        "on its own thread" + (f"; validation on held-out seeds {t['validate']:.1f} s" if t.get("validate") else "")
    )


def print_search_summary(name: str, summary, rec: dict | None, tracking_uri: str, storage: str) -> None:
    s = summary
    out.print(
        f"study {name}: {s.complete} complete, {s.pruned} pruned, {s.failed} failed"
        + (f" ({s.reevaluated} of the complete re-evaluated an ordering on one more seed)" if s.reevaluated else "")
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
