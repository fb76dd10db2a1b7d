"""The room's sound in: the ring, the downmix and resampling, a real capture device on
miniaudio's NULL backend, a file through the same path, and the no-device warning."""

import logging
import time
import tracemalloc

import miniaudio
import numpy as np
import pytest

from immersions.devices.capture import (InputRing, SoundIn, _RingCapture, downmix_into, input_file, open_sound_in,
                                      to_model_rate)
from immersions.devices.shell import list_inputs
from immersions.audio.io import write_wav
from immersions.errors import ImmersionsError

from helpers import run_cli


def peak_hz(signal, rate):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return np.argmax(spectrum) * rate / len(signal)


# -- the math -------------------------------------------------------------------------------

def test_downmix_is_the_mean_of_the_channels():
    block = np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]], np.float32)
    out = np.full(8, 9.0, np.float32)
    assert downmix_into(block, out).tolist() == [0.5, 0.5, 0.0]
    assert out[3] == 9.0  # nothing past the block is touched


def test_input_is_resampled_to_the_models_rate_with_pitch_and_length_kept(sine):
    for rate_in in (48000, 44100):
        tone = sine(1000.0, 1.0, rate_in)
        out = to_model_rate(tone, rate_in, 16000, 16000)
        assert out.dtype == np.float32 and len(out) == 16000
        assert peak_hz(out, 16000) == pytest.approx(1000.0, abs=2.0)
        assert np.abs(out[2000:-2000]).max() == pytest.approx(0.5, abs=0.02)  # no loss in the pass band


# -- the ring -------------------------------------------------------------------------------

def test_ring_keeps_the_newest_input_across_the_wrap():
    ring = InputRing(1000, seconds=1.0, channels=1)
    signal = np.arange(2500, dtype=np.float32)
    for start in range(0, 2500, 300):
        ring.write(signal[start:start + 300, None])
    assert ring.written == 2500 and ring.size == 1000
    assert np.array_equal(ring.read(2500, 1000), signal[1500:2500])
    assert np.array_equal(ring.read(2200, 500), signal[1700:2200])
    with pytest.raises(ImmersionsError, match="overwritten"):
        ring.read(1400, 100)  # lapped by the writer
    with pytest.raises(ImmersionsError, match="only 2500 captured"):
        ring.read(2600, 10)


def test_ring_before_the_first_samples_is_silence():
    ring = InputRing(1000, seconds=1.0, channels=2)
    ring.write(np.ones((100, 2), np.float32))
    window = ring.read(100, 300)
    assert window[:200].max() == 0.0 and window[200:].min() == 1.0


def test_ring_maps_the_wall_clock_to_samples():
    ring = InputRing(1000, seconds=4.0, channels=1)
    ring.write(np.zeros(500, np.float32), t=100.0)  # the newest sample was heard at t = 100 s
    assert ring.index_at(100.0) == 500
    assert ring.index_at(99.75) == 250
    assert ring.time_of(250) == pytest.approx(99.75)


def test_writing_into_the_ring_allocates_no_buffers():
    ring = InputRing(48000, channels=2)
    block = np.random.default_rng(0).standard_normal((480, 2)).astype(np.float32)
    for _ in range(10):
        ring.write(block)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(500):  # wraps included: the ring holds 40 s, these are 5 s
            ring.write(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 480 * 4  # one mono block of float32 would be 1.9 kB


def test_the_capture_callback_copies_into_the_ring_without_allocating():
    capture = _RingCapture(InputRing, None, [miniaudio.Backend.NULL], 10)
    try:  # not started: the test plays miniaudio's part and calls the callback itself
        n = 480
        block = np.stack([np.linspace(-1, 1, n), np.linspace(1, -1, n) * 0.5], axis=1).astype(np.float32)
        source = miniaudio.ffi.from_buffer(block)
        capture._data_callback(None, None, source, n)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for _ in range(200):
                capture._data_callback(None, None, source, n)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert capture.faults == 0 and capture.callbacks == 201
        assert peak - before < n * 4
        assert np.allclose(capture.ring.read(capture.ring.written, n), block.mean(axis=1))
    finally:
        capture.close()


# -- sources --------------------------------------------------------------------------------

def test_a_capture_device_on_the_null_backend_fills_the_ring_at_the_real_rate():
    with SoundIn.from_device(None, backend="null") as sound_in:
        assert sound_in.backend.lower() == "null"
        deadline = time.perf_counter() + 5.0
        while sound_in.ring.written == 0 and time.perf_counter() < deadline:
            time.sleep(0.01)
        began_written, began = sound_in.ring.clock()
        time.sleep(1.0)
        written, when = sound_in.ring.clock()
        rate = (written - began_written) / (when - began)
        assert rate == pytest.approx(sound_in.sample_rate, rel=0.1)  # silence, but in real time
        window = sound_in.window(0.5, 16000)
        assert len(window) == 8000 and np.abs(window).max() == 0.0
        assert sound_in.faults == 0


def test_a_file_goes_through_the_same_ring_and_resampling(tmp_path, sine):
    tone = np.concatenate([sine(440.0, 1.0, 44100), sine(880.0, 1.0, 44100)])
    path = write_wav(tmp_path / "room.wav", tone, 44100)
    sound_in = SoundIn.from_file(path, sample_rate=44100, realtime=False, start=False)
    try:
        assert sound_in.source.pump(len(tone)) == len(tone)
        assert sound_in.ring.written == len(tone)
        late = sound_in.window(0.5, 16000)  # the newest half second: 880 Hz
        early = sound_in.window(0.5, 16000, end=sound_in.ring.written - 44100)  # half a second of 440 Hz
        assert peak_hz(late, 16000) == pytest.approx(880.0, abs=4.0)
        assert peak_hz(early, 16000) == pytest.approx(440.0, abs=4.0)
    finally:
        sound_in.close()


def test_a_file_played_in_real_time_arrives_at_its_rate(sine):
    began = time.perf_counter()
    with SoundIn.from_file(sine(440.0, 0.5, 16000), sample_rate=16000) as sound_in:
        time.sleep(0.6)
        written, _ = sound_in.ring.clock()
        elapsed = time.perf_counter() - began
    # paced like a device (never ahead of the wall clock by more than a block), and looping past the file's end
    assert 0.5 * 16000 < written <= (elapsed + 0.02) * 16000


# -- devices --------------------------------------------------------------------------------

def test_no_input_device_is_one_warning_and_no_sound_in(caplog):
    caplog.set_level(logging.INFO)
    # webaudio exists only in browsers: on this machine opening it fails, just as a missing input does
    assert open_sound_in("default", backend="webaudio") is None
    assert open_sound_in("no such microphone", backend="null") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert all("no sound in" in w and "\n" not in w and "everything else runs" in w for w in warnings)
    assert "pick an index or part of a name" in warnings[1]


def test_an_input_that_looks_like_a_file_is_a_file_missing_or_opened(tmp_path, monkeypatch, caplog, sine):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    # a misspelt file is no such file, not a missing device (there is one: NULL Capture Device)
    for typo in ("rehearsal.wav", "takes/rehearsal", str(tmp_path / "rehearsal.flac")):
        caplog.clear()
        assert open_sound_in(typo, backend="null") is None
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert f"no such file: {typo}" in warning and "pick an index" not in warning and "\n" not in warning
        with pytest.raises(ImmersionsError, match=f"^no such file: {typo} "):
            input_file(typo)
    assert input_file("null capture") is None and input_file("0") is None and input_file(None) is None
    # a file that opens says so in one line: its name and its length
    write_wav(tmp_path / "rehearsal.wav", sine(440.0, 1.5, 16000), 16000)
    caplog.clear()
    sound_in = open_sound_in("rehearsal.wav", backend="null")
    try:
        assert sound_in is not None and sound_in.backend == "file"
    finally:
        sound_in.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["sound in: file rehearsal.wav (1.5 s), played in a loop"]


def test_perform_refuses_an_input_file_that_does_not_exist_in_one_line(tmp_path):
    for typo in ("takes/rehearsal", str(tmp_path / "rehearsal.wav")):
        result = run_cli("perform", "--headless", "--seconds", "1", "--no-midi", "--input", typo,
                         "--audio-backend", "null", timeout=120)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "no such file" in line and typo in line and "pick an index" not in line, line


def test_inputs_are_listed_and_chosen_by_index_or_name():
    names = list_inputs("null")
    assert names == ["NULL Capture Device"]
    for choice in ("0", "null capture"):
        sound_in = open_sound_in(choice, backend="null")
        assert sound_in is not None and sound_in.name == names[0]
        sound_in.close()


def test_devices_command_lists_outputs_and_inputs_each_under_a_heading():
    result = run_cli("devices", "--audio-backend", "null", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "outputs (perform --audio-device):", "0: NULL Playback Device",
        "inputs (perform --input):", "0: NULL Capture Device",
        "only miniaudio's NULL device, as --audio-backend null asks: what is played goes nowhere and the input is "
        "silence"]


def test_devices_says_when_only_null_devices_exist():
    from immersions.devices.shell import devices_report, is_null_device

    assert is_null_device("NULL Playback Device")
    assert is_null_device("Discard all samples (playback) or generate zero samples (capture)")  # ALSA's null plugin
    assert not is_null_device("HDA Intel PCH: ALC892 Analog (hw:0,0)")
    lines = devices_report()  # this machine's own backend
    names = [line.split(": ", 1)[1] for line in lines if line[:1].isdigit()]
    said = [line for line in lines if line.startswith("only")]
    assert len(said) == (1 if names and all(is_null_device(n) for n in names) else 0)


def test_perform_without_the_input_warns_once_and_runs(micro_model_dir, tmp_path):
    import json
    import shutil

    model = tmp_path / "micro"
    shutil.copytree(micro_model_dir, model)
    result = run_cli("perform", "--headless", "--seconds", "1", "--fps", "5", "--model", str(model), "--no-midi",
                     "--input", "no such microphone", "--audio-backend", "null", "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "no sound in" in line]
    assert len(warnings) == 1 and "no audio input 'no such microphone'" in warnings[0]
    assert json.loads(result.stdout)  # the performance ran and reported its state
