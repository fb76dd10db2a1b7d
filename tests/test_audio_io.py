import logging

import numpy as np
import pytest
import soundfile

from immersions.audio.io import load_audio, load_folder, resample, write_wav
from immersions.errors import ImmersionsError


def dominant_frequency(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * sample_rate / len(audio)


@pytest.mark.parametrize("fmt,rate,channels", [
    ("wav", 44100, 2), ("wav", 22050, 1), ("flac", 48000, 2), ("ogg", 44100, 1), ("mp3", 44100, 2),
])
def test_decodes_any_rate_and_channel_count_to_mono_at_model_rate(tmp_path, sine, fmt, rate, channels):
    tone = sine(440.0, 1.0, rate)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path = tmp_path / f"tone.{fmt}"
    soundfile.write(path, data, rate)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) < 1600  # mp3 adds encoder delay/padding
    assert dominant_frequency(audio, 16000) == pytest.approx(440.0, abs=3.0)
    assert 0.3 < np.abs(audio).max() < 0.7


def test_write_then_read_round_trip(tmp_path, sine):
    tone = sine(1000.0, 0.5, 16000)
    path = write_wav(tmp_path / "sub" / "x.wav", tone, 16000)
    back = load_audio(path, 16000)
    assert np.max(np.abs(back - tone)) < 1e-3


def test_write_clips_instead_of_wrapping(tmp_path):
    loud = np.array([0.5, 1.7, -3.0, 0.0], dtype=np.float32)
    back = load_audio(write_wav(tmp_path / "loud.wav", loud, 16000), 16000)
    assert back[1] > 0.99 and back[2] < -0.99  # no int16 wrap-around


def test_resample_keeps_pitch(sine):
    out = resample(sine(300.0, 1.0, 48000), 48000, 16000)
    assert len(out) == 16000
    assert dominant_frequency(out, 16000) == pytest.approx(300.0, abs=2.0)


def test_corrupt_file_names_itself(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file at all")
    with pytest.raises(ImmersionsError, match="broken.wav"):
        load_audio(bad, 16000)


def test_unsupported_and_missing_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImmersionsError, match="unsupported audio format '.txt'"):
        load_audio(text, 16000)
    with pytest.raises(ImmersionsError, match="not found"):
        load_audio(tmp_path / "missing.wav", 16000)


def test_folder_skips_bad_files_with_a_warning_and_count(tmp_path, sine, caplog):
    write_wav(tmp_path / "a.wav", sine(220.0, 0.5), 16000)
    write_wav(tmp_path / "deep" / "b.wav", sine(330.0, 0.5), 16000)
    (tmp_path / "c.mp3").write_bytes(b"\x00" * 100)
    (tmp_path / "d.flac").write_bytes(b"fLaC garbage")
    (tmp_path / "readme.txt").write_text("ignored: not audio")
    with caplog.at_level(logging.WARNING):
        loaded = list(load_folder(tmp_path, 16000))
    assert [p.name for p, _ in loaded] == ["a.wav", "b.wav"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "c.mp3" in messages and "d.flac" in messages
    assert "skipped 2 of 4 audio files" in messages


def test_missing_folder():
    with pytest.raises(ImmersionsError, match="audio folder not found"):
        list(load_folder("/no/such/folder", 16000))
