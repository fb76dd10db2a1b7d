"""The neuron graph, derived from the ear's own layers (never typed by hand).

Nodes: one per (tap, channel, pitch), in the order of `Ear.node_offsets`, which the dream
engine and the renderer share:  node = node_offsets[tap] + channel * tap.pitches + pitch.
Time is not a node dimension; it is animated. A tap without a pitch axis is one node per
channel.

Edges: the ear says which layers connect which taps and how strongly (`Ear.links()`, see
`model/ear.py: Link`; for CPC: convolutions, max-pools and residuals). A convolution's link
connects its output neuron (c_out, p) to every input channel at each pitch its kernel
covers, with its padding (zeros outside the range give no edge) and the max-pool in front
of it (a pooled pitch stands for the `pool` pitches it was taken from); a dense link
connects every pair with a nonzero entry.

Edge weight ("strength"): what the ear's link gives (for CPC, the magnitude of the trained
kernel at that pitch offset, summed over its time taps, times the following batch norm's
scale; an identity residual counts 1). Weights are scaled to max 1 within each target tap
so that every layer has strong and weak links. The layout may use them or treat all edges
alike.

Node charge: the neuron's activation std over real data (from the ear's statistics),
scaled to mean 1 and floored so no neuron is without repulsion; 1 when there are none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from immersions.model.ear import Ear, Tap

MIN_CHARGE = 0.1  # relative to the mean: a silent neuron still keeps its own place


@dataclass(frozen=True)
class Graph:
    taps: tuple[Tap, ...]
    offsets: np.ndarray  # int64 [taps + 1]: first node of each tap, then the node count
    src: np.ndarray  # int32 [E]
    dst: np.ndarray  # int32 [E]
    weight: np.ndarray  # float32 [E], in (0, 1], max 1 within each target tap
    charge: np.ndarray  # float32 [N], mean 1
    # fingerprints of what weights and charges were computed from (the raw tensors' bytes):
    # exact on every machine, where sums of floats may differ in the last bit between CPUs
    weight_source: str = ""
    charge_source: str = "uniform"

    @property
    def nodes(self) -> int:
        return int(self.offsets[-1])

    @property
    def edges(self) -> int:
        return len(self.src)

    @property
    def node_tap(self) -> np.ndarray:
        """int32 [N]: the tap index of each node."""
        return np.repeat(np.arange(len(self.taps), dtype=np.int32), np.diff(self.offsets))

    def node(self, tap: int, channel: int, pitch: int) -> int:
        t = self.taps[tap]
        if not (0 <= channel < t.channels and 0 <= pitch < t.pitches):
            raise IndexError(f"({channel}, {pitch}) is outside tap {t.name} ({t.channels} x {t.pitches})")
        return int(self.offsets[tap]) + channel * t.pitches + pitch

    def locate(self, nodes: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tap, channel, pitch) of each node index: the inverse of `node`."""
        nodes = np.asarray(nodes, dtype=np.int64)
        tap = np.searchsorted(self.offsets, nodes, side="right") - 1
        pitches = np.array([t.pitches for t in self.taps])[tap]
        local = nodes - self.offsets[tap]
        return tap, local // pitches, local % pitches

    def digest(self, weights: bool = True) -> str:
        """A hash of what shapes a layout: nodes per tap, the edges, where the charges came
        from and (if the layout uses them) where the weights came from."""
        h = hashlib.sha256()
        for t in self.taps:
            h.update(f"{t.key}:{t.channels}x{t.pitches};".encode())
        for array in (self.src, self.dst):
            h.update(np.ascontiguousarray(array).data)
        h.update(f"charges:{self.charge_source};weights:{self.weight_source if weights else 'uniform'}".encode())
        return h.hexdigest()[:16]


# -- pitch connectivity of one module: which input pitch feeds which output pitch ---------

def pitch_links(p_in: int, pool: int, kernel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_out, p_in, kernel offset) of every pitch link through an optional max-pool over
    pitch (ceil mode) followed by a 'same'-padded kernel of `kernel` pitches."""
    pooled = -(-p_in // pool)
    q_out, d = np.meshgrid(np.arange(pooled), np.arange(kernel), indexing="ij")
    q_in = q_out + d - kernel // 2
    valid = (q_in >= 0) & (q_in < pooled)
    q_out, q_in, d = q_out[valid], q_in[valid], d[valid]
    # a pooled pitch q stands for input pitches q*pool .. q*pool + pool - 1 (clipped at the top)
    j = np.arange(pool)
    p_src = (q_in[:, None] * pool + j).ravel()
    keep = p_src < p_in
    return np.repeat(q_out, pool)[keep], p_src[keep], np.repeat(d, pool)[keep]


def _links(src: Tap, dst: Tap, src_offset: int, dst_offset: int, strength: np.ndarray,
           pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges from every (c_in, p_in) to every (c_out, p_out) the module connects.
    strength: [c_out, c_in, kernel pitches]; zero entries (an identity's off-diagonal) give no edge."""
    p_out, p_in, d = pitch_links(src.pitches, pool, strength.shape[2])
    c_out, c_in = np.nonzero(strength.any(axis=2))
    # [channel pairs, pitch links]
    s = src_offset + c_in[:, None] * src.pitches + p_in[None, :]
    t = dst_offset + c_out[:, None] * dst.pitches + p_out[None, :]
    w = strength[c_out[:, None], c_in[:, None], d[None, :]]
    return s.ravel().astype(np.int32), t.ravel().astype(np.int32), w.ravel().astype(np.float32)


def _dense_links(src: Tap, dst: Tap, src_offset: int, dst_offset: int,
                 dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of a dense map [dst neurons, src neurons]: every nonzero entry."""
    if dense.shape != (dst.neurons, src.neurons):
        raise ValueError(f"a dense link {src.name} -> {dst.name} must be [{dst.neurons}, {src.neurons}], not {list(dense.shape)}")
    t, s = np.nonzero(dense)
    return ((src_offset + s).astype(np.int32), (dst_offset + t).astype(np.int32),
            np.abs(dense[t, s]).astype(np.float32))


def build_graph(model: Ear, stats: dict | None = None) -> Graph:
    """The ear's neuron graph; `stats` (from `load_stats`) gives the node charges."""
    taps, offsets = model.taps, list(model.node_offsets)
    parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for link in model.links():
        src, dst = taps[link.src], taps[link.dst]
        if link.dense is not None:
            edges = _dense_links(src, dst, offsets[src.index], offsets[dst.index], link.dense)
        else:
            edges = _links(src, dst, offsets[src.index], offsets[dst.index], link.strength, link.pool)
        parts.append((dst.index, *edges))
    if not parts:
        raise ValueError(f"{model.name} declares no links between its taps: its map would have no edges")

    # scale to max 1 within each target tap
    peak = np.zeros(len(taps), dtype=np.float32)
    for tap, _, _, w in parts:
        peak[tap] = max(peak[tap], float(w.max()))
    src = np.concatenate([p[1] for p in parts])
    dst = np.concatenate([p[2] for p in parts])
    weight = np.concatenate([p[3] / max(peak[p[0]], 1e-12) for p in parts])
    np.maximum(weight, 1e-6, out=weight)  # a zero kernel entry is still a link
    node_offsets = np.array(offsets + [model.graph_nodes], dtype=np.int64)
    return Graph(tuple(taps), node_offsets, src, dst, weight, _charges(model, stats, node_offsets),
                 _fingerprint(p.detach().cpu() for p in model.state_dict().values()),
                 _fingerprint(stats[t.key].data_std for t in model.taps) if stats else "uniform")


def _fingerprint(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _charges(model: Ear, stats: dict | None, offsets: np.ndarray) -> np.ndarray:
    if not stats:
        return np.ones(int(offsets[-1]), dtype=np.float32)
    std = np.concatenate([stats[t.key].data_std.float().numpy().reshape(-1) for t in model.taps])
    # taps differ in scale; a node's charge is its std relative to its own tap's mean
    tap = np.searchsorted(offsets, np.arange(len(std)), side="right") - 1
    mean = np.bincount(tap, weights=std, minlength=len(model.taps)) / np.diff(offsets)
    charge = std / np.maximum(mean[tap], 1e-12)
    charge = np.maximum(np.nan_to_num(charge, nan=1.0), MIN_CHARGE)
    return (charge / charge.mean()).astype(np.float32)
