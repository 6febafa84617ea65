"""bench/common.py: ranks and Spearman against scipy, ground-truth loading, orderings, and training
every ordering through the scheduler against ``run_ordering``; every bench script prints its usage."""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from tasks.pool import PoolSpec, build_pool

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")


def _load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


common = _load_common()


# ---- ranks ---------------------------------------------------------------------------------------
def test_ranks_and_spearman_agree_with_scipy_with_and_without_ties() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(3, 40))
        a = rng.integers(0, 6, n).astype(float) / 5  # many ties
        b = rng.normal(size=n)
        assert np.array_equal(common.ranks(a), rankdata(-a, method="average"))
        assert np.array_equal(common.ranks(b), rankdata(-b, method="average"))
        if a.std() > 0:
            assert common.spearman(a, b) == pytest.approx(float(spearmanr(a, b).statistic), abs=1e-12)
    assert np.isnan(common.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_rank_of_counts_ties_in_the_values_favour_and_rank_table_in_the_tables_order() -> None:
    values = np.array([0.5, 0.7, 0.7, 0.1, 0.6])
    assert [common.rank_of(values, i) for i in range(5)] == [4, 1, 1, 5, 3]
    table = {f"o{i}": float(v) for i, v in enumerate(values)}
    assert common.rank_table(table) == {"o0": 4, "o1": 1, "o2": 2, "o3": 5, "o4": 3}
    assert common.rank_table(dict(reversed(table.items()))) == {"o0": 4, "o1": 2, "o2": 1, "o3": 5, "o4": 3}


# ---- ground truths -------------------------------------------------------------------------------
def test_load_truth_reads_a_gz_document_and_its_seed_means(tmp_path: Path) -> None:
    orders = ["a,b", "b,a"]
    runs = {
        "naive/seed0": {"strategy": "naive", "seed": 0, "acc": [0.5, 0.7], "bwt": [0.0, 0.0], "rows": {}},
        "naive/seed1": {"strategy": "naive", "seed": 1, "acc": [0.7, 0.6], "bwt": [0.0, 0.0], "rows": {}},
        "ewc/seed0": {"strategy": "ewc", "seed": 0, "acc": [0.9, 0.1], "bwt": [0.0, 0.0], "rows": {}},
    }
    path = tmp_path / "truth.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"tasks": ["a", "b"], "orderings": orders, "runs": runs}, f)
    doc = common.load_truth(path)
    assert common.orderings(doc) == [("a", "b"), ("b", "a")]
    assert sorted(common.seed_runs(doc, "naive")) == [0, 1]
    assert common.seed_mean(doc, "naive").tolist() == [(0.5 + 0.7) / 2, (0.7 + 0.6) / 2]
    assert common.seed_mean(doc, "naive", [1]).tolist() == [0.7, 0.6]
    assert common.seed_mean(doc, "ewc").tolist() == [0.9, 0.1]
    with pytest.raises(KeyError, match="seeds \\[1\\]"):
        common.seed_mean(doc, "ewc", [0, 1])
    assert all(path.parent == BENCH / "out" for path in common.TRUTHS.values())


def test_a_missing_ground_truth_is_one_error_line_and_exit_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        common.load_truth(tmp_path / "nothing.json.gz")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: no ground truth at ") and err.count("\n") == 1


def test_load_truth_reads_order_effects_plain_json_and_its_jobs(tmp_path: Path) -> None:
    runs = [{"order": ["a", "b"], "acc": 0.4}, {"order": ["b", "a"], "acc": 0.6}]
    doc = {"config": {}, "jobs": [{"pool": "p", "strategy": "naive", "seeds": [{"seed": 3, "runs": runs}]}]}
    path = tmp_path / "order_effect.json"
    path.write_text(json.dumps(doc))
    got = common.enumeration_runs(common.load_truth(path), "p", "naive")
    assert got == {3: {("a", "b"): runs[0], ("b", "a"): runs[1]}}
    assert common.enumeration_runs(doc, "p", "ewc") is None


# ---- orderings -----------------------------------------------------------------------------------
def test_all_orderings_are_every_permutation_lexicographic_by_index() -> None:
    names = ["c", "a", "b", "d"]
    got = common.all_orderings(names)
    assert len(got) == 24 == len(set(got))
    assert got[:3] == [("c", "a", "b", "d"), ("c", "a", "d", "b"), ("c", "b", "a", "d")]
    index = {n: i for i, n in enumerate(names)}
    assert got == sorted(got, key=lambda o: [index[n] for n in o])
    firsts = common.all_orderings(names, first="b")
    assert len(firsts) == 6 and all(o[0] == "b" for o in firsts)
    assert firsts == [o for o in got if o[0] == "b"]


TINY = {
    "name": "tiny-bench",
    "train_per_task": 120,
    "test_per_task": 80,
    "tasks": [
        {"name": "upright"},
        {"name": "rot90", "transforms": [{"type": "rotate", "angle": 90}]},
        {"name": "permuted", "transforms": [{"type": "permute", "seed": 1}]},
    ],
}


@pytest.fixture(scope="module")
def trained() -> dict:
    """Every ordering of a 3-task pool on 2 real Ray workers, one at a time and in lockstep."""
    from search.study.cluster import shutdown

    spec = PoolSpec.model_validate(TINY)
    sj = StrategyConfig(name="ewc").model_dump_json()
    tj = TrainConfig(epochs=1, hidden=(16,), device="cpu").model_dump_json()
    names = [t["name"] for t in TINY["tasks"]]
    out: dict = {"spec": spec, "names": names}
    try:
        for population in (1, "auto"):
            out[population] = common.train_every_ordering(spec.model_dump_json(), names, sj, tj, 5, 2, population)
    finally:
        shutdown()
    return out


@pytest.mark.e2e
def test_train_orderings_one_at_a_time_gives_run_orderings_rows_bit_for_bit(trained: dict) -> None:
    rows, stats = trained[1]
    assert list(rows) == common.all_orderings(trained["names"])
    assert len(stats["workers"]) == 2 and all(w["population"] == 1 for w in stats["workers"])
    assert 3 + 6 + 6 <= stats["trained"] <= 6 * 3  # every prefix once, at worst each ordering whole
    pool = build_pool(trained["spec"])
    cfg = TrainConfig(epochs=1, hidden=(16,), device="cpu")
    for order, got in rows.items():
        want = run_ordering(pool, list(order), StrategyConfig(name="ewc"), cfg, 5).rows
        assert got == want, order


@pytest.mark.e2e
def test_train_orderings_in_lockstep_gives_the_same_rows_as_one_at_a_time(trained: dict) -> None:
    """population auto (the search's lockstep path, ground_truth.py's defaults truth) against 1."""
    rows, stats = trained["auto"]
    assert all(w["population"] > 1 for w in stats["workers"])
    assert rows == trained[1][0]


# ---- every script prints its usage ---------------------------------------------------------------
def _run_script(path: Path, *argv: str) -> tuple[int, str, str]:
    """``python bench/NAME.py ARGV`` in this process (so torch is imported once for all scripts);
    the script's folder goes first on sys.path, exactly as Python does for a script."""
    out, err = io.StringIO(), io.StringIO()
    saved_path, saved_argv, saved_env = list(sys.path), list(sys.argv), dict(os.environ)
    sys.path.insert(0, str(path.parent))
    sys.argv = [str(path), *argv]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.path[:], sys.argv = saved_path, saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return (code if isinstance(code, int) else 1 if code else 0), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_script_prints_its_usage_on_help_and_on_bad_arguments(path: Path) -> None:
    code, out, _ = _run_script(path, "--help")
    assert code == 0 and "usage:" in out, out
    if "common.parser(__doc__)" in path.read_text():  # the docstring's command lines are the epilog
        assert f"python bench/{path.name}" in out, f"{path.name} --help shows no command line"
    code, _, err = _run_script(path, "--no-such-option")
    assert code == 2 and "usage:" in err, err


def test_no_bench_script_edits_sys_path() -> None:
    offenders = [p.name for p in BENCH.glob("*.py") if "sys.path.insert" in p.read_text()]
    assert offenders == []


def test_a_bench_script_runs_as_a_plain_script_with_lll_installed() -> None:
    """``python bench/order_effect.py --help`` in a fresh process: ``import common`` resolves from the
    script's folder, lll from the environment, with no path hack."""
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}  # this checkout's lll, as the venv's install would
    res = subprocess.run(
        [sys.executable, str(BENCH / "order_effect.py"), "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr[-2000:]
