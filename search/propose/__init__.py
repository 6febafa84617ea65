"""Proposing orderings: the permutation GP and the Optuna sampler built on it."""
