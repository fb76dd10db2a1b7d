"""`immersions bench layout`: the full multilevel layout of the default model's graph and of the
`seed` preset's, each in its own process, and our layout against Graphviz sfdp."""

from __future__ import annotations

import statistics
import time

import torch

from immersions.bench.kit import environment
from immersions.errors import ImmersionsError


def _layout_subprocess(extra: list[str], device: str) -> dict:
    """`immersions layout --json --force --no-save` in a fresh process: honest time and peak memory."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "immersions", "--quiet", "layout", "--json", "--force", "--no-save",
           "--device", device, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImmersionsError(f"layout run failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    doc = json.loads(done.stdout)
    doc.pop("per_level", None)
    return doc


def bench_layout(args) -> dict:
    """The full multilevel layout of the default model's graph and of the `seed` preset's
    (each in its own process), and our layout against Graphviz sfdp on the default graph
    coarsened to two sizes."""
    from immersions.layout.force import coarsened
    from immersions.layout.graph import build_graph
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    doc = {"benchmark": "layout", **environment(device), "graphs": {}}
    doc["graphs"]["default"] = _layout_subprocess([], str(device))
    doc["graphs"]["seed"] = _layout_subprocess(["--preset", "seed"], str(device))

    model = load_model(None)
    full = build_graph(model, load_stats(model))
    doc["comparison"] = [_compare_with_sfdp(coarsened(full, int(edges)), int(edges), device, max(1, args.repeats // 3))
                         for edges in str(args.compare_edges).split(",")]
    return doc


def _compare_with_sfdp(graph, max_edges: int, device, repeats: int) -> dict:
    from immersions.layout.force import LayoutConfig, edge_length_ratio, layout
    from immersions.layout.sfdp import sfdp_available, sfdp_layout

    compare = {"graph": f"default model's graph coarsened to <= {max_edges} edges",
               "nodes": graph.nodes, "edges": graph.edges}
    # ours twice: with every edge alike and k = 1.8 (the plain spring-electrical model, as
    # sfdp runs it), and with the product's settings (springs balanced by degree, k = 2.5,
    # for an even picture; a longer mean edge is the price)
    for name, cfg in (("ours", LayoutConfig(degree_balance=0.0, repulsion_exponent=1.8)),
                      ("ours_product_settings", LayoutConfig())):
        layout(graph, cfg, device=device)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = layout(graph, cfg, device=device)
            times.append(time.perf_counter() - start)
        compare[name] = {"seconds": statistics.median(times), "min_s": min(times),
                         "edge_length_ratio": edge_length_ratio(result.positions, graph.src, graph.dst),
                         "settings": {"degree_balance": cfg.degree_balance, "repulsion_exponent": cfg.repulsion_exponent}}
    ratio = compare["ours"]["edge_length_ratio"]
    if sfdp_available():
        times = []
        for _ in range(repeats):
            positions, seconds = sfdp_layout(graph)
            times.append(seconds)
        compare["sfdp"] = {"seconds": statistics.median(times), "min_s": min(times),
                           "edge_length_ratio": edge_length_ratio(positions, graph.src, graph.dst),
                           "program": "Graphviz sfdp, -Goverlap=true (no overlap removal, like ours)"}
        compare["speedup_vs_sfdp"] = compare["sfdp"]["seconds"] / compare["ours"]["seconds"]
        compare["ratio_no_worse"] = bool(ratio <= compare["sfdp"]["edge_length_ratio"] * (1 + 1e-3))
    else:
        compare["sfdp"] = "not installed (apt-get install graphviz)"
    return compare


