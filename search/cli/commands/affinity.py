"""`lll affinity`: the task-affinity graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.choices import one_of
from search.cli.commands.common import err, out
from search.cli.options import DataDir, Pool, RayAddress, StorageWithStudy, Workers

# The flags only `lll affinity` has (the shared ones are in search/cli/options.py).
FromStudy = Annotated[str | None, typer.Option(help="Take pool/settings from this study; harvest its trials")]
OutPath = Annotated[Path, typer.Option("--out", help="GraphML file (a PNG is written beside it)")]
Recommend = Annotated[
    bool, typer.Option(help="Print the zero-shot pick: predicted ACC, interval, the rules' picks, trust")
]
MeasureWith = Annotated[
    str | None,
    typer.Option(parser=one_of("strategies", "strategy"), help="Measure with: {strategies} [default: naive / study's]"),
]
PairSeeds = Annotated[
    int | None, typer.Option(help="Seeds of pair trainings, averaged; ≥ 2 measure their noise [default: 1]")
]
FirstSeed = Annotated[int | None, typer.Option(help="First seed [default: 0 / the study's]")]
StudyEpochs = Annotated[int | None, typer.Option(help="Epochs per task [default: 10 / the study's]")]
StudyTrackingUri = Annotated[str | None, typer.Option(help="MLflow store [default: the study's; none without]")]
Measure = Annotated[bool, typer.Option(help="Run the single/pair orderings (--no-measure: study only)")]
Top = Annotated[int, typer.Option(help="How many orderings --recommend lists")]
Population = Annotated[str, typer.Option(help="Task-trainings a worker runs at once as one stacked model (K), or auto")]
Rule = Annotated[
    str | None,
    typer.Option(parser=one_of("rules", "--rule"), help="With --recommend: {rules} instead of the graph model"),
]


def affinity(
    pool: Pool = None,
    study: FromStudy = None,
    storage: StorageWithStudy = "journal:///optuna.journal",
    out_path: OutPath = Path("affinity.graphml"),
    recommend: Recommend = False,
    strategy: MeasureWith = None,
    seeds: PairSeeds = None,
    seed: FirstSeed = None,
    workers: Workers = None,
    epochs: StudyEpochs = None,
    tracking_uri: StudyTrackingUri = None,
    measure: Measure = True,
    ray_address: RayAddress = None,
    data_dir: DataDir = None,
    top: Top = 3,
    population: Population = "auto",
    rule: Rule = None,
) -> None:
    """Measure how tasks help (transfer) or hurt (interference) each other; write the task-affinity
    graph as GraphML + PNG; with --recommend, the zero-shot pick it records in MLflow."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.study.affinity_lines import recommend_lines, summary_lines
    from search.study.affinity_runs import run_affinity
    from search.study.affinity_settings import AffinityRequest, prepare_affinity

    if rule is not None:  # a known rule: --rule's parser checked it
        recommend = True

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
        population=population,
    )
    prepared = prepare_affinity(req)  # bad input fails here, before the progress bar and Ray start
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("affinity runs", total=None)

        def on_progress(done: int, total: int, what: str) -> None:
            progress.update(bar, completed=done, total=total, description=f"affinity runs (last: {what})")

        result = run_affinity(req, on_progress, prepared)
    lines = summary_lines(result)
    if recommend:  # the zero-shot pick recorded in MLflow (fitted to --study's trials), or a rule's ordering
        lines += recommend_lines(result, rule)
    for line in lines:
        out.print(line, markup=False, highlight=False)
    from search.cli.commands.search import workers_line

    line = workers_line(result.measurement.workers if result.measurement else [])
    if line:
        out.print(line, markup=False, highlight=False)
