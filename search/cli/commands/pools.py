"""`lll pools`: the built-in task pools."""

from __future__ import annotations

from rich.table import Table

from search.cli.commands.common import out


def pools() -> None:
    """List the built-in task pools (any pool can also be a YAML file: see README)."""
    from tasks.registry import BUILTIN_POOLS, DEFAULT_POOL, builtin_spec

    table = Table(title="Built-in task pools")
    for col in ("pool", "tasks", "source", "heads", "training defaults", "description"):
        table.add_column(col)
    for name in BUILTIN_POOLS:
        spec = builtin_spec(name)
        label = f"{name} (default)" if name == DEFAULT_POOL else name
        defaults = train_defaults(spec.train, spec.source)
        table.add_row(label, ", ".join(t.name for t in spec.tasks), spec.source, spec.heads, defaults, spec.description)
    out.print(table)
    out.print(
        "training defaults: what `lll run` and `lll search` use on that pool unless a flag or --config says "
        "otherwise; a pool YAML sets its own under `train:`",
        markup=False,
    )


def train_defaults(train: dict, source: str) -> str:
    """A pool's `train:` section over lll's defaults, as `mlp, sgd lr 0.01, 10 epochs, batch 32`."""
    from pipeline.config import TrainConfig
    from tasks.pool import TEXT_SOURCES

    t = TrainConfig(**train)
    model = t.model or ("memn2n" if source in TEXT_SOURCES else "mlp")
    return f"{model}, {t.optimizer} lr {t.lr:g}, {t.epochs} epochs, batch {t.batch_size}"
