"""The static map of a model: where each neuron sits and which neurons are connected.

A `Scene` is built once per model (the layout is computed in `immersions.layout`) and
handed to the renderer, which uploads it to the GPU once. Edges are sorted strongest
first, so "the K strongest connections" is always the first K rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from immersions.errors import ImmersionsError
from immersions.frames import FRAMES_PER_LOOP  # columns of a DreamFrame's activation table


@dataclass(frozen=True)
class Scene:
    positions: np.ndarray  # float32 [N, 2], layout coordinates (any units; the renderer fits them to the view)
    node_tap: np.ndarray  # int32 [N], tap (layer) index of each node; nodes are ordered tap by tap
    tap_names: tuple[str, ...]
    edge_src: np.ndarray  # int32 [E], sorted by weight, strongest first
    edge_dst: np.ndarray  # int32 [E]
    edge_weight: np.ndarray  # float32 [E], >= 0, max 1

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        positions = np.ascontiguousarray(self.positions, dtype=np.float32)
        if positions.ndim != 2 or positions.shape[1] != 2 or len(positions) == 0:
            raise ImmersionsError(f"scene positions must be an [nodes, 2] array, got shape {positions.shape}; rebuild the layout")
        if not np.isfinite(positions).all():
            raise ImmersionsError("scene positions contain NaN or infinity; rebuild the layout (delete the cached layout)")
        n = len(positions)
        node_tap = np.ascontiguousarray(self.node_tap, dtype=np.int32)
        if node_tap.shape != (n,):
            raise ImmersionsError(f"scene node_tap must have one entry per node ({n}), got shape {node_tap.shape}")
        tap_names = tuple(str(t) for t in self.tap_names)
        if node_tap.min() < 0 or node_tap.max() >= len(tap_names) or np.any(np.diff(node_tap) < 0):
            raise ImmersionsError("scene node_tap must index tap_names and list nodes tap by tap; rebuild the layout")
        src = np.ascontiguousarray(self.edge_src, dtype=np.int32)
        dst = np.ascontiguousarray(self.edge_dst, dtype=np.int32)
        weight = np.ascontiguousarray(self.edge_weight, dtype=np.float32)
        if not (src.ndim == dst.ndim == weight.ndim == 1 and len(src) == len(dst) == len(weight)):
            raise ImmersionsError("scene edge_src, edge_dst and edge_weight must be 1-D arrays of one length")
        if len(src):
            if min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n:
                raise ImmersionsError(f"scene edges refer to nodes outside 0..{n - 1}; rebuild the graph")
            if not (np.isfinite(weight).all() and weight.min() >= 0 and weight.max() <= 1 + 1e-6):
                raise ImmersionsError("scene edge weights must lie in 0..1; normalize them by the strongest edge")
            if np.any(weight[1:] > weight[:-1]):
                raise ImmersionsError("scene edges must be sorted strongest first (np.argsort(-weight))")
        for name, value in (("positions", positions), ("node_tap", node_tap), ("tap_names", tap_names),
                            ("edge_src", src), ("edge_dst", dst), ("edge_weight", weight)):
            fix(name, value)

    @property
    def nodes(self) -> int:
        return len(self.positions)

    @property
    def edges(self) -> int:
        return len(self.edge_src)

    def tap_slice(self, tap: int) -> slice:
        """The nodes of one tap (they are contiguous)."""
        lo, hi = np.searchsorted(self.node_tap, [tap, tap + 1])
        return slice(int(lo), int(hi))

    @staticmethod
    def synthetic(nodes: int, edges: int, taps: int, seed: int = 0) -> "Scene":
        """A plausible map for tests and benches: each tap a cluster of sub-blobs along an arc,
        edges mostly from one tap into the next (plus some inside a tap), skewed weights."""
        if taps < 1 or nodes < taps:
            raise ImmersionsError(f"a synthetic scene needs at least one node per tap (nodes={nodes}, taps={taps})")
        rng = np.random.default_rng(seed)
        # earlier taps (wide encoder layers) hold more neurons than later ones
        share = 0.75 ** np.arange(taps)
        bounds = np.round(np.concatenate([[0], np.cumsum(share)]) / share.sum() * nodes).astype(np.int64)
        bounds = np.maximum(bounds, np.arange(taps + 1))  # every tap gets at least one node
        bounds[-1] = nodes
        node_tap = np.repeat(np.arange(taps, dtype=np.int32), np.diff(bounds))

        positions = np.empty((nodes, 2), np.float32)
        angles = np.linspace(-0.8 * np.pi, 0.8 * np.pi, taps) if taps > 1 else np.zeros(1)
        for t in range(taps):
            lo, hi = bounds[t], bounds[t + 1]
            count = hi - lo
            centre = 3.0 * np.array([np.sin(angles[t]), -np.cos(angles[t])])
            radius = 0.9 * np.sqrt(count / (nodes / taps))
            blobs = max(1, min(7, count // 40))
            blob_centres = rng.normal(0.0, 0.45 * radius, (blobs, 2))
            member = rng.integers(0, blobs, count)
            spread = radius * rng.uniform(0.15, 0.4, blobs)[member, None]
            positions[lo:hi] = centre + blob_centres[member] + rng.normal(0.0, 1.0, (count, 2)) * spread

        src = rng.integers(0, nodes, edges, dtype=np.int64)
        tap_of = node_tap[src]
        nxt = np.minimum(tap_of + 1, taps - 1)
        inside = (rng.random(edges) < 0.25) | (tap_of == taps - 1)
        target_tap = np.where(inside, tap_of, nxt)
        # land near the "same place" in the target tap: a random walk on relative index
        rel = (src - bounds[tap_of]) / np.maximum(np.diff(bounds)[tap_of], 1)
        rel = np.clip(rel + rng.normal(0.0, 0.05, edges), 0.0, 0.999999)
        dst = bounds[target_tap] + (rel * np.diff(bounds)[target_tap]).astype(np.int64)
        weight = rng.exponential(1.0, edges).astype(np.float32)
        order = np.argsort(-weight, kind="stable")
        weight = weight[order]
        weight /= max(float(weight[0]), 1e-12) if edges else 1.0
        names = tuple(f"tap{t}" for t in range(taps))
        return Scene(positions, node_tap, names, src[order].astype(np.int32), dst[order].astype(np.int32), weight)


def synthetic_activations(scene: Scene, seed: int = 0, active_fraction: float = 0.06) -> np.ndarray:
    """A plausible DreamFrame activation table (float16 [N, 64], normalized): mostly quiet
    neurons near 0, and in every tap a few groups that pulse on the beat."""
    rng = np.random.default_rng(seed)
    n = scene.nodes
    frames = np.arange(FRAMES_PER_LOOP)
    acts = rng.normal(0.0, 0.8, (n, FRAMES_PER_LOOP)).astype(np.float32)
    active = rng.random(n) < active_fraction
    phase = rng.integers(0, 16, n)
    pulse = np.exp(-((frames[None, :] - phase[:, None]) % 16) / 3.0)  # a decaying hit every quarter loop
    acts += active[:, None] * (2.0 + 2.5 * rng.random((n, 1))) * pulse
    return acts.astype(np.float16)
