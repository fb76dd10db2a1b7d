"""Listen mode and capture: the network's response to the room's sound, and clips taken on
the bar. Real model (micro), real ring, real threads, real EGL for the performance."""

import time

import numpy as np
import pytest
import torch

from immersions.devices.capture import InputRing, SoundIn
from immersions.synth import render_loop
from immersions.registry import REGISTRY, loop_length
from immersions.dream.dreamer import Dreamer
from immersions.selection import Region
from immersions.dream.listen import ListenEngine, refresh_period, seconds_to_next_bar, window_fraction
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats
from immersions.performance.performance import OfflineClock, Performance
from immersions.visual.gl import offscreen_context

RATE = 16000  # the micro model's rate: a ring at it makes the capture path exact sample for sample


@pytest.fixture(scope="module")
def model(model_dir):
    net = load_model(model_dir)
    return net, load_stats(net)


def wait_until(condition, timeout=120.0, what="condition"):
    """A generous timeout: on a shared 2-core machine a model's first passes can take long."""
    began = time.perf_counter()
    while not condition():
        assert time.perf_counter() - began < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- the math -------------------------------------------------------------------------------

def test_the_next_bar_line_of_the_heard_loop():
    # a 2-bar loop of 4 s: bar lines at 0 and 2 s
    assert seconds_to_next_bar(0.0, 4.0, 2) == 0.0
    assert seconds_to_next_bar(0.25, 4.0, 2) == pytest.approx(1.0)
    assert seconds_to_next_bar(0.5, 4.0, 2) == pytest.approx(0.0)
    assert seconds_to_next_bar(0.51, 4.0, 2) == pytest.approx(1.96)
    assert seconds_to_next_bar(0.99, 4.0, 2) == pytest.approx(0.04)
    assert seconds_to_next_bar(0.3, 4.0, 1) == pytest.approx(2.8)
    assert seconds_to_next_bar(0.3, 0.0, 2) == 0.0  # nothing heard yet: at once


def test_the_listen_window_is_drawn_one_delay_behind_the_newest_input():
    # a 4-s window ending at t = 10 s, drawn 0.2 s behind: at t = 10.2 the newest frame
    assert window_fraction(10.2, 10.0, 4.0, 0.2) == pytest.approx(1.0 - 0.5 / 64)
    assert window_fraction(9.2, 10.0, 4.0, 0.2) == pytest.approx(0.75)
    assert window_fraction(5.0, 10.0, 4.0, 0.2) == 0.0


def test_listen_refreshes_16_times_a_loop_within_4_to_12_a_second():
    assert refresh_period(4.0) == pytest.approx(0.25)  # 2 bars at 120 BPM: a sample waits at most 1/16 loop
    assert refresh_period(1.875) == pytest.approx(1.875 / 16)  # 1 bar at 128 BPM
    assert refresh_period(32.0) == pytest.approx(0.25)  # long loops: still 4 a second
    assert refresh_period(1.2) == pytest.approx(1 / 12)  # short loops: at most 12 a second


# -- listening ------------------------------------------------------------------------------

def listen_params(**changes):
    return REGISTRY.defaults().replace(listen=True, **changes)


def test_listen_activations_follow_the_input(model):
    net, stats = model
    params = listen_params(bars=1)  # a 2-s window
    window = loop_length(params, RATE)
    groove = render_loop("groove", sample_rate=RATE, seed=0)[:window]
    sound_in = SoundIn.from_file(np.concatenate([np.zeros(window, np.float32), groove, groove]),
                                 sample_rate=RATE, realtime=False, start=False)
    ear = ListenEngine(sound_in, lambda: model, lambda: params)
    sound_in.source.pump(window)
    silent = ear.refresh(params)
    sound_in.source.pump(window)
    music = ear.refresh(params)
    sound_in.source.pump(window)
    again = ear.refresh(params)
    assert silent.activations.shape == music.activations.shape == (sum(t.neurons for t in net.taps), 64)
    assert music.serial == silent.serial + 1 and music.end == 2 * window
    changed = np.abs(music.activations.astype(np.float32) - silent.activations.astype(np.float32)).mean()
    repeat = np.abs(again.activations.astype(np.float32) - music.activations.astype(np.float32)).mean()
    assert changed > 0.05  # the network hears the groove come in
    assert repeat < 0.1 * changed  # and the same groove again looks the same


def test_the_listen_thread_refreshes_while_on_and_rests_when_off(model):
    params = {"value": listen_params(bars=1)}
    with SoundIn.from_file(render_loop("groove", sample_rate=RATE, seed=0), sample_rate=RATE) as sound_in:
        ear = ListenEngine(sound_in, lambda: model, lambda: params["value"], rate_hz=8.0)
        ear.start()
        try:
            wait_until(lambda: ear.latest() is not None, what="a first window")
            first = ear.latest()
            wait_until(lambda: ear.latest().serial >= first.serial + 2, what="more windows")
            newest = ear.latest()
            assert newest.end > first.end  # each refresh hears newer input
            assert newest.period == pytest.approx(1 / 8)  # asked for 8 a second
            params["value"] = params["value"].replace(listen=False)
            time.sleep(1.0)  # a window in flight is published
            resting = ear.latest().serial
            time.sleep(1.0)
            assert ear.latest().serial == resting and ear.error is None
        finally:
            ear.stop()


# -- capture --------------------------------------------------------------------------------

def test_capture_takes_the_input_that_ends_on_the_requested_moment(model):
    ring = InputRing(RATE, seconds=8.0, channels=1)
    signal = np.arange(3 * RATE, dtype=np.float32) / (3 * RATE)  # a ramp: every sample says where it is
    t0 = time.perf_counter()
    for k in range(30):  # 3 s in 0.1-s blocks, each heard 0.1 s after the last
        ring.write(signal[k * 1600:(k + 1) * 1600], t=t0 - 3.0 + 0.1 * (k + 1))

    class Source:  # the ring alone: a SoundIn needs nothing more of its source
        def __init__(self):
            self.ring = ring

        def close(self):
            pass

    sound_in = SoundIn(Source(), "ramp", "test")
    ear = ListenEngine(sound_in, lambda: model, lambda: REGISTRY.defaults())
    got = []
    ear.capture(t0 - 1.0, 1.0, got.append)  # the second that ended one second ago
    ear.start()
    try:
        wait_until(lambda: got, what="the capture")
    finally:
        ear.stop()
    assert np.array_equal(got[0], signal[RATE:2 * RATE]) and ear.pending == 0


def test_a_capture_from_an_input_that_went_quiet_is_dropped_with_a_warning(model, caplog):
    ring = InputRing(RATE, seconds=8.0, channels=1)
    now = time.perf_counter()
    ring.write(np.zeros(RATE, np.float32), t=now - 10.0)  # the input's last block came 10 s ago

    class Source:
        def __init__(self):
            self.ring = ring

        def close(self):
            pass

    ear = ListenEngine(SoundIn(Source(), "dead input", "test"), lambda: model, lambda: REGISTRY.defaults())
    got = []
    ear.capture(now - 5.0, 1.0, got.append)  # heard 5 s ago, never written
    ear._serve_captures(now)
    assert got == [] and ear.pending == 0
    assert any("input stopped" in r.getMessage() for r in caplog.records)


def test_capture_on_the_bar_becomes_the_start_clip_or_the_blend_clip(model_dir):
    ctx = offscreen_context()
    clock = OfflineClock()
    groove = render_loop("groove", sample_rate=RATE, seed=0)
    sound_in = SoundIn.from_file(groove, sample_rate=RATE)
    perf = Performance(ctx, (160, 90), clock, model=str(model_dir), device="cpu", sound_in=sound_in,
                       params=REGISTRY.defaults().replace(bpm=200.0, bars=1, capture_bars=1))
    try:
        perf.start()
        wait_until(lambda: perf.engine.latest() is not None, what="a dreamed clip")
        bar = 4 * 60.0 / 200.0  # 1.2 s: a one-bar loop
        while clock.position().serial < 0:  # the dream thread offers its first clip to the player
            clock.advance(0.01)
            time.sleep(0.01)
        clock.advance(0.3 * bar)
        heard = clock.position()
        assert heard.loop_seconds == pytest.approx(bar, abs=1e-3) and 0.2 < heard.fraction < 0.9
        asked = time.perf_counter()
        assert perf.controls.act("capture") is True
        answered = time.perf_counter()
        request = perf.listening._captures[0]
        ahead = (1.0 - heard.fraction) * bar
        assert asked + ahead <= request.end_time <= answered + ahead  # on the next bar line
        assert request.seconds == pytest.approx(bar)
        wait_until(lambda: perf.last_capture is not None, what="the capture on the bar")
        assert time.perf_counter() >= request.end_time
        captured = perf.last_capture
        assert len(captured) == loop_length({"bpm": 200.0, "bars": 1}, RATE) and np.abs(captured).max() > 0.05
        dreamer = perf.engine.dreamer
        wait_until(lambda: np.array_equal(dreamer.start.numpy(), captured), what="the captured start clip")
        assert perf.start_name == "captured"

        # capture_to = mix: the clip mix_original blends in changes, the loop dreams on
        assert perf.set("capture_to", "mix") and perf.set("mix_original", 0.5)
        perf.frame(0.0)
        assert perf.controls.act("capture") is True
        wait_until(lambda: perf.last_capture is not captured, what="the second capture")
        blended = perf.last_capture
        wait_until(lambda: np.array_equal(perf.engine.dreamer.start.numpy(), blended), what="the blend clip")
        assert perf.start_name == "captured"
    finally:
        perf.close()
        ctx.release()


def test_a_blend_clip_is_what_mix_original_blends_in_while_the_loop_dreams_on(model):
    net, stats = model
    samples = loop_length({"bpm": 120.0, "bars": 1}, RATE)
    dreamer = Dreamer(net, stats, np.zeros(samples, np.float32), copies=2)
    dreamer.select(Region(0, (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)))
    before = dreamer.loop.clone()
    clip = 0.5 * render_loop("groove", sample_rate=RATE, seed=0)[:samples // 2]  # half a loop: looped to fit
    dreamer.set_blend(clip)
    assert torch.equal(dreamer.loop, before)  # unlike a start clip, the loop is not reset
    assert np.array_equal(dreamer.start.numpy(), np.tile(clip, 2)[:samples])
    dreamer.step(REGISTRY.defaults().replace(mix_original=1.0, gradient_noise=0.0))
    assert np.allclose(dreamer.loop.numpy(), dreamer.start.numpy(), atol=1e-6)  # mix 1: all blend clip


def test_capture_without_sound_in_is_refused_in_one_line(model_dir):
    ctx = offscreen_context()
    perf = Performance(ctx, (160, 90), OfflineClock(), model=str(model_dir), device="cpu")
    try:
        assert perf.controls.act("capture") is False
        assert "--input" in perf.controls.last_error and "\n" not in perf.controls.last_error
    finally:
        perf.close()
        ctx.release()


# -- listen mode in the performance ---------------------------------------------------------

def test_listen_mode_draws_the_response_to_the_room_and_hands_back(model_dir):
    ctx = offscreen_context()
    clock = OfflineClock()
    sound_in = SoundIn.from_file(render_loop("groove", sample_rate=RATE, seed=0), sample_rate=RATE)
    perf = Performance(ctx, (320, 180), clock, model=str(model_dir), device="cpu", sound_in=sound_in,
                       params=REGISTRY.defaults().replace(bars=1))
    target = ctx.simple_framebuffer((320, 180))
    try:
        perf.start()
        wait_until(lambda: perf.engine.latest() is not None, what="a dreamed clip")
        assert perf.controls.set("listen", True)
        wait_until(lambda: perf.listening.latest() is not None, what="a listen window")
        seen = set()
        began = time.perf_counter()
        while len(seen) < 2:  # new windows reach the map while the performance runs
            assert time.perf_counter() - began < 120, "no second listen window reached the map"
            clock.advance(0.1)
            perf.frame(0.1, target=target)
            assert perf.listen_shown is not None
            seen.add(perf.listen_shown.serial)
            time.sleep(0.05)
        assert perf.renderer.read_image().max() > 20  # and it glows
        fraction = perf.listen_shown.fraction_at()
        assert 0.0 < fraction < 1.0
        overlay_draws_the_sound_in_group(perf, ctx, target)
        assert perf.controls.set("listen", False)
        clock.advance(0.1)
        perf.frame(0.1, target=target)
        assert perf.listen_shown is None and perf.heard.serial >= 1  # the dreamed loop is drawn again
    finally:
        target.release()
        perf.close()
        ctx.release()


def overlay_draws_the_sound_in_group(perf, ctx, target):
    import imgui
    from moderngl_window.integrations.imgui import ModernGLRenderer

    from immersions.performance.gui import Overlay

    context = imgui.create_context()
    imgui.get_io().ini_file_name = None
    gui = Overlay(ctx, ModernGLRenderer(ctx=ctx, display_size=target.size))
    try:
        before = target.read(components=3)
        target.use()
        gui.draw(perf, 0.1)
        assert target.read(components=3) != before  # the panel, with its Sound in group, is drawn
    finally:
        gui.release()
        imgui.destroy_context(context)


# -- the controls ---------------------------------------------------------------------------

def test_osc_and_a_midi_map_reach_listen_and_capture(model_dir):
    from pythonosc.udp_client import SimpleUDPClient

    from immersions.control.midi import MidiMap
    from immersions.control.osc import OscServer

    midi_map = MidiMap.from_doc({"name": "room", "channel": 1, "control": [
        {"cc": 60, "action": "capture", "kind": "button"},
        {"cc": 33, "parameter": "listen", "kind": "switch"}]})
    assert [b.target for b in midi_map.controls] == ["capture", "listen"]

    ctx = offscreen_context()
    sound_in = SoundIn.from_file(render_loop("groove", sample_rate=RATE, seed=0), sample_rate=RATE)
    perf = Performance(ctx, (160, 90), OfflineClock(), model=str(model_dir), device="cpu", sound_in=sound_in)
    try:
        with OscServer(perf.controls, 0) as server:
            remote = SimpleUDPClient(*server.address)
            remote.send_message("/immersions/listen", 1)
            remote.send_message("/immersions/capture_bars", 1.0)
            remote.send_message("/immersions/action/capture", [])
            wait_until(lambda: server.received >= 3, what="the OSC messages")
        perf.frame(0.0)  # the hub applies what the controls asked for, on the main thread
        assert perf.params["listen"] is True and perf.params["capture_bars"] == 1
        assert perf.listening.pending == 1 or perf.listening.captured == 1
        assert perf.controls.rejected == 0
    finally:
        perf.close()
        ctx.release()


@pytest.mark.parametrize("map_name", ["bcf2000", "generic8"])
def test_a_shipped_midi_map_turns_listen_on_and_captures_through_the_performance(model_dir, map_name):
    """The shipped maps' listen switch and capture button, pressed as real mido messages, reach
    the performance through the MidiController and the control hub, as in `perform --midi`."""
    from test_midi import Device, Studio

    from immersions.control.midi import MidiController, MidiMap

    midi_map = MidiMap.named(map_name)
    (listen,) = midi_map.bound_to("listen")
    (capture,) = [b for b in midi_map.controls if b.action == "capture"]
    assert capture.kind == "button" and listen.kind == "switch"
    device = Device(f"{midi_map.port} MIDI 1")
    ctx = offscreen_context()
    sound_in = SoundIn.from_file(render_loop("groove", sample_rate=RATE, seed=0), sample_rate=RATE)
    perf = Performance(ctx, (160, 90), OfflineClock(), model=str(model_dir), device="cpu", sound_in=sound_in,
                       params=REGISTRY.defaults().replace(capture_bars=1))
    midi = MidiController(perf.controls, midi_map, backend=Studio(device).ports())
    try:
        assert midi.connected
        for b in (listen, capture):
            device.cc(b.cc, 127, b.channel or midi_map.channel)
            if b.momentary or b.kind == "button":  # momentary buttons send their release at once
                device.cc(b.cc, 0, b.channel or midi_map.channel)
        midi.poll(0.0)
        perf.frame(0.0)  # the hub applies what MIDI asked for, on the main thread
        assert perf.params["listen"] is True
        assert perf.listening.pending == 1 or perf.listening.captured == 1  # one capture, waiting for the bar
        assert perf.controls.rejected == 0 and perf.last_error in (None, "")
        if not listen.momentary:  # a latching switch: its release turns listen off again
            device.cc(listen.cc, 0, listen.channel or midi_map.channel)
        else:
            device.cc(listen.cc, 127, listen.channel or midi_map.channel)
            device.cc(listen.cc, 0, listen.channel or midi_map.channel)
        midi.poll(0.1)
        perf.frame(0.0)
        assert perf.params["listen"] is False
    finally:
        midi.close()
        perf.close()
        ctx.release()
