"""Named built-in pools, and the one function that turns a pool name or YAML path into a TaskPool.

Built-in pools are written as the same dicts a YAML file would hold, so there is one code path.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from tasks.errors import LLLError
from tasks.pool import PoolSpec, TaskPool, build_pool, load_pool_file, parse_pool_spec

DEFAULT_POOL = "mixed-mnist"

# Ten heterogeneous tasks; mixed-mnist-7 takes the first seven.
_MIXED_TASKS: list[dict] = [
    {"name": "upright"},
    {"name": "rot90", "transforms": [{"type": "rotate", "angle": 90}]},
    {"name": "noisy", "transforms": [{"type": "noise", "sigma": 0.6}]},
    {"name": "inverted", "transforms": [{"type": "invert"}]},
    {"name": "permuted", "transforms": [{"type": "permute", "seed": 1}]},
    {"name": "blurred", "transforms": [{"type": "blur", "sigma": 1.5}]},
    {
        "name": "low-rot180",
        "transforms": [
            {"type": "classes", "keep": [0, 1, 2, 3, 4], "relabel": False},
            {"type": "rotate", "angle": 180},
        ],
    },
    {"name": "rot45", "transforms": [{"type": "rotate", "angle": 45}]},
    {"name": "permuted2", "transforms": [{"type": "permute", "seed": 2}]},
    {
        "name": "high-inverted-noisy",
        "transforms": [
            {"type": "classes", "keep": [5, 6, 7, 8, 9], "relabel": False},
            {"type": "invert"},
            {"type": "noise", "sigma": 0.4},
        ],
    },
]

BUILTIN_POOLS: dict[str, dict] = {
    "mixed-mnist": {
        "description": "Default: five heterogeneous digit tasks whose training order changes ACC and BWT",
        "tasks": [
            {"name": "upright"},
            {"name": "rot90", "transforms": [{"type": "rotate", "angle": 90}]},
            {"name": "noisy", "transforms": [{"type": "noise", "sigma": 0.6}]},
            {"name": "inverted", "transforms": [{"type": "invert"}]},
            {"name": "permuted", "transforms": [{"type": "permute", "seed": 1}]},
        ],
    },
    "permuted-mnist": {
        "description": "The GEM/EWC benchmark: the same digits under 5 fixed pixel permutations",
        "tasks": [{"name": f"perm{i}", "transforms": [{"type": "permute", "seed": 100 + i}]} for i in range(5)],
    },
    "rotated-mnist": {
        "description": "Digits rotated by 0, 45, 90, 135 and 180 degrees",
        "tasks": [{"name": f"rot{a}", "transforms": [{"type": "rotate", "angle": a}]} for a in (0, 45, 90, 135, 180)],
    },
    "split-mnist": {
        "description": "5 tasks of 2 classes ({0,1}, {2,3}, ...), one head per task (task-incremental)",
        "heads": "per-task",
        "tasks": [
            {"name": f"digits{a}{a + 1}", "transforms": [{"type": "classes", "keep": [a, a + 1]}]}
            for a in range(0, 10, 2)
        ],
    },
    "split-mnist-class": {
        "description": "Class-incremental split MNIST: 5 tasks of 2 digits, original labels 0..9, one growing head",
        "heads": "growing",
        "tasks": [
            {"name": f"digits{a}{a + 1}", "transforms": [{"type": "classes", "keep": [a, a + 1], "relabel": False}]}
            for a in range(0, 10, 2)
        ],
    },
    "noisy-clean": {
        "description": "The lecture's two-task example: noisy digits, then clean digits",
        "tasks": [
            {"name": "noisy", "transforms": [{"type": "noise", "sigma": 0.6}]},
            {"name": "clean"},
        ],
    },
    # Realistic-size pools (issue 13): heterogeneous tasks built from the same transforms. The first five
    # tasks of the mixed pools are mixed-mnist's; the class subsets keep original labels (shared head).
    "mixed-mnist-7": {
        "description": "Seven heterogeneous digit tasks: the 7-task ground-truth pool (5,040 orderings)",
        "tasks": _MIXED_TASKS[:7],
    },
    "mixed-mnist-10": {
        "description": "Ten heterogeneous digit tasks (rotations, noise, blur, inversion, permutations, class subsets)",
        "tasks": _MIXED_TASKS,
    },
    "permuted-mnist-10": {
        "description": "The same digits under 10 fixed pixel permutations",
        "tasks": [{"name": f"perm{i}", "transforms": [{"type": "permute", "seed": 100 + i}]} for i in range(10)],
    },
    "rotated-mnist-10": {
        "description": "Digits rotated by 0, 18, 36, ... 162 degrees",
        "tasks": [{"name": f"rot{a}", "transforms": [{"type": "rotate", "angle": a}]} for a in range(0, 180, 18)],
    },
    # bAbI question answering (tasks/babi.py): one shared vocabulary and answer space per pool.
    "babi-gen": {
        "description": "bAbI QA tasks 1,2,6,7,8,9,10,15 from the offline story generator (text default)",
        "source": "babi-gen",
        # The memory network needs Adam; lr 0.006 for 20 epochs lets two-hop qa15 form its attention chain
        # in its 375 steps (0.003 left it at 50 % under joint training; bench/out/qa15_probe.txt).
        "train": {"optimizer": "adam", "lr": 0.006, "epochs": 20},
        "train_per_task": 600,
        "test_per_task": 200,
        "tasks": [{"name": f"qa{k}", "babi_task": k} for k in (1, 2, 6, 7, 8, 9, 10, 15)],
    },
    "babi-20": {
        "description": "The 20 real bAbI QA tasks, 1k questions each (tasks_1-20_v1-2/en in --data-dir)",
        "source": "babi",
        "train": {"optimizer": "adam", "lr": 0.003, "epochs": 20},
        "train_per_task": 1000,
        "test_per_task": 1000,
        "tasks": [{"name": f"qa{k}", "babi_task": k} for k in range(1, 21)],
    },
    "babi-10k": {
        "description": "The 20 real bAbI QA tasks, 10k questions each (tasks_1-20_v1-2/en-10k in --data-dir)",
        "source": "babi",
        "train": {"optimizer": "adam", "lr": 0.003, "epochs": 20},
        "babi_variant": "en-10k",
        "train_per_task": 10000,
        "test_per_task": 1000,
        "tasks": [{"name": f"qa{k}", "babi_task": k} for k in range(1, 21)],
    },
}


def builtin_spec(name: str) -> PoolSpec:
    return parse_pool_spec({"name": name, **BUILTIN_POOLS[name]}, f"built-in pool {name}")


def resolve_pool_spec(
    pool: str,
    data_dir: str | None = None,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
) -> PoolSpec:
    """A built-in name or a YAML path, with command-line overrides applied.

    ``data_dir`` switches an MNIST pool to full MNIST read from that directory; bAbI pools read
    their files from it.
    """
    if pool in BUILTIN_POOLS:
        spec = builtin_spec(pool)
    elif pool.endswith((".yaml", ".yml")) or Path(pool).exists():
        spec = load_pool_file(pool)
    else:
        close = difflib.get_close_matches(pool, BUILTIN_POOLS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise LLLError(
            f"unknown pool {pool!r}; {hint}choose one of {', '.join(BUILTIN_POOLS)} (see `lll pools`) "
            "or give a path to a pool YAML file"
        )
    updates: dict = {}
    if data_dir is not None and spec.source == "mnist-5k":
        updates["source"] = "mnist"
    if train_per_task is not None:
        updates["train_per_task"] = train_per_task
    if test_per_task is not None:
        updates["test_per_task"] = test_per_task
    if updates:
        spec = parse_pool_spec({**spec.model_dump(mode="json"), **updates}, f"pool {spec.name}")
    return spec


def load_pool(
    pool: str = DEFAULT_POOL,
    data_dir: str | None = None,
    download: bool = False,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
) -> TaskPool:
    """Build (once per process) the pool named ``pool`` — a built-in name or a YAML path."""
    spec = resolve_pool_spec(pool, data_dir, train_per_task, test_per_task)
    return _build_cached(spec.model_dump_json(), data_dir, download)


@lru_cache(maxsize=8)
def _build_cached(spec_json: str, data_dir: str | None, download: bool) -> TaskPool:
    return build_pool(PoolSpec.model_validate_json(spec_json), data_dir=data_dir, download=download)
