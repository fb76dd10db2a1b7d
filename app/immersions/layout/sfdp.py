"""Graphviz sfdp (Hu's own multilevel spring-electrical layout, in C) on one of our graphs:
the established implementation our layout is compared with in `immersions bench layout`.
Runs the `sfdp` program (Debian package graphviz); no Python binding is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from immersions.errors import ImmersionsError
from immersions.layout.graph import Graph


def sfdp_available() -> bool:
    return shutil.which("sfdp") is not None


def write_dot(graph: Graph, path: Path) -> None:
    lines = ["graph G {", "node [shape=point, width=0.01, height=0.01, label=\"\"];",
             "edge [len=1];"]
    lines += [f"{i};" for i in range(graph.nodes)]  # every node, also those without edges
    lines += [f"{s} -- {d};" for s, d in zip(graph.src.tolist(), graph.dst.tolist())]
    lines.append("}")
    path.write_text("\n".join(lines))


def sfdp_layout(graph: Graph, timeout: float = 600.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """Positions [N, 2] from sfdp and the seconds sfdp ran (reading DOT and laying out;
    overlap removal off, as our layout has none)."""
    if not sfdp_available():
        raise ImmersionsError("Graphviz sfdp is not installed; install it with `apt-get install graphviz`")
    with tempfile.TemporaryDirectory() as tmp:
        dot = Path(tmp) / "graph.dot"
        write_dot(graph, dot)
        start = time.perf_counter()
        try:
            done = subprocess.run(["sfdp", "-Goverlap=true", f"-Gstart={seed}", "-Tplain", str(dot)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ImmersionsError(f"sfdp took longer than {timeout:g} s") from None
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise ImmersionsError(f"sfdp failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    positions = np.full((graph.nodes, 2), np.nan, dtype=np.float32)
    for line in done.stdout.splitlines():
        if line.startswith("node "):
            _, name, x, y, *_ = line.split()
            positions[int(name)] = (float(x), float(y))
    if np.isnan(positions).any():
        raise ImmersionsError("sfdp left nodes without a position")
    return positions, seconds
