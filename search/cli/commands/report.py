"""`lll report`: a study's plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.commands.common import open_study, out
from search.cli.options import Storage, StudyName


def report(
    study: StudyName,
    storage: Storage = "journal:///optuna.journal",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the plots")] = Path("report"),
) -> None:
    """Draw a study's plots (Pareto front, ACC distribution, history, recommended R) to a folder."""
    from search.study.report import records_data, records_line, write_report

    opened = open_study(study, storage)
    files = write_report(opened, out_dir)
    for f in files:
        out.print(f"wrote {f}")
    out.print(records_line(records_data(opened)))
