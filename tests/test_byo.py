"""Bring your own tasks and model: factories, arrays, Datasets, the CNN, the head convention, bad
input as one line, pool training defaults, `lll run --seeds`, and the example end to end."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import lll
from torch.utils.data import TensorDataset

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.models import build_model, model_for_pool
from pipeline.runner import run_ordering
from tasks.errors import LLLError
from tasks.pool import TaskPool, build_pool, parse_pool_spec
from tasks.registry import builtin_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_names = itertools.count()

TASKS_SRC = """
import numpy as np

def make(seed={seed}):
    rng = np.random.default_rng(seed)
    out = {{}}
    for i in range(3):
        x = rng.normal(size=(60, 2, 6, 6)).astype("float32")
        y = (x[:, 0, 0, 0] > 0).astype("int64") + (x[:, 1, 0, 0] > 0)
        out[f"t{{i}}"] = (x[:40], y[:40], x[40:], y[40:])
    return out
"""

MODELS_SRC = """
from torch import nn

class Headed(nn.Module):
    def __init__(self, shape, n):
        super().__init__()
        d = 1
        for s in shape:
            d *= s
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d, 12), nn.ReLU())
        self.head = nn.Linear(12, n)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))

def headed(shape, n):
    return Headed(shape, n)

def plain(shape, n):
    d = 1
    for s in shape:
        d *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(d, n))

def too_wide(shape, n):
    return plain(shape, n + 1)

def not_a_module(shape, n):
    return [1, 2]

NOT_CALLABLE = 3
"""


def module(tmp_path: Path, monkeypatch, source: str, name: str | None = None) -> str:
    """Write ``source`` as a module in the current directory (fresh, or rewritten: ``name``)."""
    name = name or f"byo_mod_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.modules.pop(name, None)
    monkeypatch.chdir(tmp_path)
    return name


def factory_pool(name: str, **extra) -> TaskPool:
    return build_pool(parse_pool_spec({"name": "mine", "source": "python", "factory": f"{name}:make", **extra}, "t"))


def test_factory_pool_tasks_shapes_and_fingerprint_of_the_data(tmp_path, monkeypatch):
    pool = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0)))
    assert pool.names == ["t0", "t1", "t2"]
    assert pool["t0"].input_shape == (2, 6, 6) and pool["t0"].n_classes == 3
    assert pool["t0"].x_train.dtype == torch.float32 and pool["t0"].y_train.dtype == torch.int64
    name = pool.spec.factory.split(":")[0]
    same = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0), name))
    changed = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=1), name))  # same factory, new data
    assert same.fingerprint() == pool.fingerprint() != changed.fingerprint()
    picked = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0)), tasks=[{"name": "t2"}])
    assert picked.names == ["t2"]
    capped = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0)), train_per_task=10)
    assert len(capped["t0"].y_train) == 10 and len(capped["t0"].y_test) == 20


def test_from_arrays_and_from_datasets_build_the_same_pool():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)).astype("float32"), rng.integers(0, 4, 30)
    arrays = TaskPool.from_arrays("p", {"a": (x[:20], y[:20], x[20:], y[20:])})
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    sets = TaskPool.from_datasets("p", {"a": (TensorDataset(xt[:20], yt[:20]), TensorDataset(xt[20:], yt[20:]))})
    assert arrays.fingerprint() == sets.fingerprint()
    assert torch.equal(arrays["a"].x_train, sets["a"].x_train) and torch.equal(arrays["a"].y_test, sets["a"].y_test)
    r = run_ordering(arrays, ["a"], StrategyConfig(name="naive"), TrainConfig(epochs=1, hidden=(8,)), seed=0)
    assert r.rmatrix.T == 1


def _x(n=4, d=3):
    return np.zeros((n, d), dtype="float32")


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "returned a list"),
        ({"a": (_x(), np.zeros(4, int))}, "give (x_train, y_train, x_test, y_test)"),
        ({"a": (_x(), np.zeros(3, int), _x(2), np.zeros(2, int))}, "x_train has 4 rows but y_train has 3"),
        ({"a": (_x(), np.zeros(4), _x(2), np.zeros(2, int))}, "labels must be integers 0..n-1"),
        ({"a": (_x(), np.array([0, 1, -1, 0]), _x(2), np.zeros(2, int))}, "has label -1"),
        ({"a": (_x(), np.array([0, 1, 5, 0]), _x(2), np.zeros(2, int))}, "labels must be integers 0..2"),
        ({"a": (_x(), np.zeros(4, int), _x(2, 5), np.zeros(2, int))}, "same feature shape"),
        (
            {
                "a": (_x(), np.zeros(4, int), _x(2), np.zeros(2, int)),
                "b": (_x(4, 2), np.zeros(4, int), _x(2, 2), np.zeros(2, int)),
            },
            "give all tasks the same feature shape",
        ),
        ({"a": (["x"] * 4, np.zeros(4, int), _x(2), np.zeros(2, int))}, "not a numeric array"),
        ({"bad name": (_x(), np.zeros(4, int), _x(2), np.zeros(2, int))}, "not a plain name"),
    ],
)
def test_bad_task_data_is_one_line(data, message):
    with pytest.raises(LLLError, match=None) as exc:
        TaskPool.from_arrays("p", data, n_classes=3)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "ref, message",
    [
        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        ("{mod}:missing", "has no 'missing'"),
        ("{mod}:NOT_CALLABLE", "is a int, not a function"),
        ("nocolon", "must look like module:function"),
    ],
)
def test_bad_factory_is_one_line(tmp_path, monkeypatch, ref, message):
    name = module(tmp_path, monkeypatch, MODELS_SRC)
    spec = parse_pool_spec({"name": "p", "source": "python", "factory": ref.format(mod=name)}, "t")
    with pytest.raises(LLLError) as exc:
        build_pool(spec)
    assert message in str(exc.value)


def test_cnn_and_user_models_with_every_head_and_rebuilt_from_their_spec(tmp_path, monkeypatch):
    pool = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0)))
    models = module(tmp_path, monkeypatch, MODELS_SRC)
    x = pool["t1"].x_test[:5]
    for kind, heads in itertools.product(["cnn", f"{models}:headed"], ["shared", "per-task", "growing"]):
        net = model_for_pool(pool, (16,), heads, "he", 0, kind)
        net.grow_for(pool["t1"])
        twin = build_model(json.loads(json.dumps(net.spec)))
        twin.load_state_dict(net.state_dict())
        assert torch.equal(twin(x, "t1"), net(x, "t1")), (kind, heads)
        assert net(x, "t1").shape == (5, 3)
    plain = model_for_pool(pool, (16,), "shared", "he", 0, f"{models}:plain")
    assert plain(x, "t0").shape == (5, 3)
    with pytest.raises(LLLError, match="needs lll to add the heads"):
        model_for_pool(pool, (16,), "per-task", "he", 0, f"{models}:plain")


@pytest.mark.parametrize(
    "model, message",
    [
        ("{m}:too_wide", "gives 4 logits but the pool's classes need 3"),
        ("{m}:not_a_module", "returned a list, not a torch.nn.Module"),
        ("{m}:NOT_CALLABLE", "not a function"),
        ("nowhere_xyz:f", "cannot import module"),
    ],
)
def test_bad_model_is_one_line(tmp_path, monkeypatch, model, message):
    pool = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0)))
    models = module(tmp_path, monkeypatch, MODELS_SRC)
    with pytest.raises(LLLError) as exc:
        model_for_pool(pool, (16,), None, "he", 0, model.format(m=models))
    assert message in str(exc.value)


def test_strategies_on_the_cnn_train_or_refuse_naming_their_models(tmp_path, monkeypatch):
    pool = factory_pool(module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0)))
    cfg = TrainConfig(model="cnn", epochs=1, hidden=(8,))
    for name in ("ewc", "lwf", "expert-gate"):
        r = run_ordering(pool, ["t0", "t1"], StrategyConfig(name=name), cfg, seed=0)
        assert r.rmatrix.T == 2
    for name in ("pnn", "packnet", "net2net", "cpg"):
        with pytest.raises(LLLError, match=f"strategy '{name}' supports --model mlp only"):
            run_ordering(pool, ["t0", "t1"], StrategyConfig(name=name), cfg, seed=0)


def test_babi_pools_default_to_adam():
    # babi-gen's lr was measured (bench/babi_forgetting.py, bench/out/qa15_probe.txt); the real-data pools' was not.
    assert builtin_spec("babi-gen").train == {"optimizer": "adam", "lr": 0.006, "epochs": 20}
    for name in ("babi-20", "babi-10k"):
        assert builtin_spec(name).train == {"optimizer": "adam", "lr": 0.003, "epochs": 20}
    assert builtin_spec("mixed-mnist").train == {}


def test_hidden_must_be_positive_one_line(tmp_path):
    for width in ((-3,), (50, 0)):
        with pytest.raises(ValueError, match="greater than 0"):
            TrainConfig(hidden=width)
    res = lll("run", "--hidden", "0", "--no-track", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("error: --hidden:"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_example_pool_file(monkeypatch):
    monkeypatch.chdir(EXAMPLES)
    pool = build_pool(parse_pool_spec(yaml.safe_load((EXAMPLES / "digits.yaml").read_text()), "digits.yaml"))
    assert pool.names == ["upright", "mirrored", "rot90", "noisy", "inverted"]
    assert pool["rot90"].input_shape == (8, 8) and pool["rot90"].n_classes == 10
    assert pool.spec.train["optimizer"] == "adam"


# The example's module with three of its tasks and tiny data, so the end-to-end test stays fast.
TINY_YAML = """name: digits-tiny
source: python
factory: digits:make_tasks
train_per_task: 60
test_per_task: 30
train: {optimizer: adam, lr: 0.003, epochs: 1, hidden: [16]}
tasks: [{name: upright}, {name: rot90}, {name: inverted}]
"""


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("example")
    shutil.copy(EXAMPLES / "digits.py", d / "digits.py")
    (d / "digits.yaml").write_text(TINY_YAML)
    return d


@pytest.mark.extended
@pytest.mark.e2e
def test_example_search_export_rerun(example_dir):
    """The example of docs/own-tasks.md through the CLI: a search with the CNN on Ray (the pool's training
    defaults under a flag), the export, and its rerun on the study's seeds giving the exported
    numbers exactly, each seed's R kept in the rerun's MLflow run."""
    d, uri, storage = example_dir, f"sqlite:///{example_dir}/mlflow.db", f"sqlite:///{example_dir}/optuna.db"
    res = lll("search", "--validate", "0", "--pool", "digits.yaml", "--model", "cnn", "--lr", "0.01",
              "--strategies", "naive,ewc",
              "--trials", "2", "--seeds", "2", "--workers", "1", "--study", "ex", "--storage", storage,
              "--tracking-uri", uri, cwd=d)  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = lll("export", "--study", "ex", "--storage", storage, "--out", "order.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rec = json.loads((d / "order.json").read_text())
    for flag in ("--model cnn", "--seeds 0,1", "--optimizer adam", "--lr 0.01", "--hidden 16"):  # pool + flags
        assert flag in rec["rerun"], (flag, rec["rerun"])
    res = lll(*rec["rerun"].split()[1:], "--tracking-uri", uri, "--out", "rerun.json", cwd=d)
    assert res.returncode == 0, res.stderr
    rerun = json.loads((d / "rerun.json").read_text())
    assert (rerun["acc"], rerun["bwt"], rerun["fwt"]) == (rec["acc"], rec["bwt"], rec["fwt"])
    assert rerun["params"]["seeds"] == [0, 1] and len(rerun["per_seed"]) == 2
    assert rerun["per_seed"][0]["R"] != rerun["per_seed"][1]["R"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    mlrun = client.get_run(rerun["mlflow_run_id"])
    assert {"acc_seed0", "acc_seed1", "acc", "acc_std"} <= set(mlrun.data.metrics)
    assert mlrun.data.metrics["acc"] == rec["acc"]
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "per_seed")} == {
        "per_seed/R_seed0.json",
        "per_seed/R_seed1.json",
    }


def test_user_modules_are_shipped_to_ray_workers(tmp_path, monkeypatch):
    from search.study.cluster import runtime_env

    name = module(tmp_path, monkeypatch, TASKS_SRC.format(seed=0))
    factory_pool(name)
    assert str(tmp_path / f"{name}.py") in runtime_env()["py_modules"]
