"""Task orderings as Lehmer codes, so Optuna's samplers can search permutations.

A permutation of n items is the integer sequence c_0..c_{n-2} with 0 ≤ c_i ≤ n−1−i: c_i picks
the c_i-th of the items not yet placed (Optuna's FAQ suggests this for permutations). Every code
is a valid permutation, so no sampled point is wasted, and codes sharing a head share a prefix.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence


def lehmer_encode(order: Sequence[str], items: Sequence[str]) -> list[int]:
    """The Lehmer code of ``order`` relative to the reference order ``items``."""
    rest = list(items)
    code = []
    for name in order[:-1]:
        i = rest.index(name)
        code.append(i)
        rest.pop(i)
    return code


def lehmer_decode(code: Sequence[int], items: Sequence[str]) -> list[str]:
    rest = list(items)
    if len(code) != len(rest) - 1:
        raise ValueError(f"a Lehmer code for {len(rest)} items has {len(rest) - 1} digits, got {len(code)}")
    order = []
    for i, c in enumerate(code):
        if not 0 <= c < len(rest):
            raise ValueError(f"digit {i} of the Lehmer code must be in [0, {len(rest) - 1}], got {c}")
        order.append(rest.pop(c))
    return order + rest


def param_names(n: int) -> list[str]:
    """The Optuna parameter names of the ordering digits."""
    return [f"order_{i}" for i in range(n - 1)]


def all_orderings(items: Sequence[str]) -> Iterator[list[str]]:
    """Every ordering, in lexicographic order of the reference order (neighbours share prefixes)."""
    for p in itertools.permutations(items):
        yield list(p)


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
