"""Every choice a flag offers, read from the registry that defines it, never typed into the CLI.

A new strategy (a module in pipeline/strategies/), sampler, ordering rule or pool appears in
``--help`` and is accepted by the flags without editing the command line. Registries are read
lazily: only ``--help`` or a flag that was given imports them (the strategies import torch), so
``lll pools`` or ``lll ui`` stay quick.

A flag's help names its registry as ``{strategies}``, ``{samplers}``, ...; :class:`ChoicesCommand`
fills in the entries (``a | b | c``) when help is shown, and :func:`one_of` / :func:`list_of`
are Typer ``parser`` s that accept an entry or fail in one line, ``unknown --flag 'x'; choose one
of a, b, c``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from search.cli.commands.common import OneLineUsageErrors
from tasks.errors import LLLError


def _listed(module: str, name: str) -> Callable[[], list[str]]:
    """The entries of registry ``name`` in ``module``, imported only when asked for."""

    def entries() -> list[str]:
        return list(getattr(importlib.import_module(module), name))

    return entries


def _train_literal(field: str) -> Callable[[], list[str]]:
    """The values a ``Literal`` field of TrainConfig allows (its validation is the registry)."""

    def values() -> list[str]:
        from pipeline.config import TrainConfig

        annotation = TrainConfig.model_fields[field].annotation  # Literal[...] or Literal[...] | None
        literals = [a for a in (annotation, *get_args(annotation)) if get_origin(a) is Literal]
        return [v for lit in literals for v in get_args(lit)]

    return values


# registry name → where its entries come from. Pools and models are open (a YAML file, a
# module:function), so their flags list the built-in entries but take other values too.
REGISTRIES: dict[str, Callable[[], list[str]]] = {
    "strategies": _listed("pipeline.strategies", "STRATEGIES"),  # ordered by PREFERRED_ORDER, then the rest
    "samplers": _listed("search.study.storage", "SAMPLERS"),
    "objectives": _listed("search.study.storage", "OBJECTIVES"),
    "checkpoints": _listed("search.study.storage", "CHECKPOINTS"),
    "rules": _listed("search.graph.rules", "RULES"),
    "pools": _listed("tasks.registry", "BUILTIN_POOLS"),
    "models": _listed("pipeline.config", "BUILTIN_MODELS"),
    "heads": _train_literal("heads"),
    "optimizers": _train_literal("optimizer"),
    "inits": _train_literal("init"),
}


def choices(registry: str) -> list[str]:
    """The entries of one registry, in its own order."""
    return REGISTRIES[registry]()


def fill_in(text: str) -> str:
    """``"one of {samplers}"`` → ``"one of model | tpe | random"``."""
    for name in REGISTRIES:
        if "{" + name + "}" in text:
            text = text.replace("{" + name + "}", " | ".join(choices(name)))
    return text


def check(registry: str, flag: str, value: str) -> str:
    """``value`` if the registry has it, else the one-line error naming every entry."""
    valid = choices(registry)
    if value not in valid:
        raise LLLError(f"unknown {flag} {value!r}; choose one of {', '.join(valid)}")
    return value


def one_of(registry: str, flag: str) -> Callable[[str], str]:
    """A Typer ``parser``: one entry of ``registry``."""
    return lambda value: check(registry, flag, value)


def list_of(registry: str, flag: str) -> Callable[[str], str]:
    """A Typer ``parser``: comma-separated entries (``ewc,si,agem``), returned as given."""

    def parse(value: str) -> str:
        items = [s.strip() for s in value.split(",") if s.strip()]
        if not items:
            raise LLLError(f"{flag} is empty; give one or more of {', '.join(choices(registry))}, comma-separated")
        for item in items:
            check(registry, flag, item)
        return value

    return parse


class ChoicesCommand(OneLineUsageErrors):
    """A subcommand whose options' help lists their registries' entries (filled in when shown).

    Help is plain text: ``[default: mixed-mnist]`` is shown as written, not taken for rich markup."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from rich.markup import escape

        for param in self.params:
            if getattr(param, "help", None) and not getattr(param, "lll_filled", False):
                param.help, param.lll_filled = escape(fill_in(param.help)), True
        return super().format_help(ctx, formatter)
