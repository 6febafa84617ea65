"""`lll search --seed-from-graph` and `lll affinity --recommend`: orderings from the graph model and
the published rules.

Seeding measures the new study's affinity graph (T² task-trainings, one seed, the study's first
strategy and training config, on the search's own workers via ``search.study.affinity_runs``), then
enqueues as its first trials the graph model's best ordering, each rule's ordering and the model's
runners-up (distinct, :data:`SEED_ORDERINGS` in all). The measured evidence is kept in the study
(user attribute ``affinity_evidence``): the model sampler reads it as a feature, and `lll affinity
--study NAME --no-measure` can rebuild the graph.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from pipeline.config import StrategyConfig
from search.graph.model import GraphModel
from search.graph.rules import RULES, dissimilarity_from_graph, rule_order
from search.study.settings import StudySettings

SEED_ORDERINGS = 4


def candidate_orderings(g: nx.DiGraph, model: GraphModel, k: int = SEED_ORDERINGS) -> list[tuple[list[str], str]]:
    """(ordering, where it came from): the model's best, every rule's, then the model's runners-up."""
    tasks = list(model.tasks)
    top, _ = model.top(k=k)
    d = dissimilarity_from_graph(g)
    cands = [(top[0][0], "graph model")] + [(rule_order(r, tasks, d), r) for r in RULES]
    cands += [(o, "graph model runner-up") for o, _ in top[1:]]
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
    from search.study.affinity_runs import enqueue_orderings, measure_affinity

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
    model = GraphModel.from_graph(graph)
    cands = candidate_orderings(graph, model, k)
    enqueue_orderings(study, settings.space(), [o for o, _ in cands])
    scores = model.predict([o for o, _ in cands])
    kept = [{"order": o, "from": why, "score": float(s)} for (o, why), s in zip(cands, scores, strict=True)]
    study.set_user_attr("graph_orderings", kept)
    study.set_user_attr(
        "affinity_evidence",
        {"strategy": cfg.model_dump(mode="json"), "seeds": meas.seeds, "evidence": evidence.to_dict()},
    )
    return cands


def recommend_lines(
    g: nx.DiGraph, outcomes: list[tuple[list[str], float]], rule: str | None, top: int = 3
) -> list[str]:
    """What `lll affinity --recommend [--rule NAME]` prints: the graph model's ranking (fitted to
    the study's finished trials when there are enough), or one rule's ordering."""
    model = GraphModel.from_graph(g).fit(outcomes)
    tasks = list(model.tasks)
    if rule is not None:
        o = rule_order(rule, tasks, dissimilarity_from_graph(g))
        pred = float(model.predict([o])[0])
        return [
            f"recommended order ({rule}): {' → '.join(o)}",
            f"  graph model's predicted ACC of it: {pred * 100:.2f}%  ({model.params.describe()})",
        ]
    best, how = model.top(k=max(1, top))
    lines = [f"recommended order: {' → '.join(best[0][0])}  (graph model's predicted ACC {best[0][1] * 100:.2f}%)"]
    lines.append(f"  model: every training maps each task's accuracy as the pairs measured; {model.params.describe()}")
    if not model.params.fitted_on:
        lines.append("  (fitting α, κ needs ≥ 6 complete trials in --study; unfitted, the prediction is the model's)")
    for o, s in best[1:]:
        lines.append(f"  runner-up: {' → '.join(o)}  (predicted ACC {s * 100:.2f}%)")
    lines.append(f"  ranking: {how}; rules: --rule {' | '.join(RULES)}")
    return lines
