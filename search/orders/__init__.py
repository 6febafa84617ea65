"""Permutations: Lehmer codes, moves over orderings, and the search space (the bottom floor of search/)."""
