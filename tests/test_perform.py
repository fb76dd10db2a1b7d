"""The performance as a whole: real EGL, real miniaudio renderer, real dream engine, real
window under Xvfb."""

import json
import shutil
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

from immersions.registry import REGISTRY
from immersions.model.checkpoint import load_model
from immersions.performance.headless import render_offscreen
from immersions.selection import region_from_params
from immersions.performance.performance import OfflineClock, Performance
from immersions.visual.gl import offscreen_context

from helpers import REPO, run_cli


@pytest.fixture(scope="module")
def model_dir(micro_model_dir, tmp_path_factory):
    """The micro model in a folder of its own (its layout gets cached there)."""
    folder = tmp_path_factory.mktemp("perform") / "micro"
    shutil.copytree(micro_model_dir, folder)
    return folder


@pytest.fixture
def performance(model_dir):
    ctx = offscreen_context()
    perf = Performance(ctx, (320, 180), OfflineClock(), model=str(model_dir), device="cpu")
    yield perf
    perf.close()
    ctx.release()


def wait_for_clip(perf, timeout=60.0):
    began = time.perf_counter()
    while perf.engine.latest() is None:
        assert time.perf_counter() - began < timeout, perf.engine.error
        time.sleep(0.02)


def test_selection_parameters_pick_taps_across_the_network(model_dir):
    model = load_model(model_dir)
    params = REGISTRY.defaults()
    assert region_from_params(len(model.taps), params.replace(layer=0.0)).tap == 0
    assert region_from_params(len(model.taps), params.replace(layer=1.0)).tap == len(model.taps) - 1
    region = region_from_params(len(model.taps), params.replace(layer=0.5, pitch_pos=0.25, pitch_span=0.5))
    assert region.tap == round(0.5 * (len(model.taps) - 1)) and region.pitch == (0.25, 0.5)


def test_picture_follows_the_heard_clip(performance):
    perf, clock = performance, performance.clock
    perf.start()
    wait_for_clip(perf)
    target = perf.ctx.simple_framebuffer(perf.size)
    for _ in range(20):
        clock.advance(0.25)
        perf.frame(0.25, target=target)
        heard = clock.position()
        # the renderer holds the activations of the clip being heard, at the heard playhead
        assert perf.heard.serial == heard.serial and perf.heard.fraction == pytest.approx(heard.fraction)
        assert perf.renderer.stats.bytes_uploaded_last_frame <= 1024
    assert perf.heard.serial >= 1 and perf.shown_frame() is perf.heard.frame
    assert perf.renderer.read_image().max() > 40  # the map glows
    target.release()


def test_bad_values_are_rejected_and_the_last_good_state_kept(performance):
    perf = performance
    assert perf.set("volume", 0.5) and perf.clock.renderer.volume == 0.5
    assert not perf.set("volume", 7.0)
    assert perf.params["volume"] == 0.5 and perf.clock.renderer.volume == 0.5 and perf.rejected == 1
    assert "volume" in perf.last_error
    assert perf.set("learning_rate", -1.5) and perf.engine.params["learning_rate"] == -1.5
    assert not perf.set("optimizer", "newton") and perf.engine.params["optimizer"] == "sgd"
    assert perf.set("bloom_intensity", 2.0) and perf.params["bloom_intensity"] == 2.0
    assert not perf.set_start("no-such-clip.wav") and perf.start_name == "groove"
    assert perf.set_start("kick") and perf.start_name == "kick"
    assert not perf.set("no_such_parameter", 1)
    perf.start()
    assert perf.toggle_dreaming() is False and perf.engine.paused
    assert perf.toggle_dreaming() is True and not perf.engine.paused


def test_render_writes_frames_and_the_heard_sound(model_dir, tmp_path):
    out = tmp_path / "render"
    doc = render_offscreen(4, (320, 180), out, seconds=2.0, model=str(model_dir), device="cpu")
    pngs = sorted(out.glob("frame_*.png"))
    assert len(pngs) == 4 and doc["frames"] == 4
    for key in ("frames", "fps", "ms_per_frame", "nodes_drawn", "edges_drawn", "bytes_uploaded_per_frame"):
        assert key in doc
    assert doc["nodes_drawn"] == load_model(model_dir).graph_nodes
    assert doc["bytes_uploaded_per_frame"] <= 1024 and doc["bytes_uploaded_per_clip"] > 0
    with wave.open(str(out / "heard.wav")) as w:
        assert w.getframerate() == 48000 and w.getnframes() == 96000
    assert doc["audio_rms"] > 0.01  # the dreamed loop was heard

    from PIL import Image

    image = np.asarray(Image.open(pngs[-1]))
    assert image.shape == (180, 320, 3) and image.max() > 40


def test_overlay_draws(model_dir, tmp_path):
    from PIL import Image

    plain, with_overlay = tmp_path / "plain", tmp_path / "overlay"
    # imgui lays a new window out on its first frame and shows it from the second
    render_offscreen(2, (640, 360), plain, seconds=0.5, model=str(model_dir), device="cpu")
    render_offscreen(2, (640, 360), with_overlay, seconds=0.5, model=str(model_dir), device="cpu", overlay=True)
    a = np.asarray(Image.open(plain / "frame_00001.png")).astype(int)
    b = np.asarray(Image.open(with_overlay / "frame_00001.png")).astype(int)
    panel = (slice(20, 300), slice(20, 300))  # the parameter panel's corner
    assert np.abs(a[panel] - b[panel]).mean() > 10


def test_render_command_json(model_dir, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    for name in ("frame_00000.png", "frame_00001.png", "frame_00002.png", "frame_00117.png", "frame_1.png",
                 "notes.txt", "frame_00003.png.txt"):
        (out / name).write_bytes(b"an earlier run")
    result = run_cli("render", "--model", str(model_dir), "--frames", "2", "--size", "160x90", "--seconds", "1",
                     "--out", str(out), "--json", "--set", "bloom=false")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["frames"] == 2 and doc["size"] == [160, 90]
    # an earlier, longer run's frames are gone; the new ones and anything not a frame of ours stay
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.png", "frame_00001.png", "frame_00003.png.txt",
                                                      "frame_1.png", "heard.wav", "notes.txt"]
    assert (out / "frame_00000.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_cli("render", "--model", str(model_dir), "--size", "big", "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (apt-get install xvfb xauth)")
def test_window_opens_draws_and_closes_under_xvfb(model_dir):
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 800x600x24", sys.executable, "-m", "immersions", "perform",
           "--model", str(model_dir), "--windowed", "--size", "640x360", "--seconds", "4", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "performance closed after" in result.stderr
    frames = int(result.stderr.split("performance closed after")[1].split()[0])
    assert frames > 3
    assert "NULL" in result.stderr  # no sound card here: it played silently and said so


# A window probe: patches the window (`on_render`, recording into `seen`), then runs the command
# line; `seen` comes back as JSON on stdout.
PROBE_RUN = """
from immersions.cli.parser import main
status = main(sys.argv[1:])
print("SEEN " + json.dumps(seen))
sys.exit(status)
"""


def run_window_probe(probe: str, model_dir, seconds: float, *extra: str):
    """`immersions perform` in a 320x180 window under Xvfb with `probe` in it: (the process, seen)."""
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 800x600x24", sys.executable, "-c", probe + PROBE_RUN, "perform",
           "--model", str(model_dir), "--windowed", "--size", "320x180", "--seconds", str(seconds),
           "--device", "cpu", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return result, json.loads(result.stdout.split("SEEN ", 1)[1])


# Runs `immersions perform` with the frame cap at 8 and records, for every frame the window
# draws, when it began and the fps the HUD shows after it (perf.fps, what gui.py prints).
HUD_FPS_PROBE = """
import json, sys, time
from immersions.performance import window as W
W.frame_cap = lambda max_fps, renderer: 8.0  # the cap, whatever the GL renderer
seen = []
draw = W.PerformWindow.on_render
def on_render(self, time_, frametime):
    began = time.perf_counter()
    draw(self, time_, frametime)
    seen.append((began, self.perf.fps))
W.PerformWindow.on_render = on_render
"""


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (apt-get install xvfb xauth)")
def test_the_hud_shows_the_frames_drawn_a_second_under_a_cap(model_dir):
    """The HUD's fps is the frames drawn a second of wall time: at a cap of 8 it reads about 8
    (it read thousands: an average of 1/frametime, whose first frametime is near zero)."""
    _, seen = run_window_probe(HUD_FPS_PROBE, model_dir, 4)
    assert len(seen) > 16
    began = [t for t, _ in seen]
    recent = [t for t in began if t >= began[-1] - 2.0]  # the frames that began in the last 2 s
    drawn = (len(recent) - 1) / (recent[-1] - recent[0])
    hud = seen[-1][1]
    assert drawn <= 8.0 * 1.05  # the cap held
    assert abs(hud - drawn) <= 0.1 * drawn, (hud, drawn)
    # never above the cap, not even at the start (it read thousands, then 25 with the first frames)
    assert max(fps for _, fps in seen[1:]) <= 8.0 * 1.001, [round(fps, 2) for _, fps in seen[:6]]


# Runs `immersions perform` with a cue device and records, for every frame the window draws,
# the cue's figures and the cue lines the overlay wrote on the HUD (every imgui.text call of the
# frame is read as it is drawn: the text itself, not its pixels).
CUE_PROBE = """
import json, sys
import imgui
from immersions.performance import window as W
texts, seen = [], []
text = imgui.text
def read_text(line, *args, **kwargs):
    texts.append(str(line))
    return text(line, *args, **kwargs)
imgui.text = read_text
draw = W.PerformWindow.on_render
def on_render(self, time_, frametime):
    if not seen:  # the D key, as a performer presses it: the controls edit deck B, made now
        keys = self.wnd.keys
        for action in (keys.ACTION_PRESS, keys.ACTION_RELEASE):
            self.on_key_event(keys.D, action, self.wnd.modifiers)
    del texts[:]
    draw(self, time_, frametime)
    if self.wnd.is_closing:  # the last frame: --seconds closed the window, and the performance with it
        return
    cue, stats = self.perf.clock.cue, self.perf.clock.stats()
    seen.append({"hud": [t for t in texts if t.startswith("cue:")], "line": cue.line(), **cue.status(),
                 "callbacks": cue.callbacks, "written": cue.ring.written, "faults": cue.faults,
                 "cue_serial": cue.position().serial, "late": stats.late_callbacks, "decks": len(self.perf.decks)})
W.PerformWindow.on_render = on_render
"""


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (apt-get install xvfb xauth)")
def test_the_window_plays_a_cue_device_and_the_hud_shows_its_line(model_dir):
    """`perform --cue-device null` in a real window: the cue's own NULL device plays the deck off
    air (deck B, made by the D key at the first frame, dreams there while A is on air) and the
    HUD says so."""
    result, seen = run_window_probe(CUE_PROBE, model_dir, 6, "--audio-backend", "null", "--cue-device", "null")
    assert "cue: NULL Playback Device on Null" in result.stderr  # opened, and said so
    assert len(seen) > 8 and all(s["decks"] == 2 for s in seen)
    last = seen[-1]
    assert last["device"] == "NULL Playback Device" and last["playing"] is True and last["reopens"] == 0
    assert last["callbacks"] > 10 and last["written"] > 0.5 * 48000 and last["faults"] == 0  # it played
    # it runs dry only where the player's callback came late (this machine stalled): never on its own
    assert last["underruns"] == 0 or last["late"] > 0
    assert last["cue_serial"] >= 1  # the headphones play deck B's dreamed loop
    # the HUD shows the cue's line, every frame, as the cue says it
    assert all(s["hud"] == [s["line"]] for s in seen)
    assert last["hud"] == ["cue: NULL Playback Device, playing"]


def test_perform_without_a_display_says_so_in_one_line(model_dir):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "immersions", "--quiet", "perform", "--model", str(model_dir)],
                            capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("immersions: error: cannot open a window")
    assert "immersions render" in lines[0]


def test_several_models_switch_at_a_loop_boundary_without_stopping_the_sound(model_dir, tmp_path):
    """Two networks loaded; a switch (an action, as from a MIDI button) keeps the old map and
    sound until the new model's first clip is heard, which the player takes at a loop end."""
    other = tmp_path / "micro-b"
    shutil.copytree(model_dir, other)
    ctx = offscreen_context()
    clock = OfflineClock()
    perf = Performance(ctx, (160, 90), clock, model=str(model_dir), device="cpu",
                       params=REGISTRY.defaults().replace(bars=1, bpm=200.0))
    try:
        perf.preload([str(other)])
        assert len(perf.models) == 2 and len(perf.renderers) == 2
        first = perf.renderer
        perf.start()
        wait_for_clip(perf)
        target = ctx.simple_framebuffer(perf.size)

        def step(seconds=0.1):
            clock.advance(seconds)
            perf.frame(seconds, target=target)

        while perf.heard.serial < 0:
            step()
        perf.controls.request_action("model_next", None, "midi")
        step()
        assert perf.loaded.key == str(other) and perf.renderer is first  # still hearing (and seeing) model A
        switched_at = None
        for _ in range(200):
            step()
            if perf.renderer is not first:
                switched_at = clock.renderer.frames
                break
            time.sleep(0.02)  # let the dream thread make model B's first clip
        assert switched_at is not None, "model B was never heard"
        assert perf.shown_frame().model_name == str(other)
        audio = clock.audio()
        block = clock.sample_rate // 10
        rms = np.sqrt(np.mean(audio[: len(audio) // block * block].reshape(-1, block) ** 2, axis=1))
        assert (rms[2:] > 1e-3).all()  # no silent gap across the switch
        perf.controls.request_action("model", 0, "keys")
        perf.controls.request_action("model", "no-such-model", "osc")
        step()
        assert perf.loaded.key == str(model_dir)
        assert "no-such-model" in (perf.controls.last_error or "")
        target.release()
    finally:
        perf.close()
        ctx.release()


def test_controls_reach_the_engine_through_the_hub(performance):
    perf = performance
    seen = []
    perf.controls.listen(seen.append)
    perf.controls.request("learning_rate", -1.0, "osc")
    perf.controls.request("learning_rate", 99.0, "osc")  # rejected, the last good value stays
    perf.controls.request("start_clip", "kick", "midi")
    perf.controls.request_action("restart", None, "midi")
    perf.controls.apply()
    assert perf.engine.params["learning_rate"] == -1.0 and perf.start_name == "kick"
    assert [(c.name, c.value, c.source) for c in seen] == [("learning_rate", -1.0, "osc"), ("start_clip", "kick", "midi")]
    assert perf.controls.rejected == 1 and "learning_rate" in perf.controls.last_error


def test_the_quiet_toggle_quiets_the_region_being_edited_and_the_map_shows_it(performance):
    perf = performance
    perf.start()
    assert perf.set("keep", True) and perf.set("layer", 0.0) and perf.set("quiet", True)
    dreamer = perf.engine.dreamer
    began = time.perf_counter()
    while not (len(dreamer.selection.regions) == 2 and dreamer.selection.regions[-1].quiet):
        assert time.perf_counter() - began < 30, dreamer.selection
        time.sleep(0.02)
    assert not dreamer.selection.regions[0].quiet and dreamer.selection.regions[-1].tap == 0
    began = time.perf_counter()
    while perf.engine.latest() is None or not perf.engine.latest().quieted.any():
        assert time.perf_counter() - began < 60, perf.engine.error
        time.sleep(0.02)
    frame = perf.engine.latest()
    assert (frame.selection & frame.quieted).sum() == frame.quieted.sum()  # quieted neurons are selected ones
    assert frame.quieted[: perf.model.taps[0].neurons].any() and not frame.quieted[perf.model.taps[0].neurons:].any()
    assert perf.set("quiet", False)
    while dreamer.selection.regions[-1].quiet:
        assert time.perf_counter() - began < 90
        time.sleep(0.02)


def test_a_preset_saves_and_recalls_a_compound_selection(performance, tmp_path):
    from immersions.control.presets import PresetLibrary, PresetPlayer

    perf = performance
    perf.start()
    player = PresetPlayer(perf.controls, PresetLibrary([tmp_path]), lambda: 0.0, kept=perf.kept_regions)
    dreamer = perf.engine.dreamer
    middle = dreamer.selection.regions[0].tap  # the faders' region at the defaults

    def settle(predicate, what):
        began = time.perf_counter()
        while not predicate(dreamer.selection.regions):
            assert time.perf_counter() - began < 60, (what, dreamer.selection)
            time.sleep(0.02)

    # freeze the middle tap's region (excite), then edit a quiet one on the first tap
    for name, value in (("keep", True), ("layer", 0.0), ("quiet", True), ("channel_pos", 0.9)):
        assert perf.set(name, value)
    settle(lambda rs: len(rs) == 2 and rs[-1].quiet and rs[-1].tap == 0, "compound")
    saved = perf.kept_regions()
    assert len(saved) == 1 and saved[0].weight == 1.0 and saved[0].layer == perf.model.taps[middle].name
    player.save("compound")
    # something else: one excited region on the last tap
    for name, value in (("keep", False), ("quiet", False), ("layer", 1.0)):
        assert perf.set(name, value)
    settle(lambda rs: len(rs) == 1 and not rs[0].quiet and rs[0].tap == len(perf.model.taps) - 1, "plain")
    player.recall("compound")
    perf.controls.apply()
    settle(lambda rs: len(rs) == 2 and rs[0].tap == middle and not rs[0].quiet and rs[-1].tap == 0 and rs[-1].quiet,
           "recalled")
    assert perf.params["keep"] and perf.params["quiet"]
    # a region on a tap this model lacks is skipped in one line; the rest stands
    from immersions.selection import NamedRegion

    assert perf.set_regions((NamedRegion("no such tap", (0.5, 0.0), (0.5, 1.0), (0.5, 1.0)),)) == 0
    assert "no such tap" in perf.last_error
