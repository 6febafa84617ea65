"""Issue 22: pair evidence on several seeds (spread on the graph's edges), the zero-shot pick and
its trust verdict, and `lll affinity`'s bad input through the real command."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import lll, pool_workdir, tiny_pool_yaml

from search.graph.affinity import build_graph, pair_noise
from search.graph.evidence import Evidence, Tally, evidence_from_rows
from search.graph.model import GraphModel, ModelParams
from search.graph.zero_shot import (
    AGREEMENT_MIN,
    ALPHAS,
    TRUST_RATIO,
    PairArrays,
    precedence_scores,
    prefix_greedy,
    zero_shot_pick,
)


def world(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random (tasks, init, base, pair rows) of a pool: base[k] = row after k alone, pair[a, b] =
    row after a then b, every row over all tasks."""
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n)]
    init = rng.uniform(0.05, 0.15, n)
    solo = rng.uniform(0.6, 0.95, n)
    base = init[None, :] + rng.uniform(0.0, 0.4, (n, n)) * (solo - init)[None, :]
    np.fill_diagonal(base, solo)
    pair = np.zeros((n, n, n))
    for a, b in itertools.permutations(range(n), 2):
        pair[a, b] = base[b]
        pair[a, b, a] = base[a, a] - rng.uniform(0.05, 0.5) * (solo[a] - base[b, a])
    return tasks, init, base, pair, solo


def seed_evidence(tasks, init, base, pair, shift: float = 0.0) -> Evidence:
    row = lambda v: dict(zip(tasks, (float(x) + shift for x in v), strict=True))  # noqa: E731
    single = {a: row(base[k]) for k, a in enumerate(tasks)}
    pairs = {(tasks[a], tasks[b]): row(pair[a, b]) for a, b in itertools.permutations(range(len(tasks)), 2)}
    return evidence_from_rows(row(init), single, pairs)


def test_tally_keeps_the_spread_and_old_evidence_still_reads() -> None:
    t = Tally()
    for v in (0.2, 0.4, 0.9):
        t.add(v)
    assert t.mean == pytest.approx(0.5) and t.sd == pytest.approx(float(np.std([0.2, 0.4, 0.9], ddof=1)))
    assert math.isnan(Tally(0.3, 1, 0.09).sd)
    old = {"transfer": [["a", "b", 0.6, 2]], "solo": [["a", 1.8, 2]]}  # written before the sum of squares
    ev = Evidence.from_dict(old)
    assert ev.transfer[("a", "b")].mean == pytest.approx(0.3) and ev.transfer[("a", "b")].sd == pytest.approx(0)


def test_several_seeds_average_and_their_spread_is_on_the_edges() -> None:
    tasks, init, base, pair, _ = world(3, 0)
    s0, s1 = seed_evidence(tasks, init, base, pair), seed_evidence(tasks, init, base, pair, shift=0.04)
    g = build_graph(tasks, s0.merge(s1))
    e = g.edges["t0", "t1"]
    # transfer = row after t0 on t1 − init on t1: the shift cancels, so both seeds agree exactly
    assert e["transfer"] == pytest.approx(base[0, 1] - init[1]) and e["transfer_sd"] == pytest.approx(0, abs=1e-9)
    # learned = accuracy on t1 after t0 then t1: seeds 0.04 apart → mean + 0.02, SD 0.04/√2
    assert e["learned"] == pytest.approx(pair[0, 1, 1] + 0.02)
    assert e["learned_sd"] == pytest.approx(0.04 / math.sqrt(2))
    assert g.nodes["t0"]["solo_sd"] == pytest.approx(0.04 / math.sqrt(2))
    assert g.graph["pair_noise"] == pytest.approx(pair_noise(s0.merge(s1)))
    assert math.isnan(build_graph(tasks, s0).graph["pair_noise"])  # one seed: no spread to measure
    arrays = PairArrays.from_graph(g)
    assert arrays.seeds == 2 and arrays.noise == pytest.approx(g.graph["pair_noise"])


def test_precedence_score_by_hand() -> None:
    d = np.array([[0.0, 0.3, -0.1], [-0.3, 0.0, 0.2], [0.1, -0.2, 0.0]])
    got = precedence_scores(d, np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2]]))
    assert got == pytest.approx([0.3 - 0.1 + 0.2, -0.2 + 0.1 - 0.3, -0.3 + 0.2 - 0.1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_pick_is_near_the_top_of_the_world_it_was_measured_from(seed: int) -> None:
    """Evidence generated without noise from a pool whose ACC the graph model (α = 1, κ = 0)
    computes: the pick ranks in the top 5 % of that model's 720 orderings, every ordering ranked by
    brute force."""
    tasks, init, base, pair, solo = world(6, seed)
    g = build_graph(tasks, seed_evidence(tasks, init, base, pair), meta={"strategy": "naive"})
    truth = GraphModel.from_arrays(
        tasks, solo, base.T, np.array([[pair[j, k, j] if j != k else solo[j] for k in range(6)] for j in range(6)]),
        ModelParams(), init,
    )  # fmt: skip
    orders = [list(p) for p in itertools.permutations(tasks)]
    values = truth.predict(orders)
    pick = zero_shot_pick(g, "naive", draws=4)
    rank = int((values > truth.predict([pick.order])[0] + 1e-12).sum()) + 1
    assert rank <= 36, rank
    assert pick.predicted == pytest.approx(float(truth.predict([pick.order])[0]))  # reference model: α 1, κ 0
    assert pick.interval[0] <= pick.interval[1] and not pick.noise_measured


def test_measured_pair_noise_raises_the_noise_ratio_and_widens_the_interval() -> None:
    tasks, init, base, pair, _ = world(6, 4)
    clean = seed_evidence(tasks, init, base, pair)
    same = build_graph(tasks, clean.merge(clean), meta={"strategy": "naive"})  # two identical seeds: SD 0
    p = zero_shot_pick(same, draws=10)
    assert p.noise_measured and p.noise == pytest.approx(0, abs=1e-6) and p.stability == 1.0 and p.trusted
    assert p.noise_ratio == pytest.approx(0, abs=1e-9)
    rng = np.random.default_rng(0)
    seeds = [seed_evidence(tasks, init, np.clip(base + rng.normal(0, 0.3, base.shape), 0, 1),
                           np.clip(pair + rng.normal(0, 0.3, pair.shape), 0, 1)) for _ in range(2)]  # fmt: skip
    noisy = build_graph(tasks, seeds[0].merge(seeds[1]), meta={"strategy": "naive"})
    q = zero_shot_pick(noisy, draws=20)
    assert q.noise > 0.1 and q.stability < p.stability  # measured spread → a less stable pick
    assert q.noise_ratio > TRUST_RATIO and not q.trusted  # noise of 0.3 per value swamps the ordering effect
    assert q.interval[0] <= q.predicted <= q.interval[1]
    # without noise the copies equal the evidence: the interval is the graph models' own spread
    # (α ∈ ALPHAS, κ 0), recomputed here from the arrays with every model's parameters
    arrays = PairArrays.from_graph(same)
    perm = np.array([[tasks.index(a) for a in p.order]])
    models = [float(arrays.model(ModelParams(alpha=a)).predict_perms(perm)[0]) for a in ALPHAS]
    want = np.percentile([p.predicted, *models * 11], [5, 95])
    assert p.interval == pytest.approx(tuple(want), abs=1e-9) and p.interval[1] - p.interval[0] > 0.01


def test_prefix_greedy_takes_the_broad_best_not_an_isolated_spike() -> None:
    """A score with a first-order effect (task i at position p scores w[i]·p: the heavier a task,
    the later it should come) plus one isolated spike on a poor ordering: the argmax is the spike,
    the position-by-position pick is the broad best (tasks by increasing weight)."""
    n = 5
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    w = np.array([3.0, 1.0, 4.0, 0.5, 2.0])
    spike = np.array([2, 0, 4, 1, 3])

    def score(p: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(p)
        s = (w[p] * np.arange(n)).sum(axis=1)
        return s + 100.0 * (p == spike).all(axis=1)

    assert (perms[np.argmax(score(perms))] == spike).all()
    best = list(np.argsort(w))  # [3, 1, 4, 0, 2]
    assert prefix_greedy(score, n, perms, np.random.default_rng(0)).tolist() == best
    # beyond the enumerated sizes the means come from sampled completions: same answer on 9 tasks
    w9 = np.array([3.0, 1.0, 4.0, 0.0, 2.0, 6.0, 5.0, 8.0, 7.0])
    got = prefix_greedy(lambda p: (w9[np.atleast_2d(p)] * np.arange(9)).sum(axis=1), 9, np.empty((0, 9)),
                        np.random.default_rng(1), samples=64)  # fmt: skip
    assert got.tolist() == list(np.argsort(w9))


def test_the_pick_is_built_from_the_pairs_and_its_runners_up_differ() -> None:
    """On constructed pair evidence the pick is prefix_greedy over the consensus of the graph's own
    ensemble, recomputed here from the arrays; runners-up are other orderings."""
    from search.graph.zero_shot import Ensemble

    tasks, init, base, pair, _ = world(5, 7)
    g = build_graph(tasks, seed_evidence(tasks, init, base, pair), meta={"strategy": "naive"})
    ens = Ensemble.build(PairArrays.from_graph(g), "naive")
    want = prefix_greedy(ens.score, 5, ens.ref_perms, np.random.default_rng(0))
    pick = zero_shot_pick(g, "naive", k=3, draws=0)
    assert pick.order == [tasks[i] for i in want] and "position by position" in pick.how
    assert len(pick.runners_up) == 2 and all(o != pick.order for o, _ in pick.runners_up)
    assert pick.noise_ratio == 0  # no noisy copies drawn: nothing measured
    assert pick.trusted == (pick.agreement >= AGREEMENT_MIN)


@pytest.mark.parametrize("seed, trusted", [(4, True), (5, False)])
def test_disagreeing_readings_of_the_evidence_are_not_trusted(seed: int, trusted: bool) -> None:
    """The agreement is the least Spearman ρ between two scorers' rankings of every ordering,
    recomputed here with numpy; below AGREEMENT_MIN the pick is not trusted, whatever the noise."""
    from search.graph.zero_shot import Ensemble

    tasks, init, base, pair, _ = world(6 if seed == 4 else 5, seed)
    g = build_graph(tasks, seed_evidence(tasks, init, base, pair), meta={"strategy": "naive"})
    ens = Ensemble.build(PairArrays.from_graph(g), "naive")
    from scipy.stats import rankdata

    ranks = [rankdata(r) for r in ens.raw(ens.ref_perms)]  # average ranks for ties
    least = min(np.corrcoef(a, b)[0, 1] for a, b in itertools.combinations(ranks, 2))
    pick = zero_shot_pick(g, "naive", draws=0)
    assert pick.agreement == pytest.approx(least, abs=1e-9)
    assert pick.noise_ratio == 0 and pick.trusted == trusted and bool(least >= AGREEMENT_MIN) == trusted


@pytest.mark.parametrize("noisy", [False, True])
def test_seed_from_graph_enqueues_only_a_trusted_picks_orderings(noisy: bool) -> None:
    """`--seed-from-graph` after the graph is measured: with clean pair evidence (two identical
    seeds) the pick is trusted and the candidates are the study's first trials; with a noise of
    0.3 per value it is not, nothing is enqueued and the graph is only the sampler's feature.
    Either way every candidate is recorded with whether it was enqueued."""
    import optuna
    from optuna.trial import TrialState

    from search.orders.space import SearchSpace
    from search.study.graph_seed import candidate_orderings, seed_study

    tasks, init, base, pair, _ = world(6, 4)
    rng = np.random.default_rng(0)
    if noisy:
        seeds = [seed_evidence(tasks, init, np.clip(base + rng.normal(0, 0.3, base.shape), 0, 1),
                               np.clip(pair + rng.normal(0, 0.3, pair.shape), 0, 1)) for _ in range(2)]  # fmt: skip
    else:
        seeds = [seed_evidence(tasks, init, base, pair)] * 2
    g = build_graph(tasks, seeds[0].merge(seeds[1]), meta={"strategy": "naive"})
    pick = zero_shot_pick(g, "naive")
    assert pick.trusted is not noisy
    space = SearchSpace(tasks, ["naive"])
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    cands = seed_study(study, space, g, "naive")
    assert [o for o, _ in cands] == [o for o, _ in candidate_orderings(g, pick=pick)] and cands[0][0] == pick.order
    kept = study.user_attrs["graph_orderings"]
    assert [r["order"] for r in kept] == [o for o, _ in cands] and {r["enqueued"] for r in kept} == {not noisy}
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == (0 if noisy else len(cands))
    if not noisy:
        assert [list(space.suggest(study.ask()).order) for _ in cands] == [o for o, _ in cands]
    from search.cli.commands.search import seeding_line  # what `lll search --seed-from-graph` prints

    line = seeding_line(kept, "model")
    assert ("not trusted" in line and "feature" in line) if noisy else f"{len(cands)} of its orderings" in line
    assert noisy is ("--sampler tpe ignores it" in seeding_line(kept, "tpe"))


def test_penalty_strategies_add_the_precedence_and_their_models_stiffen() -> None:
    tasks, init, base, pair, _ = world(5, 5)
    g = build_graph(tasks, seed_evidence(tasks, init, base, pair))
    assert "precedence" in zero_shot_pick(g, "ewc", draws=0).how
    assert "precedence" not in zero_shot_pick(g, "naive", draws=0).how
    assert zero_shot_pick(g, "ewc", draws=0).params.kappa > 0 == zero_shot_pick(g, "naive", draws=0).params.kappa


# ---- bad input through the command line ----------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = pool_workdir(tmp_path_factory, "zero-shot", tiny_pool_yaml("tiny-zs", 60, 40))
    (d / "two.yaml").write_text(tiny_pool_yaml("tiny-two", 60, 40, rotated_and_permuted=False))
    return d


def one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_seeds_zero_and_a_pool_of_two_tasks_are_one_line_each(workdir: Path) -> None:
    line = one_error_line(lll("affinity", "--pool", "pool.yaml", "--seeds", "0", cwd=workdir, timeout=120))
    assert "--seeds 0" in line and "--seeds 1 or more" in line
    line = one_error_line(lll("affinity", "--pool", "two.yaml", "--recommend", cwd=workdir, timeout=120))
    assert "has 2 task(s); an affinity graph needs at least 3" in line
    assert not (workdir / "affinity.graphml").exists()  # nothing measured, nothing written


@pytest.mark.extended
@pytest.mark.slow
@pytest.mark.e2e
def test_an_affinity_study_whose_pool_changed_is_refused(workdir: Path) -> None:
    args = ["search", "--pool", "pool.yaml", "--strategies", "naive", "--trials", "1", "--seeds", "1"]
    args += ["--validate", "0"]
    res = lll(*args, "--epochs", "1", "--workers", "1", "--study", "s", "--checkpoints", "none", cwd=workdir)
    assert res.returncode == 0, res.stderr
    ok = lll("affinity", "--study", "s", "--no-measure", "--out", "s.graphml", cwd=workdir, timeout=120)
    assert ok.returncode == 0, ok.stderr
    (workdir / "pool.yaml").write_text(tiny_pool_yaml("tiny-zs", 61, 40))  # one more training image per task
    line = one_error_line(lll("affinity", "--study", "s", "--no-measure", "--out", "t.graphml", cwd=workdir))
    assert "pool 'pool.yaml' has changed since study 's' started" in line
    assert line.endswith("measure its graph with the same pool file and data, or give --pool without --study")
    assert not (workdir / "t.graphml").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("s")
    runs = client.search_runs([exp.experiment_id], "tags.`lll.kind` = 'affinity'")
    assert len(runs) == 1  # the first graph was recorded; the refused one recorded nothing
