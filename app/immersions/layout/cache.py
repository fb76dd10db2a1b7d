"""Layouts are computed once and stored beside the model (`layout.npz`), keyed by a hash
of the graph and the layout settings; a stale or missing file is recomputed, a valid one
never is. The file is plain arrays (no pickle): positions, the key, the settings as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from immersions.errors import ImmersionsError
from immersions.layout.force import LayoutConfig, edge_length_ratio, layout
from immersions.layout.graph import Graph, build_graph

log = logging.getLogger(__name__)

LAYOUT_FILE = "layout.npz"
FORMAT = 1


@dataclass
class ModelLayout:
    graph: Graph
    positions: np.ndarray  # float32 [N, 2], node order of the graph
    key: str
    cached: bool  # read from disk rather than computed now
    path: Path | None
    seconds: float  # time to compute (0 when cached)
    levels: list[dict]
    settings: LayoutConfig

    def edge_length_ratio(self) -> float:
        return edge_length_ratio(self.positions, self.graph.src, self.graph.dst)


def layout_key(graph: Graph, cfg: LayoutConfig) -> str:
    settings = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    digest = graph.digest(weights=cfg.weights == "kernel")
    return hashlib.sha256(f"{FORMAT}:{digest}:{settings}".encode()).hexdigest()[:20]


def read_layout(path: Path, key: str, nodes: int) -> tuple[np.ndarray, list[dict]] | None:
    """The cached positions when `path` holds a layout for this key; None (and why, logged) if not."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = str(data["key"])
            positions = data["positions"].astype(np.float32)
            levels = json.loads(str(data["levels"]))
    except (OSError, KeyError, ValueError) as err:
        log.warning("ignoring unreadable layout %s (%s); recomputing", path, err)
        return None
    if stored != key or positions.shape != (nodes, 2) or not np.isfinite(positions).all():
        log.info("layout %s is for another graph or other settings; recomputing", path)
        return None
    return positions, levels


def write_layout(path: Path, key: str, positions: np.ndarray, cfg: LayoutConfig, levels: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, positions=positions.astype(np.float32), key=np.array(key),
                     settings=np.array(json.dumps(dataclasses.asdict(cfg))), levels=np.array(json.dumps(levels)))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a layout is not a secret
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ImmersionsError(f"cannot write layout {path}: {err}") from err


def model_layout(model, stats=None, cfg: LayoutConfig | None = None, folder: str | os.PathLike | None = None,
                 force: bool = False, save: bool = True, device: str | torch.device | None = None,
                 progress: bool = False) -> ModelLayout:
    """The model's graph and its layout: from `folder/layout.npz` when valid, else computed
    (and saved there unless save=False). folder defaults to the model's own folder."""
    cfg = cfg or LayoutConfig()
    graph = build_graph(model, stats)
    key = layout_key(graph, cfg)
    folder = folder if folder is not None else getattr(model, "folder", None)
    path = Path(folder) / LAYOUT_FILE if folder is not None else None
    if path is not None and not force:
        hit = read_layout(path, key, graph.nodes)
        if hit is not None:
            return ModelLayout(graph, hit[0], key, True, path, 0.0, hit[1], cfg)
    start = time.perf_counter()
    result = layout(graph, cfg, device=device, progress=progress)
    seconds = time.perf_counter() - start
    positions = separate_coincident(result.positions)
    if path is not None and save:
        write_layout(path, key, positions, cfg, result.levels)
        log.info("layout of %d nodes saved to %s (%.1f s)", graph.nodes, path, seconds)
    return ModelLayout(graph, positions, key, False, path, seconds, result.levels, cfg)


def separate_coincident(positions: np.ndarray, seed: int = 0) -> np.ndarray:
    """No two nodes share a point: nudge exact duplicates apart by a hair."""
    positions = positions.astype(np.float32)
    _, first, counts = np.unique(positions, axis=0, return_index=True, return_counts=True)
    if (counts == 1).all():
        return positions
    rng = np.random.default_rng(seed)
    scale = float(np.ptp(positions, axis=0).max()) * 1e-5 or 1e-5
    out = positions.copy()
    mask = np.ones(len(positions), dtype=bool)
    mask[first] = False
    out[mask] += rng.normal(0, scale, size=(int(mask.sum()), 2)).astype(np.float32)
    return out


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (and the GPU's peak allocation, if used)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if torch.cuda.is_available():
        peak += torch.cuda.max_memory_allocated() / 2**20
    return peak


def layout_report(result: ModelLayout) -> dict:
    """The JSON of `immersions layout`."""
    return {
        "nodes": result.graph.nodes,
        "edges": result.graph.edges,
        "levels": len(result.levels),
        "seconds": round(result.seconds, 3),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "edge_length_ratio": round(result.edge_length_ratio(), 4),
        "cached": result.cached,
        "file": str(result.path) if result.path else None,
        "key": result.key,
        "per_level": result.levels,
    }
