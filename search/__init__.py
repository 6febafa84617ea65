"""Which ordering is best: the Optuna study, Ray dispatch, affinity graph, reports and the CLI."""
