"""Your own ear in one file (`--model path/to/ear.py`), end to end with the worked example in
docs/examples/waveform_ear/: a 1-D waveform convnet whose taps have no pitch axis and whose
last tap has a single time step."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from immersions.dream.dreamer import Dreamer, default_params
from immersions.dream.engine import activation_table
from immersions.dream.loop import start_clip
from immersions.errors import ImmersionsError
from immersions.frames import FRAMES_PER_LOOP
from immersions.layout.cache import model_layout
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats
from immersions.performance.headless import perform_headless
from immersions.performance.performance import OfflineClock, Performance
from immersions.registry import loop_length
from immersions.selection import Region, missing_axes, region_words
from immersions.visual.gl import offscreen_context

from helpers import REPO, run_cli
from test_ear import check_contract

EXAMPLE = REPO / "docs" / "examples" / "waveform_ear"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example's folder copied (its layout may be written there), and its model file."""
    folder = tmp_path_factory.mktemp("ear_file") / "waveform_ear"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder / "ear.py"


def test_the_example_keeps_the_contract_and_ships_its_weights_statistics_and_map(example):
    ear = load_model(example)
    check_contract(ear)
    assert not ear.hears_scalogram and ear.pitch_grid is None
    assert ear.folder == example.parent.resolve() and ear.label == str(example.parent.resolve())
    stats = load_stats(ear)
    assert stats is not None and set(stats) == {t.key for t in ear.taps}
    shipped = model_layout(ear, stats, save=False)
    assert shipped.cached, "the shipped layout.npz no longer fits the shipped weights: run train.py again"
    fresh = model_layout(ear, stats, force=True, save=False)
    assert fresh.positions.shape == (ear.graph_nodes, 2) and np.isfinite(fresh.positions).all()
    assert len(np.unique(fresh.positions.round(4), axis=0)) == ear.graph_nodes  # every neuron has its own place


def test_taps_without_a_pitch_axis_or_with_one_time_step_say_so(example):
    ear = load_model(example)
    wave, summary = ear.tap("wave 2"), ear.tap("summary")
    assert missing_axes(wave) == {"pitch": "no pitch axis"}
    assert missing_axes(summary) == {"pitch": "no pitch axis", "time": "one time step"}
    params = default_params()
    assert region_words(summary, params) == "summary  channel 0.50+0.00  (no pitch axis)  (one time step)"
    assert "time 0.50+1.00" in region_words(wave, params) and "pitch" not in region_words(wave, params).split("(")[0]
    # the activation table: one row per neuron, and the summary's one step held across the loop
    audio = torch.as_tensor(start_clip("groove", 16000 * 4, 16000, seed=1))
    for circular in (True, False):  # a loop, and a window of live input (listen mode)
        table, acts, spec = activation_table(ear, load_stats(ear), audio, circular=circular)
        assert table.shape == (ear.graph_nodes, FRAMES_PER_LOOP) and np.isfinite(table).all()
        rows = table[ear.node_offsets[summary.index]:]
        assert (rows == rows[:, :1]).all() and acts[summary.index].shape[-1] == 1
        assert spec.dim() == 3 and spec.shape[1] == ear.scalogram.cfg.n_bins  # the HUD's picture


@pytest.mark.parametrize("tap, space", [("wave 3", "waveform"), ("summary", "spectrum")])
def test_a_twenty_step_dream_climbs_its_objective(example, tap, space):
    """The default dream (the selection against the loudest of its layer's other channels,
    contrast 0.75) climbs; without the contrast, the selection itself rises."""
    ear = load_model(example)
    region = Region(ear.tap(tap).index, (0.3, 0.1))
    for contrast in (0.75, 0.0):
        params = default_params().replace(space=space, contrast=contrast)
        samples = loop_length(params, ear.sample_rate)
        dreamer = Dreamer(ear, load_stats(ear), start_clip("noise", samples, ear.sample_rate, seed=2), seed=3)
        dreamer.select(region)
        before = dreamer.measure(region, params)
        reports = [dreamer.step(params) for _ in range(20)]
        assert all(np.isfinite(r.objective) for r in reports) and dreamer.nan_resets == 0
        assert 0 < dreamer.peak <= 1.0
        if contrast:
            assert reports[-1].objective > reports[0].objective + 0.1, [r.objective for r in reports]
        else:
            after = dreamer.measure(region, params)
            # 0.05 -> 0.23 in 20 steps at the default balance (0.1); 0.05 -> 0.33 at 0.02: the
            # pull toward music's balance slows this ear's waveform-space climb, it does not stop it
            assert after > before + 0.12, (before, after)


def test_a_ten_second_headless_performance_with_the_example(example):
    params = default_params().replace(morph_loops=0)
    doc = perform_headless(10.0, (160, 90), fps=10, model=str(example), device="cpu", params=params)
    assert doc["model"] == "waveform_ear" and doc["seconds"] == pytest.approx(10.0)
    assert doc["clips_heard"] >= 1 and doc["dream_steps"] >= 1 and doc["rejected"] == 0


def test_the_map_the_overlay_and_a_preset_with_the_example(example, tmp_path):
    import imgui
    from moderngl_window.integrations.imgui import ModernGLRenderer

    from immersions.control.presets import PresetLibrary, PresetPlayer
    from immersions.performance.gui import Overlay

    ctx = offscreen_context()
    perf = Performance(ctx, (320, 180), OfflineClock(), model=str(example), device="cpu")
    target = ctx.simple_framebuffer((320, 180), components=4)
    context = imgui.create_context()
    imgui.get_io().ini_file_name = None
    gui = Overlay(ctx, ModernGLRenderer(ctx=ctx, display_size=target.size))
    try:
        perf.start()
        began = time.perf_counter()
        while perf.engine.latest() is None:
            assert time.perf_counter() - began < 60, perf.engine.error
            time.sleep(0.02)
        assert perf.set("layer", 1.0)  # the summary: no pitch axis, one time step
        target.use()
        perf.frame(0.1, target=target)
        assert perf.renderer.read_image().max() > 20  # the map glows
        before = target.read(components=3)
        gui.draw(perf, 0.1)
        assert target.read(components=3) != before
        # a preset keeps the summary's region (frozen by `keep`) by its name, and brings it back
        player = PresetPlayer(perf.controls, PresetLibrary([tmp_path]), lambda: 0.0, kept=perf.kept_regions)

        def kept() -> list[str]:
            perf.controls.apply()
            return [r.layer for r in perf.kept_regions()]

        assert perf.set("keep", True) and perf.set("layer", 0.0)
        settle(lambda: kept() == ["summary"], "the summary frozen")
        player.save("summary")
        assert perf.set("keep", False) and perf.set("layer", 0.5)
        settle(lambda: kept() == [], "nothing frozen")
        player.recall("summary")
        settle(lambda: kept() == ["summary"], "the preset's region back")
    finally:
        gui.release()
        imgui.destroy_context(context)
        target.release()
        perf.close()
        ctx.release()


def settle(predicate, what: str, timeout: float = 60.0) -> None:
    began = time.perf_counter()
    while not predicate():
        assert time.perf_counter() - began < timeout, what
        time.sleep(0.02)


# -- a model file that is not an ear ---------------------------------------------------------

BAD_FILES = {
    "raises": ("raise RuntimeError('no weights here')\n", "failed: RuntimeError: no weights here"),
    "not_an_ear": ("def make_ear():\n    return 42\n", "make_ear() returned a int, not an Ear"),
    "no_factory": ("x = 1\n", "defines no make_ear()"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_model_file_that_is_not_an_ear_is_refused_in_one_line_with_nothing_loaded(tmp_path, kind):
    source, said = BAD_FILES[kind]
    path = tmp_path / "ear.py"
    path.write_text(source)
    with pytest.raises(ImmersionsError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_model(path)
    result = run_cli("perform", "--headless", "--seconds", "1", "--no-midi", "--model", str(path), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr
    assert not (tmp_path / "layout.npz").exists()  # nothing was laid out or loaded


def test_a_folder_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "ear.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ImmersionsError, match="a folder never runs code: name the model file"):
        load_model(tmp_path)
    assert not marker.exists()


def test_info_describes_the_example_and_its_missing_axes(example):
    result = run_cli("info", "--model", str(example), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ear"] == "waveform-convnet" and doc["sample_rate"] == 16000 and doc["graph_nodes"] == 240
    assert doc["taps"][-1] == {"name": "summary", "key": "summary", "shape": [32, 1, 1],
                               "layout": "32 channels; no pitch axis; one time step"}
    assert doc["taps"][0]["shape"] == [32, 1, 4000]  # a 4-s loop at 16 kHz, one step every 16 samples
    # what made it, as the file says (`Ear.origin`), not a training record it cannot have
    assert doc["training"] is None and "train.py" in doc["origin"]["made_by"]
    text = run_cli("info", "--model", str(example), timeout=120).stdout
    assert "\norigin     a 1-D convnet over the waveform" in text and "not recorded" not in text


def test_info_on_a_model_file_that_says_nothing_of_its_origin_says_it_is_the_users_own(example):
    plain = example.with_name("plain.py")
    plain.write_text("import importlib.util\nfrom pathlib import Path\n"
                     "spec = importlib.util.spec_from_file_location('example_ear', Path(__file__).with_name('ear.py'))\n"
                     "source = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(source)\n\n"
                     "class Plain(source.WaveformEar):\n    def origin(self):\n        return None\n\n"
                     "def make_ear():\n    return Plain()\n")
    result = run_cli("info", "--model", str(plain), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["training"] is None and doc["origin"]["made_by"].startswith(f"a model file of your own ({plain}")
    assert doc["origin"]["weights"] == str(example.parent / "model.safetensors")


def test_an_ear_that_declares_fewer_dream_spaces_refuses_the_others_in_one_line(example):
    ear = load_model(example)
    ear.dream_spaces = ("waveform",)
    params = default_params().replace(space="spectrum")
    dreamer = Dreamer(ear, None, start_clip("noise", loop_length(params, 16000), 16000), seed=0)
    dreamer.select(Region(0))
    with pytest.raises(ImmersionsError, match="cannot dream in the spectrum space; use one of waveform"):
        dreamer.step(params)
    assert np.isfinite(dreamer.step(params.replace(space="waveform")).objective)


def test_the_scalogram_penalties_reach_an_ear_that_hears_the_waveform(example):
    """Its scalogram is drawn only for an objective that reads it, and then the penalties count."""
    ear = load_model(example)
    values = {}
    for penalty in (0.0, 1.0):
        params = default_params().replace(energy_penalty=penalty, high_frequency_penalty=penalty)
        dreamer = Dreamer(ear, None, start_clip("groove", loop_length(params, 16000), 16000, seed=1), seed=0)
        dreamer.select(Region(1))
        recipe = dreamer.recipe(params)
        reading = dreamer.read(dreamer.loop, recipe)
        assert "scalogram" not in vars(reading)  # not drawn yet
        values[penalty] = float(recipe.objective(reading))
        assert ("scalogram" in vars(reading)) == (penalty > 0)
    assert values[1.0] < values[0.0] - 0.01  # a groove has energy: the penalties take it off


def test_bench_dream_measures_the_example_like_a_preset(example):
    result = run_cli("bench", "dream", "--model", str(example), "--batches", "1", "--repeats", "1",
                     "--precisions", "fp32", timeout=600)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["benchmark"] == "dream" and doc["device"] == "cpu" and doc["cpu_cores"]
    row = doc["presets"][str(example)]
    assert row["ear"] == "waveform-convnet" and row["sample_rate"] == 16000 and row["loop_seconds"] == 4.0
    step = row["batches"]["1"]
    assert step["steps_per_s"] > 0 and step["plain_step_ms"] > 0 and step["split_ms"]["network"] > 0
    assert "baseline_ms_per_step" not in step  # the baseline is CPC's own network



def test_a_dream_server_dreams_with_a_model_file(example):
    """Remote dreaming with a model file: the server is given the same file, and dreams for the
    laptop as with a shipped ear."""
    import time

    from immersions.dream.loop import start_clip
    from immersions.model.stats import load_stats
    from immersions.registry import REGISTRY
    from immersions.remote.client import RemoteEngine
    from immersions.remote.server import DreamServer
    from immersions.selection import Region

    ear = load_model(example)
    server = DreamServer("tcp://127.0.0.1:*", [str(example)], ["cpu"], insecure=True, copies=1)
    server.start()
    try:
        got = []
        sr = ear.sample_rate
        with RemoteEngine(ear, load_stats(ear), start_clip("noise", 2 * sr, sr), REGISTRY.defaults(),
                          address=server.endpoint, on_frame=got.append, copies=1) as remote:
            remote.select(Region(len(ear.taps) - 1, (0.5, 0.0)))
            deadline = time.monotonic() + 240
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(got) >= 2, remote.status
            assert remote.error is None and got[-1].activations.shape[0] == ear.graph_nodes
            assert np.isfinite(got[-1].clip).all() and np.abs(got[-1].clip).max() > 0
        assert server.rejected == 0
    finally:
        server.stop()
