"""What `lll affinity` prints: the measurement's cost, the transfer matrix, clusters, files, and
with ``--recommend`` the pick it recorded — its predicted ACC and interval, the rules' picks beside
it, and a plain line when the pair evidence is too noisy, or the graph models disagree too much, to
trust it."""

from __future__ import annotations

from search.graph.affinity import clusters, graph_tasks, transfer_matrix
from search.graph.zero_shot import AGREEMENT_MIN, TOP_SHARE, TRUST_RATIO
from search.study.affinity_runs import AffinityResult


def _pct(v: float) -> str:
    return f"{v * 100:.1f}%"


def summary_lines(res: AffinityResult) -> list[str]:
    """Cost, evidence, the transfer matrix, clusters and the files written."""
    g, st = res.graph, res.settings
    lines = []
    m = res.measurement
    if m is not None:
        t = len(m.tasks)
        lines.append(
            f"measured {t} single-task and {t * (t - 1)} pair orderings × {len(m.seeds)} seed(s) with "
            f"{st['strategy']}: {m.trained} task-trainings run, {m.reused} prefixes reused from the cache, "
            + (f"{m.rebuilt} prefixes rebuilt on another worker, " if m.rebuilt else "")
            + f"{m.seconds:.0f} s"
        )
    if st.get("experiment") and st["experiment"] != "lll-affinity":
        lines.append(f"harvested {res.harvested_trials} complete {st['strategy']} trial(s) of study {st['experiment']}")
    names = graph_tasks(g)
    tm = transfer_matrix(g)
    width = max(8, *(len(n) for n in names)) + 1
    lines.append("transfer a→b in pp (row a = trained first, column b = measured on; solo = accuracy on itself):")
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names) + f"{'solo':>{width}}")
    for i, a in enumerate(names):
        cells = "".join(f"{'·':>{width}}" if i == j else f"{tm[i, j] * 100:>+{width}.1f}" for j in range(len(names)))
        solo = g.nodes[a].get("solo", float("nan"))
        lines.append(f"{a:<{width}}{cells}{solo * 100:>{width}.1f}")
    lines.append("clusters of related tasks: " + "; ".join("{" + ", ".join(c) + "}" for c in clusters(g)))
    lines.append(f"wrote {res.graphml} and {res.png}")
    if res.mlflow_run_id:
        lines.append(f"recorded in MLflow run {res.mlflow_run_id} (experiment {st['experiment']})")
    return lines


def recommend_lines(res: AffinityResult, rule: str | None = None) -> list[str]:
    """The pick (or, with ``rule``, that rule's ordering) as recorded in MLflow."""
    from search.graph.zero_shot import PairArrays

    p = res.pick
    model = PairArrays.from_graph(res.graph).model(p.params)

    def predicted(order: list[str]) -> str:
        return _pct(float(model.predict([order])[0]))

    if rule is not None:
        o = res.rules[rule]
        return [
            f"recommended order ({rule}): {' → '.join(o)}",
            f"  graph model's predicted ACC of it: {predicted(o)}  ({p.params.describe()})",
            f"  the zero-shot pick instead: {' → '.join(p.order)} (predicted ACC {_pct(p.predicted)})",
        ]
    noise = f"SD {p.noise * 100:.1f} pp per pair value, " + (
        f"measured over {p.seeds} seeds" if p.noise_measured else "assumed (one seed; --seeds 2 measures it)"
    )
    lines = [
        f"recommended order: {' → '.join(p.order)}  (predicted ACC {_pct(p.predicted)}, "
        f"interval {_pct(p.interval[0])}–{_pct(p.interval[1])} from the pair noise and the models' spread)",
        f"  ranking: {p.how}; its scorers' rankings agree at Spearman ρ ≥ {p.agreement:.2f}",
        f"  noise: over noisy copies of the pair evidence ({noise}) the pick's predicted ACC moves by "
        f"{p.noise_ratio:.2f} of the spread across orderings; it stays in their top {TOP_SHARE:.0%} in "
        f"{p.stability:.0%} of them",
    ]
    for o, s in p.runners_up:
        lines.append(f"  runner-up: {' → '.join(o)}  (predicted ACC {_pct(s)})")
    lines.append("  the published rules' picks: " + "; ".join(f"{r}: {' → '.join(o)} ({predicted(o)})"
                                                           for r, o in res.rules.items()))  # fmt: skip
    if not p.params.fitted_on:
        lines.append("  (unfitted: with ≥ 6 complete trials of this strategy in --study the graph model is fitted)")
    search = "a short search (`lll search --sampler model`) is the better use of the budget"
    if p.trusted:
        lines.append("  the pair evidence supports this pick; a search can still improve on it")
    elif p.noise_ratio > TRUST_RATIO:
        lines.append(
            f"  the pair evidence is too noisy to trust this pick (noise ratio {p.noise_ratio:.2f} > "
            f"{TRUST_RATIO:.2f}): {search}"
        )
    else:
        lines.append(
            f"  the graph model's readings of the evidence disagree (least rank agreement ρ {p.agreement:.2f} < "
            f"{AGREEMENT_MIN:.2f}), so the pick rests on a modelling choice: {search}"
        )
    return lines
