"""`lll search --seed-from-graph`: a new study's first trials from its affinity graph.

Seeding measures the new study's affinity graph (T² task-trainings, one seed, the study's first
strategy and training config, on the search's own workers via ``search.study.affinity_runs``), then
enqueues as its first trials the zero-shot pick (``search/graph/zero_shot.py``, the ordering `lll
affinity --recommend` prints), each rule's ordering and the pick's runners-up (distinct,
:data:`SEED_ORDERINGS` in all). The measured evidence is kept in the study
(user attribute ``affinity_evidence``): the model sampler reads it as a feature, and `lll affinity
--study NAME --no-measure` can rebuild the graph.
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


def seed_study_from_graph(
    study: Any,
    settings: StudySettings,
    workers: int | None = None,
    ray_address: str | None = None,
    download: bool = False,
    k: int = SEED_ORDERINGS,
    population: int | str = "auto",
) -> list[tuple[list[str], str]]:
    """Measure the graph of a new study's pool, enqueue the best orderings, keep the evidence."""
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
    pick = zero_shot_pick(graph, name, k=k, draws=0)  # the ordering `lll affinity --recommend` prints
    cands = candidate_orderings(graph, k, pick)
    enqueue_orderings(study, settings.space(), [o for o, _ in cands])
    scores = PairArrays.from_graph(graph).model(pick.params).predict([o for o, _ in cands])
    kept = [{"order": o, "from": why, "score": float(s)} for (o, why), s in zip(cands, scores, strict=True)]
    study.set_user_attr("graph_orderings", kept)
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
