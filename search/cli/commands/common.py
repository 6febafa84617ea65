"""Shared pieces of the `lll` commands: config files, validation, one-line errors, printing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from tasks.errors import LLLError

__all__ = ["LLLError"]

out = Console()
err = Console(stderr=True)


def load_yaml_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    from tasks.pool import read_yaml

    data = read_yaml(path, "config", "check the --config path")
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
        loc = [str(p) for p in first_error(exc)["loc"]]
        keys = [".".join(loc[:n]) for n in range(len(loc), 0, -1)]  # train.hidden.0 → train.hidden
        flag = next((f for k in keys if (f := (flags or {}).get(k))), None)
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


def print_rmatrix(r, title: str = "R: test accuracy (%)") -> None:
    table = Table(title=f"{title} — rows: after training, columns: task tested")
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


def print_sizes(tasks, sizes: list[dict[str, float]]) -> None:
    """Parameter efficiency: model size and stored strategy state after each task, plus whatever
    the strategy adds (``Strategy.size_report``: a ``*_share`` is printed as a percentage)."""
    if not sizes:
        return

    def extra(k: str, v: float) -> str:
        return f"{k} {v:.1%}" if k.endswith("_share") else f"{k} {v:,.0f}"

    cells = [
        f"{t}: {s['params']:,} params, {s['stored_bytes'] / 1024:,.0f} KiB stored"
        + "".join(f", {extra(k, v)}" for k, v in s.items() if k not in ("params", "stored_bytes"))
        for t, s in zip(tasks, sizes, strict=False)
    ]
    out.print("after each task — " + "; ".join(cells))


def open_study(study: str, storage: str):
    from search.study.storage import load_study, open_storage

    return load_study(study, open_storage(storage, study))
