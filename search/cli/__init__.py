"""The `lll` command line: ``app.py`` builds the Typer app, ``commands/`` holds one module per subcommand."""

from search.cli.app import app, main

__all__ = ["app", "main"]
