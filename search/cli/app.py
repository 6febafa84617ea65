"""The `lll` command line. Every subcommand runs offline on one machine with its defaults.

Each subcommand lives in its own module under ``search/cli/commands/``; this one assembles them.
Bad input never shows a traceback: it is one line ``error: <problem>; <fix>`` and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from search.cli.choices import ChoicesCommand
from search.cli.commands import affinity, export, pools, report, run, search, ui
from search.cli.commands.common import err
from search.cli.commands.common import parse_options as parse_options
from search.cli.commands.ui import ui_command as ui_command
from tasks.errors import LLLError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="lll: which task order makes a continual learner forget least? Train, measure, search.",
)
for command in (
    pools.pools,
    run.run,
    search.search,
    export.export,
    report.report,
    ui.ui,
    affinity.affinity,
):
    app.command(cls=ChoicesCommand)(command)


def main() -> None:
    try:
        app(standalone_mode=True)
    except LLLError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; everything already recorded is kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
