"""`lll search --seed-from-graph`: a new study's first trials from its affinity graph.

Seeding measures the new study's affinity graph (T² task-trainings, one seed, the study's first
strategy and training config, on the search's own workers via ``search.study.affinity_runs``) and
keeps the measured evidence in the study (user attribute ``affinity_evidence``): the model sampler
reads it as a feature, and `lll affinity --study NAME --no-measure` can rebuild the graph.

When `lll affinity --recommend` would trust the zero-shot pick (``search/graph/zero_shot.py``:
neither the pair noise nor the graph models' disagreement unsettles it), the pick, each rule's
ordering and the pick's runners-up (distinct, :data:`SEED_ORDERINGS` in all) are enqueued as the
first trials; when it would not, none is, and the graph enters the search as the feature only.
Measured over 101 sampler seeds on the four 7-task truths (median trials to a top-1 % ordering,
bench/graph_zero_shot.py): enqueuing the orderings of an untrusted pick made the search slower
than the plain model sampler on EWC (17 against 14), the feature alone never did (19/20, 14/14,
12/14); with a trusted pick, enqueuing was faster (17 against 19; the feature alone 24).
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from pipeline.config import StrategyConfig
from search.graph.affinity import graph_tasks
from search.graph.rules import RULES, dissimilarity_from_graph, rule_order
from search.graph.zero_shot import PairArrays, ZeroShot, zero_shot_pick
from search.orders.space import SearchSpace
from search.study.settings import StudySettings

SEED_ORDERINGS = 4


def candidate_orderings(
    g: nx.DiGraph, k: int = SEED_ORDERINGS, pick: ZeroShot | None = None
) -> list[tuple[list[str], str]]:
    """(ordering, where it came from): the zero-shot pick, every rule's, then the pick's runners-up."""
    tasks = graph_tasks(g)
    pick = pick or zero_shot_pick(g, k=k, draws=0)
    d = dissimilarity_from_graph(g)
    cands = [(pick.order, "zero-shot pick")] + [(rule_order(r, tasks, d), r) for r in RULES]
    cands += [(o, "zero-shot runner-up") for o, _ in pick.runners_up]
    out, seen = [], set()
    for o, why in cands:
        if tuple(o) not in seen:
            seen.add(tuple(o))
            out.append((o, why))
    return out[:k]


def seed_orderings(g: nx.DiGraph, strategy: str | None, k: int = SEED_ORDERINGS) -> tuple[ZeroShot, list]:
    """The zero-shot pick with the verdict `lll affinity --recommend` prints (its noise draws
    included), and the candidate orderings; they are enqueued only when ``pick.trusted``."""
    pick = zero_shot_pick(g, strategy, k=k)
    return pick, candidate_orderings(g, k, pick)


def seed_study(study: Any, space: SearchSpace, graph: nx.DiGraph, strategy: str, k: int = SEED_ORDERINGS) -> list:
    """Enqueue the graph's candidate orderings when its zero-shot pick is trusted, and record them
    (``graph_orderings``: order, where from, the reference model's score, enqueued or not)."""
    pick, cands = seed_orderings(graph, strategy, k)
    enqueue_orderings(study, space, [o for o, _ in cands] if pick.trusted else [])
    scores = PairArrays.from_graph(graph).model(pick.params).predict([o for o, _ in cands])
    kept = [{"order": o, "from": why, "score": float(s), "enqueued": pick.trusted}
            for (o, why), s in zip(cands, scores, strict=True)]  # fmt: skip
    study.set_user_attr("graph_orderings", kept)
    return cands


def seed_study_from_graph(
    study: Any,
    settings: StudySettings,
    workers: int | None = None,
    ray_address: str | None = None,
    download: bool = False,
    k: int = SEED_ORDERINGS,
    population: int | str = "auto",
) -> list[tuple[list[str], str]]:
    """Measure the graph of a new study's pool, keep the evidence, and enqueue the best orderings
    when the zero-shot pick is trusted. Returns the candidate orderings (enqueued or not)."""
    from search.graph.affinity import build_graph
    from search.study.affinity_runs import measure_affinity

    name = settings.strategies[0]
    cfg = StrategyConfig(name=name, lam=settings.lam, options=settings.strategy_options(name))
    meas = measure_affinity(
        settings.pool_spec,
        list(settings.tasks),
        cfg,
        settings.train,
        [settings.seed],
        workers,
        settings.data_dir,
        download,
        ray_address,
        population=population,
    )
    evidence = meas.evidence()
    graph = build_graph(list(settings.tasks), evidence, meta={"strategy": name})
    cands = seed_study(study, settings.space(), graph, name, k)
    study.set_user_attr(
        "affinity_evidence",
        {"strategy": cfg.model_dump(mode="json"), "seeds": meas.seeds, "evidence": evidence.to_dict()},
    )
    return cands


def enqueue_orderings(study: Any, space: SearchSpace, orders: list[list[str]]) -> None:
    """Make ``orders`` the study's next trials, with the space's first strategy and its fixed λ
    (or the strategy's default)."""
    for order in orders:
        study.enqueue_trial(space.trial_params(order, space.strategies[0], space.fixed_lambda))
