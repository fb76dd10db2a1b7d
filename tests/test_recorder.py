import json
import logging
import re
import subprocess
import sys
import time
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest

from immersions.audio.io import load_audio
from immersions.devices.player import RETRY_S, STALL_S, LoopPlayer, LoopRenderer
from immersions.devices.recorder import (FULL_SCALE, Recorder, default_recording_path, export_clip, pcm24,
                                       record)
from immersions.errors import ImmersionsError

import helpers
from helpers import heard_clip

SR = 16000
LSB = 1.0 / FULL_SCALE


def clip(serial, samples, sample_rate=SR):
    return heard_clip(serial, samples, sample_rate)


def tone(freq, n, sample_rate=SR, **shape):
    return helpers.tone(freq, n, sample_rate, **shape)


def decode24(raw: bytes, channels: int = 1) -> np.ndarray:
    """Little-endian 24-bit PCM -> float64 [frames, channels], by hand."""
    b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
    ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    return (ints / FULL_SCALE).reshape(-1, channels)


def read_wav24(path):
    """(samples [frames, channels] float64, rate) of a 24-bit WAV read with `wave`."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 3
        return decode24(w.readframes(w.getnframes()), w.getnchannels()), w.getframerate()


def test_pcm24_rounds_clips_and_interleaves():
    x = np.array([[0.0, -1.0], [1.0, 0.5], [2.0, np.nan], [-3.0, 1e-7]], np.float32)
    ints = np.rint(decode24(pcm24(x), 2) * FULL_SCALE).astype(int)
    assert ints.tolist() == [[0, -FULL_SCALE], [FULL_SCALE, round(0.5 * FULL_SCALE)], [FULL_SCALE, 0],
                             [-FULL_SCALE, 1]]


def test_recording_through_the_renderer_is_exactly_what_was_rendered(tmp_path):
    r = LoopRenderer(SR, volume=1.0, crossfade=0.02)
    r.offer(clip(1, tone(200, 4000)))
    path = tmp_path / "take.wav"
    recorder = record(r, path)
    assert r.tap is recorder and recorder.recording and recorder.path == path
    heard, block = [], 160
    for i in range(150):  # 1.5 s: a fade-in, a switch with a crossfade, volume moves, the limiter
        if i == 40:
            r.offer(clip(2, tone(300, 3200, amplitude=1.0)))  # loud: the limiter works on it
        if i % 30 == 0:
            r.set_volume(1.5 if r.volume != 1.5 else 0.3)
        heard.append(r.render(block)[:, 0].copy())
    # while recording the file is already a valid WAV holding everything drained so far
    deadline = time.monotonic() + 5
    while recorder.frames < 150 * block and time.monotonic() < deadline:
        time.sleep(0.01)
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == 150 * block
    heard.append(r.render(100)[:, 0].copy())  # one odd block at the end: the length is exact to the block
    assert r.stop_recording() is recorder and r.tap is None
    heard.append(r.render(block)[:, 0].copy())  # not recorded: the tap is off
    info = recorder.stop()
    assert recorder.stop() is info and not recorder.recording
    expected = np.concatenate(heard[:-1])
    assert info.path == path and info.frames == len(expected) == 150 * block + 100
    assert info.seconds == pytest.approx(len(expected) / SR) and info.dropped_frames == 0 and info.error is None
    assert r.switches == 1 and np.abs(expected).max() > 0.9  # the test did cross a switch and hit the limiter
    samples, rate = read_wav24(path)
    assert rate == SR and samples.shape == (len(expected), 1)
    assert np.abs(samples[:, 0] - expected).max() <= 0.5 * LSB + 1e-9  # to the last 24-bit step
    decoded = load_audio(path, SR)  # and a real decoder (miniaudio) reads the same
    assert len(decoded) == len(expected) and np.abs(decoded - expected).max() < 2e-6


def test_the_tap_allocates_no_buffers_in_the_callback(tmp_path):
    r = LoopRenderer(SR, volume=0.7, crossfade=0.1)
    r.offer(clip(1, tone(40, 3000)))
    r.render(4096)
    record(r, tmp_path / "lean.wav", lossless=False)
    r.render(4096)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(20):
            r.render(4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    info = r.stop_recording().stop()
    assert peak - before < 4096 * 4  # a block of float32 would be 16 kB
    assert info.frames == 21 * 4096 and info.dropped_frames == 0


def test_a_full_ring_drops_whole_blocks_and_never_blocks_the_callback(tmp_path):
    rec = Recorder(tmp_path / "tiny.wav", SR, seconds_buffer=0.01, drain_s=30.0).start()  # 160 frames
    time.sleep(0.05)  # the writer has drained once (nothing) and now sleeps 30 s: stalled
    blocks = [np.full((64, 2), 0.01 * (i + 1), np.float32) for i in range(50)]
    t = time.perf_counter()
    slowest = 0.0
    for b in blocks:
        s = time.perf_counter()
        rec.push(b)
        slowest = max(slowest, time.perf_counter() - s)
    assert time.perf_counter() - t < 0.05 and slowest < 0.01
    assert rec.dropped_frames == 48 * 64  # two blocks fit (128 of 160 frames), the third would not
    info = rec.stop()  # wakes the writer: it drains what the ring holds
    assert info.frames == 128 and info.dropped_frames == 48 * 64
    samples, _ = read_wav24(info.path)
    np.testing.assert_allclose(samples[:, 0], np.repeat([0.01, 0.02], 64), atol=LSB)


def test_lossless_recording_waits_for_the_writer_instead_of_dropping(tmp_path):
    r = LoopRenderer(SR, volume=1.0)
    r.offer(clip(1, tone(100, 1600)))
    rec = Recorder(tmp_path / "offline.wav", SR, seconds_buffer=0.01, lossless=True, drain_s=30.0).start()
    r.start_recording(rec)
    heard = [r.render(100)[:, 0].copy() for _ in range(40)]  # 25x the ring
    info = r.stop_recording().stop()
    assert info.dropped_frames == 0 and info.frames == 4000
    samples, _ = read_wav24(info.path)
    assert np.abs(samples[:, 0] - np.concatenate(heard)).max() <= 0.5 * LSB + 1e-9


def test_recording_a_live_player_on_the_null_backend(tmp_path):
    with LoopPlayer(backend="null", buffer_ms=30, periods=3) as player:
        player.offer(clip(3, tone(220, 16000)))
        assert not player.recording and player.stop_recording() is None
        time.sleep(0.1)
        frames = player.renderer.frames
        t = time.perf_counter()
        path = player.start_recording(folder=tmp_path)
        assert player.recording and path.parent == tmp_path
        assert re.fullmatch(r"immersions-\d{8}-\d{6}\.wav", path.name)
        with pytest.raises(ImmersionsError, match="already recording"):
            player.start_recording(folder=tmp_path)
        time.sleep(1.5)
        info = player.stop_recording()
        elapsed = time.perf_counter() - t
        rendered = player.renderer.frames - frames
        assert not player.recording and player.stop_recording() is None
        assert info.path == path and info.dropped_frames == 0 and info.error is None
        assert info.seconds == pytest.approx(elapsed, abs=0.15)
        assert info.frames <= rendered and rendered - info.frames <= 0.1 * player.sample_rate
        samples, rate = read_wav24(path)
        assert rate == player.sample_rate and len(samples) == info.frames and np.abs(samples).max() > 0.3
        # close() stops a running recording after the fade-out: the file ends in silence
        second = player.start_recording(tmp_path / "closing.wav")
        time.sleep(0.3)
    assert not player.recording
    samples, _ = read_wav24(second)
    assert len(samples) > 0.2 * rate and np.abs(samples[-16:]).max() == 0.0 and np.abs(samples).max() > 0.3


def test_an_unwritable_folder_or_an_existing_file_is_one_clear_line(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(ImmersionsError, match="cannot create the folder") as err:
        Recorder(blocker / "takes" / "a.wav", SR).start()
    assert "\n" not in str(err.value) and "not-a-folder" in str(err.value)
    with LoopPlayer(backend="null", buffer_ms=30, periods=3) as player:
        with pytest.raises(ImmersionsError, match="choose a folder"):
            player.start_recording(folder=blocker)
        assert not player.recording and player.renderer.tap is None
        callbacks = player.stats().callbacks
        time.sleep(0.05)
        assert player.stats().callbacks > callbacks  # the sound never stopped
    taken = tmp_path / "taken.wav"
    taken.write_bytes(b"precious")
    with pytest.raises(ImmersionsError, match="never overwrite"):
        Recorder(taken, SR).start()
    assert taken.read_bytes() == b"precious"
    with pytest.raises(ImmersionsError, match="Hz"):
        LoopRenderer(SR).start_recording(Recorder(tmp_path / "rate.wav", 44100))
    with pytest.raises(ImmersionsError, match="channels"):
        LoopRenderer(SR).start_recording(Recorder(tmp_path / "wide.wav", SR, channels=3))


class BrokenTap:
    """A tap whose push fails (what a recorder with a bug would do)."""

    path = Path("broken.wav")

    def __init__(self):
        self.sample_rate, self.channels, self.pushes = SR, 1, 0

    def push(self, block):
        self.pushes += 1
        raise RuntimeError("tape jam")


def test_a_failing_tap_is_taken_off_and_the_sound_goes_on(caplog):
    with LoopPlayer(backend="null", buffer_ms=30, periods=3, sample_rate=SR) as player:
        player.offer(clip(1, tone(220, 1600)))
        tap = BrokenTap()
        player.renderer.start_recording(tap)
        time.sleep(0.15)
        assert tap.pushes == 1 and player.renderer.tap is None and not player.recording
        assert player.check() and player.stats().faults == 0
        callbacks = player.stats().callbacks
        time.sleep(0.05)
        assert player.stats().callbacks > callbacks and player.stats().faults == 0  # still playing
        player.check()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "tape jam" in errors[0] and "the sound goes on" in errors[0]


def test_default_names_never_overwrite(tmp_path):
    first = default_recording_path(tmp_path)
    assert first.parent == tmp_path and re.fullmatch(r"immersions-\d{8}-\d{6}\.wav", first.name)
    first.touch()
    second = default_recording_path(tmp_path)
    if second.stem.startswith(first.stem):  # the same second: numbered
        assert second.name == f"{first.stem}-2.wav"
        second.touch()
        assert default_recording_path(tmp_path).name == f"{first.stem}-3.wav"
    assert default_recording_path().parent == Path.cwd() / "recordings"


def test_export_clip_writes_the_loop(tmp_path):
    loop = tone(330, 8000, amplitude=0.7)
    frame = clip(9, loop)
    path = export_clip(frame, folder=tmp_path)
    assert re.fullmatch(r"immersions-clip-\d{8}-\d{6}(-\d+)?\.wav", path.name) and path.parent == tmp_path
    samples, rate = read_wav24(path)
    assert rate == SR and np.abs(samples[:, 0] - loop).max() <= 0.5 * LSB + 1e-9
    again = export_clip(loop, SR, folder=tmp_path)  # a bare array with its rate
    assert again != path and again.exists() and path.exists()
    with pytest.raises(ImmersionsError, match="sample rate"):
        export_clip(loop, folder=tmp_path)
    with pytest.raises(ImmersionsError, match="mono"):
        export_clip(np.zeros((2, 100)), SR, folder=tmp_path)


FULL_DISK = """
import json, logging, resource, signal, sys, time
from types import SimpleNamespace
import numpy as np
from immersions.devices.player import LoopRenderer
from immersions.devices.recorder import record

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
path, limit = sys.argv[1], int(sys.argv[2])
r = LoopRenderer(16000, volume=1.0)
t = np.arange(3200) / 16000
r.offer(SimpleNamespace(serial=1, clip=(0.5 * np.sin(2 * np.pi * 250 * t)).astype(np.float32), sample_rate=16000))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG: a full disk
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
rec = record(r, path)
heard, states = [], []
for i in range(60):  # 3 s in 50 ms blocks, at about real time
    heard.append(r.render(800)[:, 0].copy())
    states.append(rec.recording)
    time.sleep(0.02)
info = r.stop_recording().stop()
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again, for the test's own copy
np.concatenate(heard).tofile(path + ".f32")
print(json.dumps(dict(frames=info.frames, dropped=info.dropped_frames, error=info.error, states=states)))
"""


def test_a_full_disk_ends_the_recording_cleanly_and_the_sound_goes_on(tmp_path):
    path = tmp_path / "full.wav"
    limit = 44 + 3 * 16000 + 1000  # room for a little over one second of 24-bit mono at 16 kHz
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path), str(limit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["states"][0] and not result["states"][-1]  # it stopped by itself during the take
    assert "File too large" in result["error"] and result["dropped"] == 0
    errors = [line for line in done.stderr.splitlines() if line.startswith(("ERROR", "Traceback"))]
    assert len(errors) == 1 and "immersions.devices.recorder" in errors[0] and "the sound goes on" in errors[0]
    frames = result["frames"]
    assert 0.5 * 16000 < frames <= (limit - 44) // 3
    assert path.stat().st_size == 44 + 3 * frames  # cut back to whole frames, the header says so
    samples, _ = read_wav24(path)
    heard = np.fromfile(str(path) + ".f32", np.float32)
    assert len(heard) == 60 * 800 and len(samples) == frames
    assert np.abs(samples[:, 0] - heard[:frames]).max() <= 0.5 * LSB + 1e-9  # what was written is intact


def test_the_wav_size_limit_ends_a_recording_cleanly(tmp_path):
    r = LoopRenderer(SR, volume=1.0)
    r.offer(clip(1, tone(100, 1600)))
    rec = Recorder(tmp_path / "long.wav", SR)
    rec.max_data_bytes = 3 * 1000  # WAV's 4 GiB, scaled down to 1000 frames
    r.start_recording(rec.start())
    for _ in range(30):
        r.render(100)
    info = r.stop_recording().stop()
    assert info.frames == 1000 and "size limit" in info.error
    samples, _ = read_wav24(info.path)
    assert len(samples) == 1000


# -- device recovery -----------------------------------------------------------------------------

def test_a_dead_device_is_reopened_and_the_loop_and_the_recording_go_on(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with LoopPlayer(device="null playback", backend="null", buffer_ms=30, periods=3) as player:
        player.offer(clip(5, tone(220, 16000)))
        time.sleep(0.2)
        start = player.renderer.frames
        path = player.start_recording(tmp_path / "through.wav")
        assert player.check() and player.stats().reopens == 0
        # a healthy device is never reopened, even when the check comes late: the callback runs in the grace
        assert player.check(time.perf_counter() + 2 * STALL_S) and player.stats().reopens == 0
        player._device.stop()  # the device dies behind the player's back (an unplugged interface)
        time.sleep(0.1)
        callbacks, frames = player.stats().callbacks, player.renderer.frames
        time.sleep(0.1)
        assert player.stats().callbacks == callbacks  # dead
        assert player.check()  # 0.2 s of silence is not yet a dead device
        assert player.check(time.perf_counter() + STALL_S)  # as if a second and a half had passed
        assert player.stats().reopens == 1 and player.device_name == "NULL Playback Device"
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "reopening NULL Playback Device" in warnings[0]
        assert "no audio callback" in warnings[0]
        time.sleep(0.3)
        stats = player.stats()
        assert stats.callbacks > callbacks + 10 and stats.reopens == 1
        assert player.renderer.frames > frames and player.position().serial == 5  # the loop resumed
        # the generator lost by miniaudio (after an exception in it): the device runs, our callback does not
        player._device.callback_generator = None
        time.sleep(0.05)
        assert player.check(time.perf_counter() + STALL_S) and player.stats().reopens == 2
        assert player.reopen("a test said so") and player.stats().reopens == 3
        time.sleep(0.2)
        assert player.stats().callbacks > stats.callbacks + 10 and player.recording
        info = player.stop_recording()
    assert not player.check()  # closed
    assert info.dropped_frames == 0 and info.path == path
    assert info.frames == pytest.approx(player.renderer.frames - start, abs=0.3 * player.sample_rate)


def test_reopening_a_player_without_a_device_falls_back_to_null_again(caplog):
    with LoopPlayer(backend="webaudio", buffer_ms=30, periods=3) as player:
        assert player.fallback
        caplog.clear()
        assert player.reopen("a driver hiccup")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2 and "a driver hiccup" in warnings[0] and "NULL backend" in warnings[1]
        assert player.fallback and player.backend == "Null"
        callbacks = player.stats().callbacks
        time.sleep(0.1)
        assert player.stats().callbacks > callbacks and player.stats().reopens == 1


def test_a_player_on_the_null_fallback_moves_back_when_its_output_returns(caplog):
    with LoopPlayer(backend="webaudio", buffer_ms=30, periods=3) as player:  # no such output on this machine
        assert player.fallback
        player.offer(clip(7, tone(330, 16000)))
        time.sleep(0.2)
        caplog.clear()
        t0 = player._retry_t
        assert player.check(t0 + RETRY_S - 1) and player._retrying is None  # not time to look yet
        assert player.check(t0 + RETRY_S)  # a look: still no output, and nothing said about it
        player._retrying.join(5)
        assert player.fallback and player.stats().reopens == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert player.check(t0 + RETRY_S + 1) and not player._retrying.is_alive()  # one look per RETRY_S
        # the wanted output appears: here the NULL backend asked for by name, a real miniaudio device
        player._backend_name = "null"
        assert player.check(t0 + 2 * RETRY_S)
        player._retrying.join(5)
        assert not player.fallback and player.stats().reopens == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "is back" in warnings[0]
        callbacks, frames = player.stats().callbacks, player.renderer.frames
        time.sleep(0.3)
        assert player.stats().callbacks > callbacks + 5 and player.renderer.frames > frames
        assert player.position().serial == 7  # the same loop plays on
        last_look = player._retrying
        assert player.check(t0 + 3 * RETRY_S) and player._retrying is last_look  # no looking once it is back
