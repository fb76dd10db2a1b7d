"""Multilevel force-directed layout (after Hu 2005, "Efficient and high quality
force-directed graph drawing"), vectorized in PyTorch so it runs on a GPU when there is one.

- Coarsen: merge neighbouring neurons along channel and pitch (each tap halves its larger
  dimension per level) until a few dozen nodes remain; charges and edge weights add up,
  so a coarse graph's forces approximate the fine graph's at a distance.
- Lay out the coarsest level from a random start; refine level by level: children start
  at their parent plus a little noise, then relax.
- Forces: Barnes-Hut repulsion q_i q_j / d^(k-1) (opening angle `theta`, exponent `k`:
  a higher k spreads nodes evenly, a lower k lets them cluster), springs w d^2 along
  edges, and a centering pull that grows level by level.
- Hu's adaptive step: every node moves `step` along its force; the step shrinks when the
  total energy rises and grows after 5 improvements in a row. A level is done when the
  displacement, relative to the typical spacing of its nodes, falls under `tolerance`.

Deterministic for a seed on a given device. No Python loop runs over nodes or edges: the
Barnes-Hut tree is a stack of dense grids built with bincount, walked level-synchronously
for all nodes at once.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from immersions.layout.graph import Graph


_DENSE_THREADS = 1  # threads for the all-pairs sum while a layout runs on fewer (see `layout`)
EXACT_BELOW = 2500  # nodes: below this the all-pairs sum beats the tree (both measured on CPU)


@dataclass(frozen=True)
class LayoutConfig:
    seed: int = 0
    theta: float = 0.6  # Barnes-Hut opening angle: larger is faster and rougher
    repulsion_exponent: float = 2.5  # k in q_i q_j / d^(k-1)
    weights: str = "uniform"  # "uniform" or "kernel" (the trained kernel magnitudes)
    attraction: float = 1.0
    degree_balance: float = 1.0  # springs / (deg_i deg_j)^(balance/2): 0 = every edge alike, 1 = hubs not crushed
    gravity: float = 0.02  # centering pull at the coarsest level; grows to `gravity_growth` x at the finest
    gravity_growth: float = 4.0
    coarsest: int = 60  # stop coarsening at this many nodes
    iterations: int = 300  # most steps at the coarsest level
    fine_iterations: int = 40  # most steps at the finest level (in between: interpolated)
    tolerance: float = 0.2  # mean move / node spacing at which the finest level counts as converged
    coarse_tolerance: float = 0.03  # the same at the coarsest level, where steps are cheap (in between: geometric)
    cooling: float = 0.9  # Hu's step factor

    def __post_init__(self):
        if self.weights not in ("uniform", "kernel"):
            raise ValueError(f"weights must be 'uniform' or 'kernel', not {self.weights!r}")
        if not 0 < self.theta < 1.5:
            raise ValueError("theta must be in (0, 1.5)")


@dataclass
class Level:
    nodes: int
    src: torch.Tensor  # int64 [E]
    dst: torch.Tensor
    weight: torch.Tensor  # float32 [E]
    charge: torch.Tensor  # float32 [N]
    parent: torch.Tensor | None = None  # int64 [N]: index in the next coarser level


@dataclass
class Layout:
    positions: np.ndarray  # float32 [N, 2]
    levels: list[dict] = field(default_factory=list)  # per level (finest first): nodes, edges, iterations, ...


# -- the hierarchy ------------------------------------------------------------------------

def _coarsen_index(shapes: list[tuple[int, int]]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Parent of every node when each tap halves its larger dimension (ties: pitch)."""
    parents, coarse_shapes, offset = [], [], 0
    for c, p in shapes:
        fc, fp = (2, 1) if c > p else (1, 2) if p > 1 else (2, 1) if c > 1 else (1, 1)
        cc, pc = -(-c // fc), -(-p // fp)
        ch, pi = np.divmod(np.arange(c * p), p)
        parents.append(offset + (ch // fc) * pc + pi // fp)
        coarse_shapes.append((cc, pc))
        offset += cc * pc
    return np.concatenate(parents), coarse_shapes


def merge_edges(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, parent: torch.Tensor,
                nodes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges between clusters: duplicates merged with summed weight, self-loops dropped."""
    s, d = parent[src], parent[dst]
    keep = s != d
    key = s[keep] * nodes + d[keep]
    unique, inverse = torch.unique(key, return_inverse=True)
    w = torch.zeros(len(unique), dtype=weight.dtype, device=weight.device).index_add_(0, inverse, weight[keep])
    return unique // nodes, unique % nodes, w


def hierarchy(graph: Graph, cfg: LayoutConfig, device: torch.device) -> list[Level]:
    weight = torch.from_numpy(graph.weight if cfg.weights == "kernel" else np.ones_like(graph.weight))
    src = torch.from_numpy(graph.src).long()
    dst = torch.from_numpy(graph.dst).long()
    # Springs are scaled by the degrees of their ends, so a neuron with a thousand inputs is
    # not crushed onto its neighbours while one with ten floats free.
    degree = torch.bincount(src, weight, graph.nodes) + torch.bincount(dst, weight, graph.nodes)
    weight = weight / (degree[src] * degree[dst]).clamp_min(1e-12).pow(cfg.degree_balance / 2)
    level = Level(graph.nodes, src.to(device), dst.to(device), weight.float().to(device),
                  torch.from_numpy(graph.charge).float().to(device))
    levels = [level]
    shapes = [(t.channels, t.pitches) for t in graph.taps]
    while level.nodes > cfg.coarsest:
        parent_np, shapes_next = _coarsen_index(shapes)
        nodes = sum(c * p for c, p in shapes_next)
        if nodes == level.nodes:  # nothing left to merge: every tap is one node
            break
        parent = torch.from_numpy(parent_np).to(device)
        level.parent = parent
        src, dst, w = merge_edges(level.src, level.dst, level.weight, parent, nodes)
        charge = torch.zeros(nodes, device=device).index_add_(0, parent, level.charge)
        level = Level(nodes, src, dst, w, charge)
        levels.append(level)
        shapes = shapes_next
    return levels


def coarsened(graph: Graph, max_edges: int) -> Graph:
    """The graph merged level by level (as the hierarchy does) until it has at most
    `max_edges` edges; edge weights count the merged edges, charges add up. For comparing
    layout programs on one mid-sized graph."""
    import dataclasses

    shapes = [(t.channels, t.pitches) for t in graph.taps]
    src, dst = torch.from_numpy(graph.src).long(), torch.from_numpy(graph.dst).long()
    weight, charge, nodes = torch.ones(len(src)), torch.from_numpy(graph.charge), graph.nodes
    while len(src) > max_edges:
        parent_np, shapes = _coarsen_index(shapes)
        parent, nodes = torch.from_numpy(parent_np), sum(c * p for c, p in shapes)
        src, dst, weight = merge_edges(src, dst, weight, parent, nodes)
        charge = torch.zeros(nodes).index_add_(0, parent, charge)
    taps = tuple(dataclasses.replace(t, channels=c, pitches=p) for t, (c, p) in zip(graph.taps, shapes))
    offsets = np.concatenate([[0], np.cumsum([c * p for c, p in shapes])]).astype(np.int64)
    return Graph(taps, offsets, src.int().numpy(), dst.int().numpy(), (weight / weight.max()).float().numpy(),
                 (charge / charge.mean()).float().numpy())


# -- forces ---------------------------------------------------------------------------------

MAX_DEPTH = 16  # quadtree levels: cells down to 1/65536 of the layout's width
LEAF = 8  # a cell with this few nodes is summed node by node rather than opened


def _interleave(v: torch.Tensor) -> torch.Tensor:
    """Spread the low 16 bits of v to the even bit positions (for Morton codes)."""
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    return (v | (v << 1)) & 0x55555555


def barnes_hut(x: torch.Tensor, q: torch.Tensor, theta: float, exponent: float) -> torch.Tensor:
    """Repulsive force on every node: sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^k, with a far
    cell of the quadtree replaced by its total charge at its charge centroid when
    width / distance < theta.

    The tree adapts to crowding: nodes are sorted along a Morton (Z-order) curve, so every
    cell at every level is a contiguous run of nodes, and its charge and centroid are
    differences of prefix sums. All nodes walk the tree together, level by level."""
    n, dev = x.shape[0], x.device
    lo = x.min(dim=0).values
    span = float((x.max(dim=0).values - lo).max()) * (1 + 1e-6) + 1e-12
    g = ((x - lo) / span * (1 << MAX_DEPTH)).long().clamp_(0, (1 << MAX_DEPTH) - 1)
    code = (_interleave(g[:, 0]) << 1) | _interleave(g[:, 1])
    code, order = torch.sort(code)
    xs, qs = x[order], q[order]
    cq = torch.cat((torch.zeros(1, dtype=torch.float64, device=dev), torch.cumsum(qs.double(), 0)))
    cm = torch.cat((torch.zeros(1, 2, dtype=torch.float64, device=dev), torch.cumsum((qs[:, None] * xs).double(), 0)))
    arange = torch.arange(n, device=dev)

    # cells of each level: first node, node count, charge, centroid, and each node's cell
    cells = []
    for level in range(MAX_DEPTH + 1):
        key = code >> (2 * (MAX_DEPTH - level))
        new = torch.ones(n, dtype=torch.bool, device=dev)
        new[1:] = key[1:] != key[:-1]
        first = arange[new]
        count = torch.diff(torch.cat((first, torch.tensor([n], device=dev))))
        qc = (cq[first + count] - cq[first]).float()
        mc = ((cm[first + count] - cm[first]) / (cq[first + count] - cq[first]).clamp_min(1e-30)[:, None]).float()
        cells.append([key[new], first, count, qc, mc, torch.cumsum(new, 0) - 1])
    force = torch.zeros_like(xs)

    def add(i, qj, diff, dist):
        force.index_add_(0, i, diff * (qs[i] * qj / dist.clamp_min(span * 1e-9) ** exponent)[:, None])

    # where each cell's children start in the next level, and how many it has
    for level in range(MAX_DEPTH):
        keys, child_keys = cells[level][0], cells[level + 1][0]
        lo_child = torch.searchsorted(child_keys, keys << 2)
        cells[level] += (lo_child, torch.searchsorted(child_keys, (keys << 2) + 4) - lo_child)

    def take(index, *arrays):
        return [a.index_select(0, index) for a in arrays]

    pi = arange  # the frontier: (node, cell) pairs still to be judged; all nodes start at the root
    pc = torch.zeros(n, dtype=torch.long, device=dev)
    direct_i, direct_c, direct_level = [], [], []
    for level in range(MAX_DEPTH + 1):
        keys, first, count, qc, mc, own = cells[level][:6]
        if level == MAX_DEPTH or len(pi) == 0:
            direct_i.append(pi), direct_c.append(first[pc]), direct_level.append(count[pc])
            break
        width = span / (1 << level)
        diff = xs.index_select(0, pi) - mc.index_select(0, pc)
        dist = torch.hypot(diff[:, 0], diff[:, 1])
        far = (own.index_select(0, pi) != pc) & (width < theta * dist)
        i, c, d, r = take(far.nonzero().squeeze(1), pi, pc, diff, dist)
        add(i, qc.index_select(0, c), d, r)
        pi, pc = take((~far).nonzero().squeeze(1), pi, pc)
        small = count.index_select(0, pc) <= LEAF
        i, c = take(small.nonzero().squeeze(1), pi, pc)
        direct_i.append(i), direct_c.append(first.index_select(0, c)), direct_level.append(count.index_select(0, c))
        pi, pc = take((~small).nonzero().squeeze(1), pi, pc)
        # open the remaining cells: their children are a contiguous run of next-level cells
        lo_child, k = cells[level][6].index_select(0, pc), cells[level][7].index_select(0, pc)
        pi = pi.repeat_interleave(k)
        pc = lo_child.repeat_interleave(k) + arange_like(k)
    # node by node within small cells (and the deepest ones), skipping the node itself
    pi, start, k = torch.cat(direct_i), torch.cat(direct_c), torch.cat(direct_level)
    pj = start.repeat_interleave(k) + arange_like(k)
    pi = pi.repeat_interleave(k)
    other = pj != pi
    pi, pj = pi[other], pj[other]
    diff = xs[pi] - xs[pj]
    add(pi, qs[pj], diff, diff.norm(dim=1))
    out = torch.empty_like(force)
    out[order] = force
    return out


def arange_like(k: torch.Tensor) -> torch.Tensor:
    """For run lengths k: 0..k0-1, 0..k1-1, ... concatenated."""
    if len(k) == 0:
        return k
    total = torch.cumsum(k, 0)
    return torch.arange(int(total[-1]), device=k.device) - (total - k).repeat_interleave(k)


def exact_repulsion(x: torch.Tensor, q: torch.Tensor, exponent: float) -> torch.Tensor:
    """The all-pairs sum that `barnes_hut` approximates; faster than it below ~2500 nodes."""
    r = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact for close pairs
    r.fill_diagonal_(1.0).pow_(-exponent).fill_diagonal_(0.0).mul_(q[None, :])
    # sum_j r_ij (x_i - x_j) = x_i * sum_j r_ij - (r @ x)_i
    return q[:, None] * (x * r.sum(dim=1, keepdim=True) - r @ x)


def repulsion(x: torch.Tensor, q: torch.Tensor, theta: float, exponent: float) -> torch.Tensor:
    if len(x) > EXACT_BELOW:
        return barnes_hut(x, q, theta, exponent)
    with _dense_threads(x):
        return exact_repulsion(x, q, exponent)


@contextmanager
def _dense_threads(x: torch.Tensor):
    """A few big ops (the all-pairs sum, the springs) gain from every core even when the
    cores are shared, unlike the tree walk's many small ones: give them torch's threads."""
    if x.device.type != "cpu" or _DENSE_THREADS == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(_DENSE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spring_force(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Attraction w d^2 along every edge, pulling both ends together."""
    # coordinate by coordinate with in-place ops: about twice as fast on CPUs as [E, 2] rows
    xs, ys = x[:, 0].contiguous(), x[:, 1].contiguous()
    dx = xs.index_select(0, dst) - xs.index_select(0, src)
    dy = ys.index_select(0, dst) - ys.index_select(0, src)
    pull = torch.hypot(dx, dy).mul_(weight)
    dx.mul_(pull)
    dy.mul_(pull)
    fx = torch.zeros_like(xs).index_add_(0, src, dx).index_add_(0, dst, dx, alpha=-1)
    fy = torch.zeros_like(ys).index_add_(0, src, dy).index_add_(0, dst, dy, alpha=-1)
    return torch.stack((fx, fy), dim=1)


# -- the solver -------------------------------------------------------------------------------

def relax(x: torch.Tensor, level: Level, cfg: LayoutConfig, gravity: float, step: float,
          max_iterations: int, tolerance: float) -> tuple[torch.Tensor, int, bool]:
    """Hu's adaptive-step iteration on one level; returns positions, steps taken, converged."""
    energy, progress = math.inf, 0
    exponent = cfg.repulsion_exponent
    for it in range(1, max_iterations + 1):
        center = (x * level.charge[:, None]).sum(0) / level.charge.sum()
        force = repulsion(x, level.charge, cfg.theta, exponent)
        with _dense_threads(x):
            force += cfg.attraction * spring_force(x, level.src, level.dst, level.weight)
        force -= gravity * level.charge[:, None] * (x - center)
        norm = force.norm(dim=1, keepdim=True)
        move = step * force / norm.clamp_min(1e-20)
        x = x + move
        new_energy = float((norm ** 2).sum())
        if new_energy < energy:
            progress += 1
            if progress >= 5:
                progress, step = 0, step / cfg.cooling
        else:
            progress, step = 0, step * cfg.cooling
        energy = new_energy
        if step < tolerance * _spacing(x):  # every node moved `step`: the mean move
            return x, it, True
    return x, max_iterations, False


def layout(graph: Graph, cfg: LayoutConfig | None = None, device: str | torch.device | None = None,
           progress: bool = False, threads: int | None = 1) -> Layout:
    """Lay out `graph`. On a CPU it runs on `threads` torch threads (None: torch's setting).
    One is the default for the tree walk: it is thousands of small gathers, and when the
    cores are busy (dreaming, a test run) every multi-threaded op waits on a descheduled
    thread (we measured 60x slowdowns). The few big dense ops still use torch's threads."""
    cfg = cfg or LayoutConfig()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cpu" or threads is None:
        return _layout(graph, cfg, device, progress)
    global _DENSE_THREADS
    before = torch.get_num_threads()
    _DENSE_THREADS = before
    torch.set_num_threads(threads)
    try:
        return _layout(graph, cfg, device, progress)
    finally:
        torch.set_num_threads(before)


def _layout(graph: Graph, cfg: LayoutConfig, device: torch.device, progress: bool) -> Layout:
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    levels = hierarchy(graph, cfg, device)
    coarse = levels[-1]
    x = (torch.rand(coarse.nodes, 2, generator=gen) - 0.5).to(device) * math.sqrt(coarse.nodes)
    report = []
    count = len(levels)
    bar = tqdm(total=count, desc="layout", unit="level", disable=not progress)
    for depth in range(count - 1, -1, -1):
        start = time.perf_counter()
        level = levels[depth]
        if depth < count - 1:  # refine: children start at their parent, a little apart
            spacing = _spacing(x)
            x = x[level.parent] + (torch.rand(level.nodes, 2, generator=gen).to(device) - 0.5) * spacing * 0.5
        fraction = depth / max(1, count - 1)  # 1 at the coarsest level, 0 at the finest
        iterations = int(round(cfg.fine_iterations + (cfg.iterations - cfg.fine_iterations) * fraction))
        gravity = cfg.gravity * cfg.gravity_growth ** (1 - fraction)
        step = _spacing(x) * (2.0 if depth == count - 1 else 0.5)
        tolerance = cfg.tolerance * (cfg.coarse_tolerance / cfg.tolerance) ** fraction
        x, steps, converged = relax(x, level, cfg, gravity, step, iterations, tolerance)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        report.append({"nodes": level.nodes, "edges": len(level.src), "iterations": steps,
                       "converged": converged, "seconds": time.perf_counter() - start})
        bar.update(1)
    bar.close()
    report.reverse()  # finest first
    return Layout(x.float().cpu().numpy(), report)


def _spacing(x: torch.Tensor) -> float:
    """Typical distance between neighbouring nodes: sqrt(area per node)."""
    spread = x.std(dim=0).clamp_min(1e-12)
    return float(torch.sqrt(spread[0] * spread[1] * 12 / x.shape[0]))


# -- quality ------------------------------------------------------------------------------------

def edge_length_ratio(positions: np.ndarray, src: np.ndarray, dst: np.ndarray, pairs: int = 200_000,
                      seed: int = 0) -> float:
    """Mean length of the edges / mean distance of random node pairs (lower: tighter)."""
    rng = np.random.default_rng(seed)
    pos = positions.astype(np.float64)
    if len(src) > pairs:
        pick = rng.integers(0, len(src), pairs)
        src, dst = src[pick], dst[pick]
    edge = np.linalg.norm(pos[src] - pos[dst], axis=1).mean()
    a, b = rng.integers(0, len(pos), pairs), rng.integers(0, len(pos), pairs)
    return float(edge / np.linalg.norm(pos[a] - pos[b], axis=1).mean())
