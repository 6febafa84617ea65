"""`lll export`: a study's recommended order as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.commands.common import open_study, out


def export(
    study: Annotated[str, typer.Option(help="Study name")],
    storage: Annotated[str, typer.Option(help="Optuna storage URL")] = "sqlite:///optuna.db",
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the recommendation JSON here")] = None,
) -> None:
    """Write the recommended task order of a study (with its Pareto alternatives) as JSON."""
    import json

    from search.study.recommend import recommendation

    rec = recommendation(open_study(study, storage))
    text = json.dumps(rec, indent=2)
    if out_path is None:
        out.print_json(text)
    else:
        out_path.write_text(text)
        out.print(f"wrote {out_path}: {' → '.join(rec['order'])} ({rec['strategy']}), ACC {rec['acc'] * 100:.2f}")
