"""`lll pools`: the built-in task pools."""

from __future__ import annotations

from rich.table import Table

from search.commands.common import out


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
