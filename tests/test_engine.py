import time

import numpy as np
import pytest
import torch

from immersions.dream.engine import DreamEngine
from immersions.frames import FRAMES_PER_LOOP, HUD_BINS, HUD_FRAMES
from immersions.dream.loop import start_clip
from immersions.selection import Region
from immersions.errors import ImmersionsError
from immersions.model import CPC, preset

from helpers import wait_for

SR = 16000


def test_frames_arrive_with_everything_the_visuals_need(micro):
    with DreamEngine(micro, None, start_clip("noise", 64000, SR)) as engine:
        assert engine.latest() is None  # nothing selected yet: nothing dreamed
        engine.select(Region(3, (0.0, 0.5), (0.5, 0.2)))
        assert wait_for(lambda: engine.latest() is not None and engine.latest().serial >= 2)
        frame = engine.latest()
    assert frame.clip.dtype == np.float32 and frame.clip.shape == (64000,) and frame.sample_rate == SR
    assert frame.activations.dtype == np.float16
    assert frame.activations.shape == (micro.graph_nodes, FRAMES_PER_LOOP)
    assert frame.scalogram.shape == (HUD_BINS, HUD_FRAMES) and frame.scalogram.dtype == np.uint8
    # the selection mask marks exactly the selected neurons of tap 3, in node order
    tap = micro.taps[3]
    offset = micro.node_offsets[3]
    selected = np.flatnonzero(frame.selection)
    assert selected.min() >= offset and selected.max() < offset + tap.neurons
    channels = set((selected - offset) // tap.pitches)
    assert channels == {0, 1, 2}  # 0.5 span of 4 channels -> 3 channels from 0
    assert frame.steps_per_second > 0 and np.isfinite(frame.objective)


def test_bad_values_are_rejected_and_the_engine_runs_on(micro):
    with DreamEngine(micro, None, start_clip("noise", 16000, SR)) as engine:
        engine.select(Region(2))
        assert engine.update(learning_rate=-1.5)
        assert not engine.update(learning_rate=42.0)
        assert not engine.update(time_jitter=float("nan"), mask_time=0.2)  # all or nothing
        assert engine.params["learning_rate"] == -1.5 and engine.params["mask_time"] == 0.1
        assert engine.rejected == 2
        serial = engine.latest().serial if wait_for(lambda: engine.latest() is not None) else 0
        assert wait_for(lambda: engine.latest().serial > serial + 1)  # still dreaming
    with pytest.raises(ImmersionsError, match="outside 0 .. 1"):
        engine.select(Region(2, (1.5, 0.0)))
    with pytest.raises(ImmersionsError, match="no tap 99"):
        engine.select(Region(99))


def test_pause_resume_stop(micro):
    engine = DreamEngine(micro, None, start_clip("noise", 16000, SR))
    engine.start()
    engine.select(Region(2))
    assert wait_for(lambda: engine.latest() is not None)
    engine.pause()
    time.sleep(0.5)  # let a step in flight finish
    frozen = engine.latest().serial
    time.sleep(0.5)
    assert engine.paused and engine.latest().serial == frozen
    engine.resume()
    assert wait_for(lambda: engine.latest().serial > frozen)
    engine.stop()
    assert engine._thread is None
    stopped = engine.latest().serial
    time.sleep(0.3)
    assert engine.latest().serial == stopped


def test_switch_model_and_start_clip_without_restarting(micro):
    torch.manual_seed(1)
    other = CPC(preset("micro")).eval()
    with DreamEngine(micro, None, start_clip("noise", 16000, SR)) as engine:
        engine.select(Region(4, (0.5, 0.5)))
        assert wait_for(lambda: engine.latest() is not None)
        engine.switch_model(other, None)
        assert wait_for(lambda: engine.dreamer.source is other)
        serial = engine.latest().serial
        assert wait_for(lambda: engine.latest().serial > serial + 1)
        engine.set_start(np.zeros(16000, np.float32))
        assert wait_for(lambda: float(engine.dreamer.start.abs().max()) == 0.0)


def test_a_tempo_change_refits_the_loop_length(micro):
    with DreamEngine(micro, None, start_clip("noise", 64000, SR)) as engine:
        engine.select(Region(2))
        assert wait_for(lambda: engine.latest() is not None)
        assert engine.latest().clip.shape == (64000,)  # 2 bars at 120 BPM
        engine.update(bpm=128.0, bars=1)
        assert wait_for(lambda: engine.latest().clip.shape == (30000,))  # 1 bar at 128 BPM
        assert engine.dreamer.start.shape == (30000,)


def test_frames_come_at_once_after_a_command_then_at_most_every_publish_interval(micro, monkeypatch):
    """A frame costs a forward pass, so between commands the engine publishes at most every
    PUBLISH_EVERY_S while it steps as fast as it can; a command (here a new selection) gets
    a frame after the very next step; a pause publishes the loop it holds."""
    import immersions.dream.engine as E

    monkeypatch.setattr(E, "PUBLISH_EVERY_S", 0.6)
    frames, came = [], []

    def arrived(frame):
        frames.append(frame)
        came.append(time.perf_counter())

    engine = DreamEngine(micro, None, start_clip("noise", 16000, SR), on_frame=arrived)
    with engine:
        engine.select(Region(2))
        assert wait_for(lambda: len(frames) >= 1)
        # however loaded the machine, the steps run ahead of the frames: between commands a frame
        # comes at most every PUBLISH_EVERY_S (the steps it skips are counted, not timed)
        assert wait_for(lambda: len(frames) >= 3 and engine.dreamer.steps > frames[-1].step + 2, timeout=120)
        seen = list(frames)
        assert seen[0].step <= 2  # after the selection's first step (or the one in flight)
        assert all(b.step > a.step for a, b in zip(seen, seen[1:]))
        gaps = [b - a for a, b in zip(came[1:len(seen)], came[2:len(seen)])]
        assert min(gaps) >= 0.6 * 0.9, gaps  # never two frames within the interval without a command
        monkeypatch.setattr(E, "PUBLISH_EVERY_S", 60.0)  # from now on only a command brings a frame
        time.sleep(0.3)
        before = frames[-1]
        engine.select(Region(3))
        assert wait_for(lambda: frames[-1].serial > before.serial, timeout=5.0)
        assert not np.array_equal(frames[-1].selection, before.selection)
        engine.pause()
        time.sleep(0.5)
        assert frames[-1].step == engine.dreamer.steps  # the frame shows the loop that is held



def test_a_selection_for_the_ear_switched_to_is_checked_against_it_before_the_dream_thread_takes_it(micro):
    """`perform` switches (M, MIDI, OSC) and at once selects a region of the new ear: the region is
    checked against the ear asked for, not the one the dream thread still holds."""
    from helpers import REPO
    from immersions.model.checkpoint import load_model

    wave = load_model(REPO / "docs" / "examples" / "waveform_ear" / "ear.py")  # 5 taps, micro has 25
    last = len(micro.taps) - 1
    assert len(wave.taps) <= last
    engine = DreamEngine(wave, None, start_clip("noise", 16000, SR))  # not started: no command is taken
    engine.switch_model(micro, None)
    engine.select(Region(last), keep=False)  # a tap the waveform ear lacks
    assert len(engine.dreamer.model.taps) == len(wave.taps) and engine.model is micro  # still dreaming on wave
    engine.switch_model(wave, None)
    with pytest.raises(ImmersionsError, match=f"no tap {last}"):
        engine.select(Region(last))
