"""``python -m search.cli`` — the same as the ``lll`` command."""

from search.cli.app import main

main()
