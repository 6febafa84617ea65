"""The flags two or more `lll` commands share, declared once as Typer ``Annotated`` aliases.

A command takes one as ``epochs: Epochs = None``: the flag name, help text and registry come from
here, the default stays in the command's signature. A flag that only one command has, or that
reads differently per command (``--seed``, ``--lambda``, ``--tracking-uri``), is declared by its
command. tests/test_cli_options.py holds every command's flags to a snapshot, so moving a flag
here or back changes nothing a user sees.
"""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli.choices import one_of

# where the tasks come from: search, affinity (`lll run` words --pool and --data-dir its own way)
Pool = Annotated[str | None, typer.Option(help="Pool ({pools}) or YAML file [default: mixed-mnist]")]
DataDir = Annotated[str | None, typer.Option(help="MNIST IDX folder (full MNIST)")]
Download = Annotated[bool, typer.Option(help="Download MNIST into --data-dir when missing")]

# training: run, search (affinity's --epochs names the study's default too)
Epochs = Annotated[int | None, typer.Option(help="Epochs per task [default: 10]")]
Hidden = Annotated[str | None, typer.Option(help="Hidden sizes, e.g. 50,50,50")]
Heads = Annotated[
    str | None,
    typer.Option(parser=one_of("heads", "--heads"), help="{heads} (growing: class-incremental) [default: the pool's]"),
]
Optimizer = Annotated[
    str | None, typer.Option(parser=one_of("optimizers", "--optimizer"), help="{optimizers} [default: sgd]")
]
Lr = Annotated[float | None, typer.Option(help="Learning rate [default: 0.01]")]
BatchSize = Annotated[int | None, typer.Option(help="Batch size [default: 32]")]

# the cluster: search, affinity
Workers = Annotated[int | None, typer.Option(help="Ray worker actors [default: one per CPU]")]
RayAddress = Annotated[str | None, typer.Option(help="Join this Ray cluster (HOST:PORT)")]

# a stored study: export, report (--study and --storage); affinity, ui (--storage with --study)
StudyName = Annotated[str, typer.Option(help="Study name")]
Storage = Annotated[str, typer.Option(help="Optuna storage URL")]
StorageWithStudy = Annotated[str, typer.Option(help="Optuna storage URL (with --study)")]

# held-out validation: search, export
HeldoutSeeds = Annotated[
    str | None, typer.Option(help="Held-out seeds for --validate, e.g. 100,101,102 [default: 3 unused seeds]")
]
