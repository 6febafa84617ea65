"""One module per `lll` subcommand; search/cli/app.py assembles them."""
