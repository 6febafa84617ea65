"""The search's seed defaults (issue 19 point 3): a new ordering starts on 1 seed and racing
re-evaluates up to 2 — the setting measured best or tied on the 3-seed truth
(bench/out/fresh_seed.json ``defaults_grid``) — except where re-evaluation cannot apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_pool_yaml

from search.study.launch import DEFAULT_MAX_SEEDS, DEFAULT_SEEDS, SearchRequest, new_settings
from search.study.racing import SHARE, Z
from tasks.registry import load_pool

OUT = Path(__file__).resolve().parents[1] / "bench" / "out" / "fresh_seed.json"


@pytest.fixture
def pool(tmp_path: Path):
    (tmp_path / "pool.yaml").write_text(tiny_pool_yaml("tiny-defaults", 60, 40))
    return load_pool(str(tmp_path / "pool.yaml"))


def settings(pool, **req):
    return new_settings(SearchRequest(pool="pool.yaml", strategies=["naive"], tracking_uri=None, **req), pool, 8)


@pytest.mark.parametrize(
    "req, seeds, max_seeds, races",
    [
        ({}, 1, 2, True),  # the default: 1 seed, racing up to 2
        ({"max_seeds": 4}, 1, 4, True),
        ({"seeds": 2}, 2, None, False),  # --seeds at or above the default max: no re-evaluation
        ({"seeds": 3, "max_seeds": 5}, 3, 5, True),
        ({"exhaustive": True}, 1, None, False),  # every ordering once: nothing to race
        ({"objective": "both"}, 1, None, False),  # racing needs one objective
    ],
)
def test_seed_defaults(pool, req, seeds, max_seeds, races):
    s = settings(pool, **req)
    assert (s.seeds, s.max_seeds, s.racing) == (seeds, max_seeds, races)


def test_the_defaults_are_the_measured_settings():
    """The CLI's defaults are the grid row the README reports; if the grid is rerun, this says so."""
    assert (DEFAULT_SEEDS, DEFAULT_MAX_SEEDS, SHARE, Z) == (1, 2, 0.2, 1.0)
    if not OUT.exists():
        pytest.skip(f"{OUT} not in this checkout")
    grid = json.loads(OUT.read_text())["defaults_grid"]
    rows = [r for rot in grid.values() if isinstance(rot, list) for r in rot]
    assert any(r["seeds"] == DEFAULT_SEEDS and r["share"] == SHARE for r in rows)
