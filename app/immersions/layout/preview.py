"""A still picture of a layout for people to look at: nodes coloured by tap, a sample of edges."""

from __future__ import annotations

import os

import numpy as np

from immersions.layout.graph import Graph


def save_layout_png(graph: Graph, positions: np.ndarray, path: str | os.PathLike, edges: int = 20_000,
                    seed: int = 0, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    rng = np.random.default_rng(seed)
    pick = rng.choice(graph.edges, min(edges, graph.edges), replace=False) if graph.edges else np.zeros(0, int)
    segments = np.stack([positions[graph.src[pick]], positions[graph.dst[pick]]], axis=1)
    taps = len(graph.taps)
    colours = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, taps))
    fig, ax = plt.subplots(figsize=(10, 10), dpi=120, facecolor="black")
    ax.set_facecolor("black")
    ax.add_collection(LineCollection(segments, colors=(0.7, 0.7, 0.8, 0.05), linewidths=0.3))
    tap_of = graph.node_tap
    size = max(0.3, min(4.0, 20_000 / graph.nodes))
    ax.scatter(positions[:, 0], positions[:, 1], s=size, c=colours[tap_of], linewidths=0)
    for t, tap in enumerate(graph.taps):  # a legend in the tap's colour, at its centroid
        centre = positions[tap_of == t].mean(axis=0)
        ax.text(centre[0], centre[1], tap.key, color=colours[t], fontsize=6, ha="center", va="center",
                bbox={"facecolor": "black", "alpha": 0.5, "linewidth": 0, "pad": 0.5})
    ax.set_aspect("equal")
    ax.autoscale()
    ax.axis("off")
    if title:
        ax.set_title(title, color="white", fontsize=9)
    fig.savefig(path, facecolor="black", bbox_inches="tight")
    plt.close(fig)
