"""One module per `lll` subcommand; search/cli.py assembles them."""
