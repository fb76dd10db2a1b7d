import json
import logging
import shutil

import numpy as np
import pytest
import torch

from immersions.layout.cache import LAYOUT_FILE, model_layout, separate_coincident
from immersions.layout.force import (
    LayoutConfig, barnes_hut, coarsened, edge_length_ratio, exact_repulsion, layout, spring_force,
)
from immersions.layout.graph import build_graph, pitch_links
from immersions.layout.sfdp import sfdp_available, sfdp_layout
from immersions.model.checkpoint import load_model
from immersions.model.config import preset
from immersions.model.cpc import CPC
from immersions.model.stats import load_stats


# -- the graph -------------------------------------------------------------------------------

def expected_counts(cfg):
    """Nodes and edges of a preset, counted pitch by pitch straight from the config."""
    def window(p_in, pool, kernel):  # input pitches feeding each output pitch, summed
        pooled = -(-p_in // pool)
        total = 0
        for q_out in range(pooled):
            for d in range(kernel):
                q = q_out + d - kernel // 2
                if 0 <= q < pooled:
                    total += min(pool, p_in - q * pool)
        return total

    nodes = edges = 0
    pitches, c_prev = cfg.scalogram.n_bins, None
    for block in cfg.encoder:
        c = block.channels
        pooled = -(-pitches // block.pool[0])
        nodes += c * pitches + c * pooled
        if c_prev is not None:
            edges += c * c_prev * window(pitches, 1, block.conv1[0])  # conv1 from the previous block
            residual = c if c == c_prev else c * c_prev  # identity or 1x1 projection
            edges += residual * window(pitches, block.pool[0], 1)
        edges += c * c * window(pitches, block.pool[0], block.conv2[0])  # conv2 after the pool
        pitches, c_prev = pooled, c
    for layer in cfg.ar:  # dense over channels; the residual runs parallel to the conv
        nodes += layer.channels
        edges += layer.channels * c_prev
        c_prev = layer.channels
    return nodes, edges


def test_seed_graph_counts_match_the_architecture():
    model = CPC(preset("seed")).eval()
    graph = build_graph(model)
    nodes, edges = expected_counts(model.cfg)
    assert graph.nodes == nodes == model.graph_nodes
    assert graph.edges == edges
    assert graph.edges > 14_000_000 and 20_000 < graph.nodes < 40_000
    # no edge twice
    key = graph.src.astype(np.int64) * graph.nodes + graph.dst
    assert len(np.unique(key)) == graph.edges


def test_node_index_is_shared_with_the_model():
    model = CPC(preset("micro")).eval()
    graph = build_graph(model)
    assert list(graph.offsets[:-1]) == list(model.node_offsets)
    tap = model.tap("enc3.conv1")
    node = graph.node(tap.index, 2, 17)
    assert node == model.node_offsets[tap.index] + 2 * tap.pitches + 17
    t, c, p = graph.locate(np.array([node, 0, graph.nodes - 1]))
    assert (t[0], c[0], p[0]) == (tap.index, 2, 17)
    assert (t[1], c[1], p[1]) == (0, 0, 0)
    assert t[2] == len(model.taps) - 1
    assert (graph.node_tap == np.searchsorted(graph.offsets, np.arange(graph.nodes), side="right") - 1).all()
    with pytest.raises(IndexError):
        graph.node(tap.index, tap.channels, 0)


def test_edges_follow_kernels_pools_and_padding():
    # a 3-pitch kernel without pool reaches p-1 .. p+1, clipped at the edges
    p_out, p_in, d = pitch_links(5, 1, 3)
    links = set(zip(p_out.tolist(), p_in.tolist()))
    assert links == {(o, i) for o in range(5) for i in range(5) if abs(o - i) <= 1}
    # pool 2 then a 1-pitch kernel: output q reads input pitches 2q and 2q+1; ceil mode keeps the odd one
    p_out, p_in, _ = pitch_links(5, 2, 1)
    assert set(zip(p_out.tolist(), p_in.tolist())) == {(0, 0), (0, 1), (1, 2), (1, 3), (2, 4)}

    model = CPC(preset("micro")).eval()
    graph = build_graph(model)
    x, h1 = model.tap("enc1.conv2"), model.tap("enc2.conv1")  # conv1 of block 2: kernel (3, 1)
    target = graph.node(h1.index, 1, 40)
    sources = graph.src[graph.dst == target]
    t, c, p = graph.locate(sources)
    assert set(t.tolist()) == {x.index}
    assert set(p.tolist()) == {39, 40, 41} and set(c.tolist()) == set(range(x.channels))


def test_edge_weights_are_kernel_magnitudes_and_charges_follow_statistics(micro_model_dir):
    model = load_model(micro_model_dir)
    block = model.encoder[1]
    with torch.no_grad():
        block.conv1.weight[0, 1, 0, :] = 0  # c_out 0 <- c_in 1 at pitch offset -1: gone
        block.conv1.weight[0, 2, 1, :] = 5.0  # c_out 0 <- c_in 2 at offset 0: the strongest link of the tap
    graph = build_graph(model, load_stats(model))
    x, h1 = model.tap("enc1.conv2"), model.tap("enc2.conv1")

    def weight(c_in, p_in, c_out, p_out):
        s, d = graph.node(x.index, c_in, p_in), graph.node(h1.index, c_out, p_out)
        return float(graph.weight[(graph.src == s) & (graph.dst == d)][0])

    assert weight(1, 9, 0, 10) <= 1e-6  # kept as a link, with no weight
    assert weight(2, 10, 0, 10) == pytest.approx(1.0)
    assert 0 < weight(3, 10, 0, 10) < 0.5
    assert graph.charge.mean() == pytest.approx(1.0, rel=1e-4) and graph.charge.min() > 0
    assert graph.charge.std() > 0  # the statistics give charges, not a constant
    assert (build_graph(model).charge == 1).all()  # without statistics: uniform


# -- forces ----------------------------------------------------------------------------------

@pytest.mark.parametrize("clustered", [False, True])
def test_barnes_hut_approximates_the_exact_sum(clustered):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 2, generator=gen)
    if clustered:  # a tight knot beside a wide cloud: the tree must go deep there
        x[:1000] *= 1e-4
    q = torch.rand(3000, generator=gen) + 0.5
    approx, exact = barnes_hut(x, q, 0.6, 2.5), exact_repulsion(x, q, 2.5)
    assert float((approx - exact).norm() / exact.norm()) < 0.02
    coarse = barnes_hut(x, q, 1.2, 2.5)  # a wider opening angle is rougher
    assert float((coarse - exact).norm()) > float((approx - exact).norm())


def test_repulsion_pushes_apart_and_springs_pull_together():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    q = torch.tensor([1.0, 3.0])
    f = exact_repulsion(x, q, 2.5)
    assert f[0, 0] == pytest.approx(-3.0 * 2.0 / 2.0 ** 2.5) and f[1, 0] == pytest.approx(-f[0, 0])
    s = spring_force(x, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]))
    assert s[0, 0] == pytest.approx(0.5 * 2.0 ** 2) and s[1, 0] == pytest.approx(-s[0, 0])


# -- layout ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro_layout():
    graph = build_graph(CPC(preset("micro")).eval())
    return graph, layout(graph, LayoutConfig(seed=1))


def test_layout_is_deterministic_and_seeded(micro_layout):
    graph, first = micro_layout
    again = layout(graph, LayoutConfig(seed=1))
    assert np.array_equal(first.positions, again.positions)
    other = layout(graph, LayoutConfig(seed=2, iterations=20, fine_iterations=2))
    assert not np.allclose(first.positions, other.positions)


def test_layout_quality(micro_layout):
    graph, result = micro_layout
    pos = result.positions
    assert np.isfinite(pos).all()
    assert len(np.unique(separate_coincident(pos), axis=0)) == graph.nodes
    assert edge_length_ratio(pos, graph.src, graph.dst) <= 0.25
    # taps form distinct regions: a node's nearest neighbours are mostly of its own tap
    d = torch.cdist(torch.from_numpy(pos), torch.from_numpy(pos))
    d.fill_diagonal_(float("inf"))
    nearest = d.topk(5, largest=False).indices.numpy()
    tap = graph.node_tap
    assert (tap[nearest] == tap[:, None]).mean() > 0.9
    # a multilevel run: from a few dozen nodes up to all of them
    assert result.levels[0]["nodes"] == graph.nodes and result.levels[-1]["nodes"] <= 80
    assert len(result.levels) >= 5


def test_coarsened_graph_keeps_charge_and_bounds_edges():
    graph = build_graph(CPC(preset("micro")).eval())
    small = coarsened(graph, 20_000)
    assert small.edges <= 20_000 < graph.edges
    assert small.nodes == small.offsets[-1] < graph.nodes
    assert small.charge.mean() == pytest.approx(1.0, rel=1e-4)
    assert small.src.max() < small.nodes and small.dst.max() < small.nodes


@pytest.mark.skipif(not sfdp_available(), reason="Graphviz sfdp not installed (apt-get install graphviz)")
def test_sfdp_lays_out_the_same_graph():
    graph = coarsened(build_graph(CPC(preset("micro")).eval()), 5_000)
    positions, seconds = sfdp_layout(graph)
    assert positions.shape == (graph.nodes, 2) and seconds > 0
    assert edge_length_ratio(positions, graph.src, graph.dst) < 0.5


# -- cache -----------------------------------------------------------------------------------

def test_layout_is_cached_beside_the_model(tmp_path, micro_model_dir, caplog):
    folder = tmp_path / "m"
    shutil.copytree(micro_model_dir, folder)
    model = load_model(folder)
    stats = load_stats(model)
    cfg = LayoutConfig(iterations=60, fine_iterations=10)
    first = model_layout(model, stats, cfg)
    assert not first.cached and (folder / LAYOUT_FILE).is_file()
    second = model_layout(model, stats, cfg)
    assert second.cached and np.array_equal(first.positions, second.positions) and second.seconds == 0
    # other settings or another graph: recomputed
    assert not model_layout(model, stats, LayoutConfig(seed=5, iterations=60, fine_iterations=10)).cached
    assert not model_layout(model, None, LayoutConfig(seed=5, iterations=60, fine_iterations=10)).cached
    # a damaged file is recomputed with a warning, never trusted
    (folder / LAYOUT_FILE).write_bytes(b"not a layout")
    with caplog.at_level(logging.WARNING):
        again = model_layout(model, stats, cfg)
    assert not again.cached and "unreadable layout" in caplog.text
    with np.load(folder / LAYOUT_FILE, allow_pickle=False) as data:
        assert data["positions"].shape == (model.graph_nodes, 2)


def test_shipped_default_model_ships_its_layout():
    model = load_model(None)
    result = model_layout(model, load_stats(model), save=False)
    assert result.cached, "models/full/layout.npz (the default) is missing or stale: run `immersions layout --model full`"
    assert result.edge_length_ratio() <= 0.25
    assert len(np.unique(result.positions, axis=0)) == model.graph_nodes


def test_layout_command(tmp_path, micro_model_dir):
    from helpers import run_cli

    folder = tmp_path / "m"
    shutil.copytree(micro_model_dir, folder)
    (folder / "layout.npz").unlink(missing_ok=True)  # laid out here, whatever another test left in the fixture
    png = tmp_path / "layout.png"
    result = run_cli("layout", "--model", str(folder), "--json", "--png", str(png))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    for key in ("nodes", "edges", "levels", "seconds", "peak_memory_mb", "edge_length_ratio"):
        assert key in doc
    assert doc["nodes"] == 4032 and not doc["cached"] and doc["edge_length_ratio"] <= 0.25
    assert png.stat().st_size > 10_000
    again = json.loads(run_cli("layout", "--model", str(folder), "--json").stdout)
    assert again["cached"] and again["seconds"] == 0
    bad = run_cli("layout", "--model", str(folder), "--theta", "7")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
