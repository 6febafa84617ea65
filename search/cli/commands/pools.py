"""`lll pools`: the built-in task pools, readable at 80 columns and through a pipe (names whole), or as JSON."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from search.cli.commands.common import out


def pools(
    as_json: Annotated[bool, typer.Option("--json", help="Print the pools as a JSON list (for scripts)")] = False,
) -> None:
    """List the built-in task pools (any pool can also be a YAML file: see README)."""
    entries = pool_entries()
    if as_json:
        sys.stdout.write(json.dumps(entries, indent=2) + "\n")
        return
    # One block per pool, its name first on its own line: a name is never cut, whatever the
    # width (80 columns, a pipe), and `lll pools | grep` finds it. The rest wraps, indented.
    for e in entries:
        head = f"{e['name']}{' (default)' if e['default'] else ''}: {len(e['tasks'])} tasks, {e['source']}"
        out.print(f"{head}, {e['heads']} heads", style="bold", markup=False, highlight=False, soft_wrap=True)
        for line in (e["description"], "tasks: " + ", ".join(e["tasks"]), "trains with: " + e["training"]):
            out.print(wrap(line, "  ", "    "), markup=False, highlight=False, soft_wrap=True)
    note = (
        "trains with: what `lll run` and `lll search` use on that pool unless a flag or --config says "
        "otherwise; a pool YAML sets its own under `train:`"
    )
    out.print(wrap(note, "", ""), markup=False, highlight=False, soft_wrap=True)


def wrap(text: str, first: str, rest: str) -> str:
    """Wrapped to the terminal (80 columns through a pipe), never inside a name (no break at hyphens)."""
    import textwrap

    width = max(40, out.width - 1)
    return textwrap.fill(text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def pool_entries() -> list[dict[str, Any]]:
    """Every built-in pool as plain data: what `lll pools` prints and `lll pools --json` writes."""
    from tasks.registry import BUILTIN_POOLS, DEFAULT_POOL, builtin_spec

    entries = []
    for name in BUILTIN_POOLS:
        spec = builtin_spec(name)
        entries.append(
            {
                "name": name,
                "default": name == DEFAULT_POOL,
                "description": spec.description,
                "tasks": [t.name for t in spec.tasks],
                "source": spec.source,
                "heads": spec.heads,
                "train_per_task": spec.train_per_task,
                "test_per_task": spec.test_per_task,
                "train": dict(spec.train),
                "training": train_defaults(spec.train, spec.source),
            }
        )
    return entries


def train_defaults(train: dict, source: str) -> str:
    """A pool's `train:` section over lll's defaults, as `mlp, sgd lr 0.01, 10 epochs, batch 32`."""
    from pipeline.config import TrainConfig
    from tasks.pool import TEXT_SOURCES

    t = TrainConfig(**train)
    model = t.model or ("memn2n" if source in TEXT_SOURCES else "mlp")
    return f"{model}, {t.optimizer} lr {t.lr:g}, {t.epochs} epochs, batch {t.batch_size}"
