"""The neuron graph, derived from the model's modules (never typed by hand).

Nodes: one per (tap, channel, pitch), in the order of `CPC.node_offsets`, which the dream
engine and the renderer share:  node = node_offsets[tap] + channel * tap.pitches + pitch.
Time is not a node dimension; it is animated.

Edges follow the modules between taps. A convolution connects its output neuron
(c_out, p) to every input channel at each pitch its kernel covers, with its padding
(zeros outside the range give no edge) and the max-pool in front of it (a pooled pitch
stands for the `pool` pitches it was taken from). Residual paths connect a block's input
tap to its output tap: channel to same channel, or all channels through a 1x1 projection.
The autoregressive layers are 1-D over time, so their links are dense between channels.
Parallel paths between the same two neurons (an AR convolution and its residual) are one
edge whose weight is their sum.

Edge weight ("strength"): the magnitude of the trained kernel at that pitch offset,
summed over its time taps, times the following batch norm's scale; an identity residual
counts 1. Weights are scaled to max 1 within each target tap so that every layer has
strong and weak links. The layout may use them or treat all edges alike.

Node charge: the neuron's activation std over real data (from the model's statistics),
scaled to mean 1 and floored so no neuron is without repulsion; 1 when there are none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from immersions.model.cpc import CPC, Tap

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


def _bn_scale(bn: nn.Module) -> torch.Tensor:
    return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()


def _conv_strength(conv: nn.Module, bn: nn.Module) -> np.ndarray:
    """|kernel| summed over time, times the batch-norm scale: [c_out, c_in, pitch offsets]."""
    w = conv.weight.detach().float().abs()
    if w.dim() == 4:  # conv2d [c_out, c_in, pitch, time]
        m = w.sum(dim=3)
    else:  # conv1d [c_out, c_in, time]: no pitch axis
        m = w.sum(dim=2, keepdim=True)
    return (m * _bn_scale(bn)[:, None, None]).numpy()


def _residual_strength(project: nn.Module, channels: int) -> np.ndarray:
    """An identity residual (weight 1 channel to same channel) or a 1x1 projection's strength."""
    if isinstance(project, nn.Identity):
        return np.eye(channels, dtype=np.float32)[:, :, None]
    conv, bn = project[0], project[1]
    return _conv_strength(conv, bn)[:, :, :1]


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


def build_graph(model: CPC, stats: dict | None = None) -> Graph:
    """The model's neuron graph; `stats` (from `load_stats`) gives the node charges."""
    taps, offsets = model.taps, list(model.node_offsets)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(src: Tap, dst: Tap, strength: np.ndarray, pool: int) -> None:
        parts.append((dst.index, *_links(src, dst, offsets[src.index], offsets[dst.index], strength, pool)))

    with torch.no_grad():
        enc = len(model.encoder)
        for i, block in enumerate(model.encoder):
            h1, h2 = taps[2 * i], taps[2 * i + 1]
            pool = model.cfg.encoder[i].pool[0]
            if i > 0:  # block 1 reads the scalogram, which is not a tap
                x = taps[2 * i - 1]
                add(x, h1, _conv_strength(block.conv1, block.bn1), 1)
                add(x, h2, _residual_strength(block.project, h2.channels), pool)
            add(h1, h2, _conv_strength(block.conv2, block.bn2), pool)
        previous = taps[2 * enc - 1]
        for j, layer in enumerate(model.ar):
            tap = taps[2 * enc + j]
            strength = _conv_strength(layer.conv, layer.bn) + _residual_strength(layer.project, tap.channels)
            add(previous, tap, strength, 1)
            previous = tap

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


def _charges(model: CPC, stats: dict | None, offsets: np.ndarray) -> np.ndarray:
    if not stats:
        return np.ones(int(offsets[-1]), dtype=np.float32)
    std = np.concatenate([stats[t.key].data_std.float().numpy().reshape(-1) for t in model.taps])
    # taps differ in scale; a node's charge is its std relative to its own tap's mean
    tap = np.searchsorted(offsets, np.arange(len(std)), side="right") - 1
    mean = np.bincount(tap, weights=std, minlength=len(model.taps)) / np.diff(offsets)
    charge = std / np.maximum(mean[tap], 1e-12)
    charge = np.maximum(np.nan_to_num(charge, nan=1.0), MIN_CHARGE)
    return (charge / charge.mean()).astype(np.float32)
