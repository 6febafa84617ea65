"""Drawing the task-affinity graph as a PNG."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import networkx as nx

from search.graph.affinity import clusters, graph_tasks, similarity_matrix


def _pp(v: float) -> str:
    """Percentage points, one decimal for small values (so −0.2 does not print as "-0")."""
    return f"{v * 100:+.1f}" if abs(v) < 0.1 else f"{v * 100:+.0f}"


def draw(g: nx.DiGraph, path: str | Path, title: str | None = None) -> Path:
    """A PNG: edge width by |transfer|, green positive / red negative, curved so a→b and b→a are
    both visible; nodes coloured by cluster and labelled with their solo accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = graph_tasks(g)
    groups = clusters(g)
    colour_of = {a: k for k, c in enumerate(groups) for a in c}
    palette = plt.get_cmap("tab10")
    sim = similarity_matrix(g)
    layout = nx.Graph()
    layout.add_nodes_from(names)
    for i, j in itertools.combinations(range(len(names)), 2):
        layout.add_edge(names[i], names[j], weight=float(max(sim[i, j], 0.0)) + 0.05)
    pos = nx.spring_layout(layout, weight="weight", seed=0) if len(names) > 2 else nx.circular_layout(layout)

    edges = [(a, b) for a, b, d in g.edges(data=True) if d.get("n", 0) > 0]
    top = max((abs(g.edges[e]["transfer"]) for e in edges), default=0.0) or 1.0
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    nx.draw_networkx_nodes(
        g, pos, nodelist=names, node_color=[palette(colour_of[a] % 10) for a in names], node_size=1500, ax=ax
    )
    labels = {}
    for a in names:
        solo = g.nodes[a].get("solo", math.nan)
        labels[a] = f"{a}\n{solo * 100:.0f}%" if math.isfinite(solo) else a
    nx.draw_networkx_labels(g, pos, labels=labels, font_size=8, ax=ax)
    if edges:
        nx.draw_networkx_edges(
            g,
            pos,
            edgelist=edges,
            width=[0.5 + 6.0 * abs(g.edges[e]["transfer"]) / top for e in edges],
            edge_color=["tab:green" if g.edges[e]["transfer"] >= 0 else "tab:red" for e in edges],
            arrows=True,
            arrowsize=14,
            node_size=1500,
            connectionstyle="arc3,rad=0.15",
            alpha=0.8,
            ax=ax,
        )
        if len(names) <= 6:
            nx.draw_networkx_edge_labels(
                g,
                pos,
                edge_labels={e: _pp(g.edges[e]["transfer"]) for e in edges},
                label_pos=0.3,
                font_size=7,
                connectionstyle="arc3,rad=0.15",
                ax=ax,
            )
    handles = [
        Line2D([0], [0], color="tab:green", lw=3, label="positive transfer a→b"),
        Line2D([0], [0], color="tab:red", lw=3, label="negative transfer a→b"),
    ]
    handles += [
        Line2D([0], [0], marker="o", color="w", markerfacecolor=palette(k % 10), markersize=10, label=", ".join(c))
        for k, c in enumerate(groups)
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=7, title="edges / clusters", title_fontsize=7)
    ax.set_title(title or "task affinity: edge width ∝ |transfer| (pp labels), node = solo accuracy", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
