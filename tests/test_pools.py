"""Task pools: every built-in image pool builds as described, a YAML pool works end to end, and
every mistake in a pool file is one line naming the file, the key and the fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import LLL_ENV

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from tasks.errors import LLLError
from tasks.pool import check_order, load_pool_file
from tasks.registry import BUILTIN_POOLS, DEFAULT_POOL, load_pool, resolve_pool_spec

SMALL = {"train_per_task": 200, "test_per_task": 100}
IMAGE_POOLS = [n for n, p in BUILTIN_POOLS.items() if p.get("source", "mnist-5k") == "mnist-5k"]


def test_the_image_pools_are_all_there() -> None:
    assert DEFAULT_POOL == "mixed-mnist"
    assert {"mixed-mnist", "permuted-mnist", "rotated-mnist", "split-mnist", "noisy-clean"} <= set(IMAGE_POOLS)


@pytest.mark.parametrize("name", IMAGE_POOLS)
def test_every_builtin_image_pool_builds(name: str) -> None:
    pool = load_pool(name, **SMALL)
    spec = BUILTIN_POOLS[name]
    assert pool.names == [t["name"] for t in spec["tasks"]]
    for task in pool.tasks.values():
        assert task.x_train.shape[1:] == (28, 28) and task.x_train.dtype == torch.float32
        assert 0 < len(task.y_train) <= 200 and 0 < len(task.y_test) <= 100
        assert float(task.x_train.min()) >= 0.0 and float(task.x_train.max()) <= 1.0
        assert int(task.y_train.max()) < task.n_classes
        assert set(task.y_test.tolist()) == set(task.y_train.tolist())  # every class learned is tested
    fingerprints = {t.fingerprint() for t in pool.tasks.values()}
    assert len(fingerprints) == len(pool.tasks)
    # Tasks are different inputs: no two tasks have the same training images.
    xs = [t.x_train for t in pool.tasks.values()]
    assert all(not torch.equal(a, b) for i, a in enumerate(xs) for b in xs[i + 1 :] if a.shape == b.shape)


def test_split_mnist_has_two_classes_per_task_and_per_task_heads() -> None:
    pool = load_pool("split-mnist", **SMALL)
    assert pool.spec.heads == "per-task"
    for k, task in enumerate(pool.tasks.values()):
        assert task.n_classes == 2 and set(task.y_train.tolist()) == {0, 1}
        assert task.spec["transforms"] == [{"type": "classes", "keep": [2 * k, 2 * k + 1], "relabel": True}]


def test_rotated_and_permuted_pools_match_their_names() -> None:
    rot = load_pool("rotated-mnist", **SMALL)
    assert torch.equal(rot["rot90"].x_train, torch.rot90(rot["rot0"].x_train, 1, dims=(1, 2)))
    assert torch.equal(rot["rot180"].x_train, torch.rot90(rot["rot0"].x_train, 2, dims=(1, 2)))
    perm = load_pool("permuted-mnist", **SMALL)
    a, b = perm["perm0"].x_train, perm["perm1"].x_train
    assert torch.equal(a.flatten(1).sort(1).values, b.flatten(1).sort(1).values)  # same pixels, other places


def test_overrides_and_notes() -> None:
    spec = resolve_pool_spec("noisy-clean", train_per_task=7, test_per_task=3)
    assert (spec.train_per_task, spec.test_per_task) == (7, 3)
    pool = load_pool("split-mnist")  # default 1000 train images per task; the subset has ~800 per pair
    assert "of 1000 train images for 5 task(s)" in pool.note
    assert load_pool("noisy-clean", **SMALL).note == ""
    with pytest.raises(LLLError, match="did you mean 'split-mnist'"):
        resolve_pool_spec("split-mnsit")


# ---------------------------------------------------------------------------------------------
# YAML pools
# ---------------------------------------------------------------------------------------------
POOL_YAML = """\
name: my-pool
description: three tasks from a file
train_per_task: 120
test_per_task: 60
seed: 11
tasks:
  - name: plain
  - name: tilted
    transforms:
      - {type: rotate, angle: 30}
      - {type: blur, sigma: 0.8}
  - name: evens
    transforms:
      - type: classes
        keep: [0, 2, 4, 6, 8]
      - {type: invert}
"""


def test_yaml_pool_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "my-pool.yaml"
    path.write_text(POOL_YAML)
    pool = load_pool(str(path))
    assert pool.name == "my-pool" and pool.names == ["plain", "tilted", "evens"]
    assert len(pool["plain"].y_train) == 120 and len(pool["plain"].y_test) == 60
    assert pool["evens"].n_classes == 5 and set(pool["evens"].y_train.tolist()) == {0, 1, 2, 3, 4}
    assert float(pool["evens"].x_train.mean()) > 0.5  # inverted: mostly white
    assert pool["plain"].spec["pool_seed"] == 11
    # The same file gives the same pool; it trains and evaluates like a built-in one.
    assert load_pool_file(path) == pool.spec
    result = run_ordering(pool, ["evens", "plain"], StrategyConfig(), TrainConfig(epochs=1, hidden=(16,)), seed=0)
    assert result.rmatrix.tasks == ("evens", "plain") and result.rmatrix.values.shape == (3, 2)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: p\ntasks: [ {name: a}\n", r"not valid YAML at line \d+, column \d+"),
        ("- just\n- a list\n", r"must be a YAML mapping"),
        ("", r"must be a YAML mapping"),
        ("name: p\ntask:\n  - name: a\n", r"unknown key 'task'; did you mean 'tasks'\? the keys allowed there are"),
        ("name: p\ntasks:\n  - name: a\n    transform: []\n", r"tasks\[0\] \(a\)\.transform: unknown key 'transform'"),
        ("name: p\ntasks:\n  - name: a\n  - name: a\n", r"tasks: task names must be unique, repeated: a; rename"),
        (
            "name: p\ntasks:\n  - name: a\n    transforms: [{type: rotate, angle: north}]\n",
            r"tasks\[0\] \(a\)\.transforms\[0\]\.angle: Input should be a valid number.*'north'.*fix that value",
        ),
        (
            "name: p\ntasks:\n  - name: a\n    transforms: [{type: spin}]\n",
            r"transforms\[0\]: unknown type 'spin'; give `type:` one of permute, rotate",
        ),
        (
            "name: p\ntasks:\n  - name: a\n    transforms: [{type: noise, sigma: 0.5, sd: 1}]\n",
            r"unknown key 'sd'; .*the keys allowed there are: type, sigma, seed",
        ),
        ("name: p\ntasks:\n  - name: a\n    transforms: [{type: noise}]\n", r"transforms\[0\]\.sigma: required key"),
        ("name: p\ntrain_per_task: -5\ntasks: [{name: a}]\n", r"train_per_task: .*greater than 0 \(got -5\)"),
        ("name: p\nsource: cifar\ntasks: [{name: a}]\n", r"source: Input should be .*mnist-5k"),
        ("tasks: [{name: a}]\n", r"name: required key missing"),
    ],
)
def test_bad_pool_files_give_one_line_naming_file_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LLLError) as info:
        load_pool(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert re.search(expected, message), message


def test_missing_pool_file_and_empty_class_filter(tmp_path: Path) -> None:
    with pytest.raises(LLLError, match=r"cannot read pool file .*nope\.yaml: No such file"):
        load_pool(str(tmp_path / "nope.yaml"))
    path = tmp_path / "empty.yaml"
    path.write_text("name: p\ntasks:\n  - name: a\n    transforms: [{type: classes, keep: [42]}]\n")
    with pytest.raises(LLLError, match=r"task 'a' keeps no train images.*classes"):
        load_pool(str(path))


# ---------------------------------------------------------------------------------------------
# orders
# ---------------------------------------------------------------------------------------------
def test_resolve_order() -> None:
    pool = load_pool("noisy-clean", **SMALL)
    assert pool.resolve_order(None) == ["noisy", "clean"]
    assert pool.resolve_order("") == ["noisy", "clean"]
    assert pool.resolve_order("clean, noisy") == ["clean", "noisy"]
    assert pool.resolve_order(["clean"]) == ["clean"]  # a subset is a valid order
    assert pool.resolve_order("clean,,noisy,") == ["clean", "noisy"]
    with pytest.raises(LLLError, match=r"pool 'noisy-clean' has no task 'dirty'; its tasks are: noisy, clean"):
        pool.resolve_order("noisy,dirty")
    with pytest.raises(LLLError, match=r"task 'clean' appears twice"):
        pool.resolve_order(["clean", "noisy", "clean"])
    with pytest.raises(LLLError, match="has no task 'x'"):
        pool["x"]
    # The same check works on names alone, before anything is built.
    assert check_order(["a", "b", "c"], "c,a", "p") == ["c", "a"]
    with pytest.raises(LLLError, match="appears twice"):
        check_order(["a", "b"], "a,a", "p")


# ---------------------------------------------------------------------------------------------
# `lll pools`: whole names at 80 columns and through a pipe; --json for scripts
# ---------------------------------------------------------------------------------------------
def lll_pools(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`lll pools` with its output going to a pipe (as `lll pools | grep` does) on an 80-column terminal."""
    env = {**LLL_ENV, "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "search.cli", "pools", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_pools_through_a_pipe_at_80_columns_shows_every_name_whole(tmp_path: Path) -> None:
    res = lll_pools(tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in res.stdout
    for name in BUILTIN_POOLS:  # each at the start of its own line, whole: `lll pools | grep ^NAME:` finds it
        heads = [ln for ln in lines if re.match(rf"{re.escape(name)}( \(default\))?: ", ln)]
        assert len(heads) == 1, (name, res.stdout)
        tasks = [t["name"] for t in BUILTIN_POOLS[name]["tasks"]]
        assert heads[0].split(": ", 1)[1].startswith(f"{len(tasks)} tasks")
    assert re.search(rf"^{DEFAULT_POOL} \(default\): ", res.stdout, re.M)
    # Every task name of every pool is printed whole too (no line breaks inside names).
    words = set(re.findall(r"[\w-]+", res.stdout))
    assert {t["name"] for p in BUILTIN_POOLS.values() for t in p["tasks"]} <= words


def test_pools_json_lists_every_builtin_pool(tmp_path: Path) -> None:
    res = lll_pools(tmp_path, "--json")
    assert res.returncode == 0, res.stderr
    entries = json.loads(res.stdout)
    assert [e["name"] for e in entries] == list(BUILTIN_POOLS)
    for e in entries:
        spec = BUILTIN_POOLS[e["name"]]
        assert e["tasks"] == [t["name"] for t in spec["tasks"]]
        assert e["description"] == spec["description"] and e["default"] == (e["name"] == DEFAULT_POOL)
        assert e["source"] == spec.get("source", "mnist-5k") and e["heads"] == spec.get("heads", "shared")
        assert e["train"] == spec.get("train", {}) and e["training"]
