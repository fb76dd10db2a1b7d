import logging
import math
import sys
import time
import tracemalloc

import numpy as np
import pytest

from immersions.audio.mixing import LIMIT_THRESHOLD, equal_power_gains, loop_max_jump, resample_loop, soft_limit
from immersions.devices.player import LoopPlayer, LoopRenderer
from immersions.devices.shell import list_devices
from immersions.errors import ImmersionsError

import helpers
from helpers import heard_clip

SR = 8000


def clip(serial, samples, sample_rate=SR):
    return heard_clip(serial, samples, sample_rate)


def tone(freq, n, sample_rate=SR, **shape):
    return helpers.tone(freq, n, sample_rate, **shape)


def play(renderer, frames, block):
    """Render `frames` frames in blocks; the left channel (checking the right is the same)."""
    out = []
    while frames > 0:
        b = renderer.render(min(block, frames))
        assert np.array_equal(b[:, 0], b[:, 1])
        out.append(b[:, 0].copy())
        frames -= len(b)
    return np.concatenate(out)


# -- the math ---------------------------------------------------------------------------------

def test_equal_power_gains_keep_power_and_run_from_old_to_new():
    fade_out, fade_in = equal_power_gains(480)
    assert fade_out.dtype == np.float32 and fade_out.shape == fade_in.shape == (480,)
    np.testing.assert_allclose(fade_out**2 + fade_in**2, 1.0, atol=1e-6)
    assert np.all(np.diff(fade_out) < 0) and np.all(np.diff(fade_in) > 0)
    assert fade_out[0] == 1.0 and fade_in[0] == 0.0  # the switch sample is the old loop's own
    assert fade_in[-1] == pytest.approx(math.sin(math.pi / 2 * 479 / 480)) and fade_in[-1] > 0.9999
    assert equal_power_gains(1) == (np.float32(1.0), np.float32(0.0))
    np.testing.assert_allclose(fade_in[240], math.sqrt(0.5), atol=1e-6)  # -3 dB each at the middle


def test_soft_limit_is_identity_below_the_threshold_and_never_reaches_past_one():
    x = np.linspace(-6, 6, 240001, dtype=np.float32)
    y = soft_limit(x)
    assert np.abs(y).max() <= 1.0
    below = np.abs(x) <= LIMIT_THRESHOLD
    assert np.array_equal(y[below], x[below])
    assert np.all(np.diff(y) >= 0)  # monotonic: never folds back
    fine = np.linspace(-6, 6, 240001)  # float64 for the derivatives
    dx = fine[1] - fine[0]
    slope = np.diff(soft_limit(fine)) / dx
    assert slope.max() <= 1.0 + 1e-9  # continuous with slope at most 1: it never adds a jump
    knee = np.searchsorted(fine, LIMIT_THRESHOLD)
    assert slope[knee - 5] == pytest.approx(1.0, abs=1e-3) and slope[knee + 5] == pytest.approx(1.0, abs=1e-3)
    assert np.abs(np.diff(slope)).max() < 1e-2  # the first derivative is continuous too
    # in place, with scratch: writes into the given buffers and returns `out`
    buf, scratch = x.copy(), (np.empty_like(x), np.empty_like(x))
    assert soft_limit(buf, out=buf, scratch=scratch) is buf
    assert np.array_equal(buf, y)


def test_resampled_loop_keeps_pitch_length_and_a_clean_seam():
    a = tone(440, 16000, 16000)  # one second, 440 whole cycles: a perfect loop
    up = resample_loop(a, 16000, 48000)
    assert up.dtype == np.float32 and len(up) == 48000
    spectrum = np.abs(np.fft.rfft(up))
    assert np.argmax(spectrum) == 440  # bins are 1 Hz apart for a one-second loop
    inner = np.abs(np.diff(up)).max()
    assert abs(up[0] - up[-1]) <= 1.01 * inner  # no click where the loop wraps
    assert loop_max_jump(up) == pytest.approx(inner, rel=0.01)
    assert len(resample_loop(a, 16000, 44100)) == 44100
    down = resample_loop(tone(440, 48000, 48000), 48000, 16000)
    assert len(down) == 16000 and abs(down[0] - down[-1]) <= 1.01 * np.abs(np.diff(down)).max()


# -- the renderer: switching, crossfade, volume -------------------------------------------------

@pytest.mark.parametrize("block", [100, 128, 1])
def test_switches_only_at_the_loop_boundary_with_an_equal_power_crossfade(block):
    a, b = tone(40, 1000), tone(72, 1200, phase=1.0)
    r = LoopRenderer(SR, volume=1.0, crossfade=0.01)  # 80-sample crossfade
    r.offer(clip(1, a))
    first = play(r, 384, block)  # a fades in from silence, then plays
    r.offer(clip(2, b))  # mid-loop: must wait for the end of a
    rest = play(r, 3000 - 384, block)
    y = np.concatenate([first, rest])
    fade_out, fade_in = equal_power_gains(80)
    expected = np.concatenate([a, b, b])[:3000].copy()
    expected[:80] = a[:80] * fade_in
    expected[1000:1080] = b[:80] * fade_in + a[:80] * fade_out  # the old loop wraps round to its own start
    np.testing.assert_allclose(y, expected, atol=2e-6)
    assert y[1000] == pytest.approx(a[0], abs=1e-7)  # the switch sample is still a's
    assert r.switches == 1
    h = r.playhead_at(999)
    assert h.serial == 1 and h.fraction == pytest.approx(0.999) and h.loop_seconds == pytest.approx(0.125)
    h = r.playhead_at(1000)
    assert h.serial == 2 and h.fraction == 0.0 and h.frame.serial == 2
    assert r.playhead_at(1000 + 1200 + 600).fraction == pytest.approx(0.5)
    assert r.playhead_at(-1).serial == -1


def test_only_the_newest_offer_plays_and_a_repeat_is_ignored():
    r = LoopRenderer(SR, volume=1.0, crossfade=0.005)
    r.offer(clip(1, tone(40, 500)))
    play(r, 100, 64)
    for serial in (2, 3, 4):
        r.offer(clip(serial, tone(40 * serial, 400)))
    assert r.offer(clip(4, tone(8, 400))) is None  # same serial again: nothing to do
    play(r, 1000, 64)
    assert r.switches == 1
    assert r.playhead_at(500).serial == 4 and r.playhead_at(499).serial == 1


def test_no_click_at_a_switch_between_loops_of_different_phase():
    a, b = tone(96, 1000), tone(96, 1000, phase=np.pi / 2)  # 12 whole cycles each, a quarter turn apart
    assert abs(b[0] - a[-1]) > 10 * loop_max_jump(a)  # a hard cut would click
    r = LoopRenderer(SR, volume=1.0, crossfade=0.02)
    r.offer(clip(1, a))
    play(r, 600, 160)
    r.offer(clip(2, b))
    y = play(r, 1600, 160)
    assert r.switches == 1
    assert r.max_clip_jump == pytest.approx(max(loop_max_jump(a), loop_max_jump(b)))
    assert r.max_switch_jump <= r.max_clip_jump
    assert r.max_crossfade_jump <= math.sqrt(2) * r.max_clip_jump * 1.01
    assert np.abs(np.diff(y)).max() <= math.sqrt(2) * r.max_clip_jump * 1.01


def test_a_clip_at_the_model_rate_plays_at_the_device_rate():
    r = LoopRenderer(48000, volume=1.0)
    r.offer(clip(1, tone(440, 16000, 16000), 16000))
    y = play(r, 96000, 480)[48000:]  # the second pass of the loop
    assert np.argmax(np.abs(np.fft.rfft(y))) == 440
    assert r.playhead_at(48000 + 24000).loop_seconds == pytest.approx(1.0)
    assert r.playhead_at(48000 + 24000).fraction == pytest.approx(0.5)


def test_volume_ramps_without_a_jump_and_the_limiter_holds_the_peak():
    r = LoopRenderer(SR, volume=1.0)
    r.offer(clip(1, np.full(800, 0.5)))
    play(r, 800, 100)  # past the fade-in
    r.set_volume(0.5)
    y = play(r, 200, 100)
    np.testing.assert_allclose(y[:100], 0.5 * np.linspace(1.0, 0.5, 101)[1:], atol=1e-6)  # ramped over a block
    np.testing.assert_allclose(y[100:], 0.25, atol=1e-7)
    r.set_volume(1.5)
    r.offer(clip(2, tone(96, 800, amplitude=1.0)))
    y = play(r, 2400, 100)
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.95


def test_bad_volume_or_crossfade_is_rejected_and_the_old_value_stays():
    r = LoopRenderer(SR)
    assert r.volume == 0.8 and r.crossfade == 0.05  # the registry's defaults
    for bad in (2.0, -0.1, float("nan"), "loud"):
        with pytest.raises(ImmersionsError, match="volume"):
            r.set_volume(bad)
    assert r.volume == 0.8
    with pytest.raises(ImmersionsError, match="crossfade"):
        r.set_crossfade(5.0)
    assert r.crossfade == 0.05
    r.set_volume(1.2)
    r.set_crossfade(0.5)
    assert r.volume == 1.2 and r.crossfade == 0.5
    with pytest.raises(ImmersionsError, match="volume"):
        LoopRenderer(SR, volume=9)


def test_bad_clips_are_refused_with_a_reason():
    r = LoopRenderer(SR)
    with pytest.raises(ImmersionsError, match="DreamFrame"):
        r.offer(object())
    with pytest.raises(ImmersionsError, match="mono"):
        r.offer(clip(1, np.zeros((2, 800))))
    with pytest.raises(ImmersionsError, match="too short"):
        r.offer(clip(1, np.zeros(4)))
    r.offer(clip(2, np.full(800, np.nan)))  # a NaN never reaches the speaker
    assert np.all(np.isfinite(play(r, 1000, 100)))


def test_rendering_a_block_allocates_no_buffers():
    """Both outputs' callbacks: the player's (two decks, switches on both, the crossfader thrown
    by hand and faded, the cue ring written) and the cue output's (reading the ring)."""
    from immersions.devices.cue import CueOutput

    r = LoopRenderer(SR, volume=0.7, crossfade=0.1)
    cue = CueOutput(r, "null", "null", SR)  # a real cue output; its callback is called by hand below
    cue.close()
    r.cue = cue.ring
    r.offer(clip(1, tone(40, 3000)))
    r.offer(clip(11, tone(60, 3500)), deck=1)
    r.render(4096)
    cue._callback(2048)
    r.offer(clip(2, tone(72, 5000)))
    r.offer(clip(12, tone(90, 5000)), deck=1)
    positions = iter([0.3, 1.0, 0.0, 0.6, 0.0, 1.0, 0.5, 0.2, 0.9, 0.4])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(20):  # switches, crossfades, volume ramps, wraps, fader moves, a fade: all in here
            r.set_volume(0.5 if r.volume == 0.7 else 0.7)
            if i < 10:
                r.set_crossfader(next(positions))
            elif i == 10:
                r.fade_to(1.0, 1, 0.5)
            r.render(4096)
            cue._callback(2048)
            cue._callback(2048)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.decks[0].switches == 1 and r.decks[1].switches == 1 and r.fader == 1.0
    assert cue.ring.read > 0 and cue.ring.underruns == 0
    assert peak - before < 4096 * 4  # one block of float32 would be 16 kB


# -- the device shell ------------------------------------------------------------------------------

def test_without_a_device_it_falls_back_to_null_and_plays(caplog):
    caplog.set_level(logging.INFO)
    interval = sys.getswitchinterval()
    # webaudio exists only in browsers: on this machine opening it fails, just as a missing card does
    with LoopPlayer(backend="webaudio", buffer_ms=30, periods=3) as player:
        assert sys.getswitchinterval() <= 0.001  # the callback waits less for the GIL while playing
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "NULL backend" in warnings[0].getMessage()
        assert "\n" not in warnings[0].getMessage()
        assert player.fallback and player.backend == "Null" and player.sample_rate > 0
        player.offer(clip(7, tone(440, 16000, 16000), 16000))
        time.sleep(0.5)
        first = player.position()
        stats = player.stats()
        assert stats.callbacks >= 20 and stats.faults == 0
        assert first.serial == 7 and first.loop_seconds == pytest.approx(1.0)
        assert 0.2 < first.seconds < 0.7
        time.sleep(0.1)
        assert player.position().seconds == pytest.approx(first.seconds + 0.1, abs=0.03)
        t = time.perf_counter()  # extrapolated between callbacks: smooth at display rate
        assert player.position(t + 0.004).seconds - player.position(t).seconds == pytest.approx(0.004, abs=1e-6)
    callbacks = player.stats().callbacks
    player.close()  # twice is fine
    assert sys.getswitchinterval() == interval
    time.sleep(0.05)
    assert player.stats().callbacks == callbacks  # stopped
    assert player.renderer.render(16)[:, 0].max() == 0.0  # faded out for good


def test_a_stalled_callback_counts_as_late_and_as_an_underrun_and_a_failing_one_plays_silence(caplog):
    with LoopPlayer(backend="null", buffer_ms=30, periods=3) as player:  # 3 x 10 ms: dry after 20 ms late
        player.offer(clip(1, tone(96, 4000)))
        render = player.renderer.render
        stalls = []

        def stalling(n):  # the real renderer, made slow once: as if the dream thread hogged the CPU
            if not stalls:
                stalls.append(n)
                time.sleep(0.06)
            return render(n)

        player.renderer.render = stalling
        time.sleep(0.3)
        stats = player.stats()
        assert stalls and stats.late_callbacks >= 1 and stats.underruns >= 1 and stats.max_render_ms >= 50

        def failing(n):
            raise RuntimeError("boom")

        player.renderer.render = failing
        time.sleep(0.1)
        assert player.stats().faults >= 3
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "boom" in errors[0]  # said once, outside the callback
        player.renderer.render = render


def test_default_device_opens_or_falls_back(caplog):
    with LoopPlayer() as player:  # on a machine without a sound card: NULL, with one warning
        assert player.sample_rate > 0
        if player.fallback:
            assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1


def test_devices_are_listed_and_chosen_by_index_or_name():
    assert list_devices("null") == ["NULL Playback Device"]
    assert isinstance(list_devices(), list)
    with LoopPlayer(device="null playback", backend="null") as player:
        assert player.device_name == "NULL Playback Device" and not player.fallback
    with LoopPlayer(device=0, backend="null", sample_rate=44100) as player:
        assert player.sample_rate == 44100
    with pytest.raises(ImmersionsError, match="NULL Playback Device"):
        LoopPlayer(device="studio monitors", backend="null")
    with pytest.raises(ImmersionsError, match="unknown audio backend"):
        LoopPlayer(backend="gramophone")
    with pytest.raises(ImmersionsError, match="audio buffer"):
        LoopPlayer(backend="null", buffer_ms=5000)
    with pytest.raises(ImmersionsError, match="periods"):
        LoopPlayer(backend="null", periods=1)


@pytest.mark.slow
def test_bench_audio_reports_counters_while_dreaming():
    from immersions.bench.audio import bench_audio

    doc = bench_audio(4)
    assert doc["benchmark"] == "audio" and doc["backend"] == "Null"
    assert doc["callbacks"] > 0.8 * doc["expected_callbacks"]
    assert doc["faults"] == 0 and doc["late_callbacks"] >= 0 and doc["underruns"] >= 0
    assert doc["click_free"] == (doc["max_switch_jump"] <= doc["max_clip_jump"])
