"""CPG (Compacting, Picking and Growing, issue 14): frozen answers, growth only when needed, state
that survives save/load mid-sequence, `lll search` and `lll run` end to end, one-line bad input.

Tiny on purpose (a few hundred images, one or two small hidden layers, two epochs); the growth
pool is built so that the outcome is forced, not lucky: compacting is switched off
(``max_prune=0``), so the first task keeps every hidden weight and a later task can only pick
from them. A task on the same digits then needs nothing new, a 10-class permuted task cannot be
learned from two-digit features and must grow.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
import torch
from helpers import default_storage, lll, pool_workdir, tiny_pool_yaml
from optuna.trial import TrialState

from pipeline.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.expansion import pack_bits, unpack_bits
from pipeline.runner import PrefixState, run_ordering
from pipeline.strategies import make_strategy
from pipeline.train import evaluate
from search.study.recording import step_series
from tasks.errors import LLLError
from tasks.pool import PoolSpec, build_pool
from tasks.registry import load_pool

GROWTH_POOL = {
    "name": "cpg-capacity",
    "train_per_task": 200,
    "test_per_task": 100,
    "heads": "per-task",
    "tasks": [
        {"name": "zero-one", "transforms": [{"type": "classes", "keep": [0, 1]}]},
        {"name": "permuted", "transforms": [{"type": "permute", "seed": 1}]},  # hard: all 10 digits
        {"name": "zero-one-again", "transforms": [{"type": "classes", "keep": [0, 1]}]},  # easy
    ],
}
NO_COMPACTING = {"max_prune": 0.0, "grow_by": 8, "max_grow": 1, "grow_epochs": 1}
TINY = TrainConfig(epochs=2, hidden=(16,))


class SerialisingCache:
    """A prefix cache that keeps every state as ``torch.save`` bytes, read back with
    ``torch.load(weights_only=True)``: what a disk cache or a remote worker does."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def get(self, key: str) -> PrefixState | None:
        raw = self.items.get(key)
        return None if raw is None else PrefixState.from_dict(torch.load(io.BytesIO(raw), weights_only=True))

    def put(self, key: str, state: PrefixState) -> None:
        buf = io.BytesIO()
        torch.save(state.to_dict(), buf)
        self.items[key] = buf.getvalue()


def frozen(r) -> bool:
    """R[i][j] == R[j+1][j] for every i > j: nothing learned later changed task j's answers."""
    v = r.values
    return all(v[i, j] == v[j + 1, j] for j in range(r.T) for i in range(j + 1, r.T + 1))


@pytest.fixture(scope="module")
def growth_pool():
    return build_pool(PoolSpec.model_validate(GROWTH_POOL))


@pytest.fixture(scope="module")
def grown(growth_pool):
    c = StrategyConfig(name="cpg", options=NO_COMPACTING)
    return run_ordering(growth_pool, growth_pool.names, c, TINY, seed=0)


def test_bwt_is_exactly_zero_on_split_mnist_and_picking_learns_a_mask():
    pool = load_pool("split-mnist", train_per_task=150, test_per_task=100)
    options = {"prune_step": 0.3, "mask_lr": 0.01, "max_grow": 0}
    r = run_ordering(pool, pool.names, StrategyConfig(name="cpg", options=options), TINY, seed=0)
    assert r.rmatrix.bwt() == 0.0 and frozen(r.rmatrix)
    assert r.rmatrix.acc() > 0.85
    s = r.strategy
    assert [c["task"] for c in s.compacting] == pool.names and s.compacting[0]["pruned"] > 0
    # every later task picked a strict, non-empty part of the weights earlier tasks own
    for k, name in enumerate(pool.names[1:], start=2):
        (n, packed), *_ = s.picks[name].items()
        pick = unpack_bits(packed, s.owner[n].shape)
        earlier = (s.owner[n] > 0) & (s.owner[n] < k)
        assert not (pick & ~earlier).any() and 0 < int(pick.sum()) < int(earlier.sum()), name
    # the per-task size report: the free share never rises without growth, parameters in use rise
    assert all({"params", "stored_bytes", "params_used", "params_grown", "free_share"} <= set(x) for x in r.sizes)
    free = [x["free_share"] for x in r.sizes]
    assert free == sorted(free, reverse=True) and free[-1] < free[0] < 1
    assert [x["params_grown"] for x in r.sizes] == [0] * 5
    used = [x["params_used"] for x in r.sizes]
    assert used == sorted(used) and used[0] < used[-1] <= r.sizes[-1]["params"]


def test_grows_on_a_task_it_cannot_learn_and_not_on_an_easy_one(grown, growth_pool):
    s = grown.strategy
    assert [g["task"] for g in s.growth] == ["permuted"]  # not zero-one, not zero-one-again
    assert s.growth[0]["hidden_before"] == [16] and s.growth[0]["hidden_after"] == [24]
    assert s.growth[0]["acc_before"] < s.accuracy_goal
    params = [x["params"] for x in grown.sizes]
    grew = [x["params_grown"] for x in grown.sizes]
    assert params[0] == params[1] - grew[1] and params[1] == params[2] and grew[0] == 0 and grew[1] == grew[2] > 0
    assert [x["free_share"] for x in grown.sizes] == [0.0, 0.0, 0.0]  # no compacting: nothing left free
    series = step_series(grown)  # what `lll run` records in MLflow, one step per task
    assert series["params_grown"] == [float(g) for g in grew] and len(series["params_used"]) == 3
    assert grown.rmatrix.bwt() == 0.0 and frozen(grown.rmatrix)
    # the easy task answered through weights the first task owns, picked by its mask
    assert grown.rmatrix.values[3, 2] > 0.9


def test_masks_and_pruned_weights_survive_save_and_load_mid_sequence(grown, growth_pool, tmp_path):
    c = StrategyConfig(name="cpg", options=NO_COMPACTING)
    cache = SerialisingCache()
    prefix = run_ordering(growth_pool, growth_pool.names[:2], c, TINY, seed=0, cache=cache)
    resumed = run_ordering(growth_pool, growth_pool.names, c, TINY, seed=0, cache=cache)
    assert resumed.reused == 2 and resumed.trained == 1
    assert (resumed.rmatrix.values == grown.rmatrix.values).all()
    assert resumed.sizes == grown.sizes and resumed.strategy.growth == grown.strategy.growth
    # a checkpoint written after the growth answers every task exactly as before it was written
    path = save_checkpoint(tmp_path / "mid.pt", prefix.model, prefix.strategy)
    ckpt = load_checkpoint(path)
    strategy = make_strategy(c)
    strategy.load_state_dict(ckpt["strategy"])
    row = evaluate(model_from_checkpoint(ckpt), strategy, list(growth_pool.tasks.values()), torch.device("cpu"))
    assert row == prefix.rows[-1]


def test_bit_packing_round_trips():
    mask = torch.rand(7, 13) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (7 * 13 + 7) // 8
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_bad_options_are_one_line_errors():
    with pytest.raises(LLLError, match="prune_tolerance must be ≥ 0"):
        make_strategy(StrategyConfig(name="cpg", options={"prune_tolerance": -0.1}))
    with pytest.raises(LLLError, match="accuracy_goal"):
        make_strategy(StrategyConfig(name="cpg", options={"accuracy_goal": 95}))


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return pool_workdir(tmp_path_factory, "cpg", tiny_pool_yaml("tiny-cpg", 60, 40, rotated_and_permuted=False))


BAD = {
    "class-incremental": (["--pool", "split-mnist-class"], "does not apply to a class-incremental growing head"),
    "negative tolerance": (["--option", "prune_tolerance=-0.5"], "prune_tolerance must be ≥ 0"),
}


@pytest.fixture(scope="module")
def bad_runs(workdir):
    """Both bad commands, run side by side."""
    base = ["run", "--strategy", "cpg", "--epochs", "1", "--train-per-task", "40", "--test-per-task", "20"]
    with ThreadPoolExecutor(max_workers=2) as ex:
        futures = {case: ex.submit(lll, *base, "--no-track", *args, cwd=workdir) for case, (args, _) in BAD.items()}
        return {case: f.result() for case, f in futures.items()}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_through_the_cli_is_one_line_and_exit_2(bad_runs, case):
    done = bad_runs[case]
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD[case][1] in lines[0], done.stderr


@pytest.mark.extended
@pytest.mark.e2e
@pytest.mark.slow
def test_cpg_runs_through_lll_search(workdir):
    """As every other strategy: Ray workers, Optuna trials, the prefix cache; ~10 s of the search is
    training, the rest is starting Ray and the stores (a naive search of the same size costs as much)."""
    args = ["search", "--pool", "pool.yaml", "--strategies", "cpg", "--trials", "2", "--seeds", "1", "--epochs", "1"]
    args += ["--workers", "1", "--hidden", "16", "--option", "cpg:prune_step=0.45", "--no-prune", "--study", "cpg"]
    args += ["--validate", "0"]
    done = lll(*args, cwd=workdir)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="cpg", storage=default_storage(workdir))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    for t in trials:
        assert sorted(t.user_attrs["order"]) == ["rot90", "upright"]
        r = t.user_attrs["R"]
        assert r[2][0] == r[1][0]  # the first task's answers did not change: BWT exactly 0
