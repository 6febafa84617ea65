"""Every `lll` flag stays as users know it: names, defaults, help texts and choices are compared
with a checked-in snapshot (tests/data/cli_options.json), read from the real click commands.

A refactor of the command line (shared option aliases in search/cli/options.py, moved modules)
must not change a flag silently. A deliberate change (a new flag, a new default) updates the
snapshot in the same commit:

    PYTHONPATH=$PWD python tests/test_cli_options.py --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).parent / "data" / "cli_options.json"


def choices_of(param: Any) -> list[str] | None:
    """The registry and flag a ``one_of`` / ``list_of`` parser checks against (its closure), so
    that a flag moved to another registry shows up; None for a plain type."""
    func = getattr(param.type_descriptor.parameter_info, "parser", None)
    cells = getattr(func, "__closure__", None) or ()
    values = [c.cell_contents for c in cells if isinstance(c.cell_contents, str)]
    return sorted(values) if values else None


def cli_options() -> dict[str, list[dict[str, Any]]]:
    """For every command: each parameter's name, flags, default, help (as written, registry
    placeholders unfilled), type and choices."""
    import typer

    from search.cli.app import app

    group = typer.main.get_command(app)
    snapshot: dict[str, list[dict[str, Any]]] = {}
    for name, command in sorted(group.commands.items()):
        snapshot[name] = [
            {
                "name": p.name,
                "opts": list(p.opts),
                "secondary_opts": list(p.secondary_opts),
                "default": p.default if not isinstance(p.default, Path) else str(p.default),
                "help": getattr(p, "help", None),
                "required": p.required,
                "is_flag": getattr(p, "is_flag", False),
                "multiple": p.multiple,
                "type": str(p.type_descriptor.annotation),
                "choices": choices_of(p),
            }
            for p in command.params
        ]
    return json.loads(json.dumps(snapshot))  # as the JSON file holds it (tuples → lists)


def test_every_flag_matches_the_snapshot() -> None:
    expected = json.loads(SNAPSHOT.read_text())
    actual = cli_options()
    assert sorted(actual) == sorted(expected), "commands added or removed"
    for command in expected:
        want = {p["name"]: p for p in expected[command]}
        got = {p["name"]: p for p in actual[command]}
        assert sorted(got) == sorted(want), f"lll {command}: flags added or removed"
        for name in want:
            assert got[name] == want[name], f"lll {command} {want[name]['opts']}: changed"
        assert [p["name"] for p in actual[command]] == [p["name"] for p in expected[command]], (
            f"lll {command}: the order of flags in --help changed"
        )


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_cli_options.py --update  (rewrites tests/data/cli_options.json)")
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(cli_options(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {SNAPSHOT}")
