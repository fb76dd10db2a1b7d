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


def test_a_vorbis_stream_ffmpeg_refuses_is_read_by_libsndfile(tmp_path):
    """Three hyperrogue-music tracks repeat their header packets in the audio: FFmpeg's Ogg demuxer
    refuses them, libvorbis plays them; they are decoded (all of it, the right pitch), not skipped."""
    import av

    from immersions.audio.io import probe_audio
    from helpers import vorbis_with_repeated_headers

    path = vorbis_with_repeated_headers(tmp_path / "repeats.ogg", seconds=3.0)
    with pytest.raises(av.FFmpegError):  # the fixture is what FFmpeg refuses
        av.open(str(path))
    info = probe_audio(path)
    assert info.decoder == "libsndfile" and info.source_rate == 44100 and info.declared_seconds == pytest.approx(3.0)
    audio = load_audio(path, 16000)
    assert len(audio) == pytest.approx(3 * 16000, abs=16)
    assert dominant_frequency(audio, 16000) == pytest.approx(440.0, abs=2.0)
    assert 0.25 < np.abs(audio).max() < 0.35
    (tmp_path / "broken.ogg").write_bytes(b"OggS" + b"\x00" * 200)  # neither decoder reads this one
    assert [p.name for p, _ in load_folder(tmp_path, 16000)] == ["repeats.ogg"]


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


# -- every format a music library holds, and files that cannot serve ------------------------

from helpers import FORMATS, encode_format  # noqa: E402

from immersions.audio.io import BadAudioFile, probe_audio  # noqa: E402


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_decodes_to_mono_at_the_model_rate(tmp_path, name):
    path = encode_format(tmp_path, name, seconds=2.0, freq=440.0)
    info = probe_audio(path)
    assert info.channels == 2 and info.source_rate == FORMATS[name][2]
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 32000) < 1600  # lossy codecs add encoder delay and padding
    assert dominant_frequency(audio, 16000) == pytest.approx(440.0, abs=3.0)
    assert 0.3 < np.abs(audio).max() < 0.7  # the two channels averaged, not summed


def test_video_file_gives_its_audio_track(tmp_path):
    import av

    path = encode_format(tmp_path, "mp4", seconds=2.0, freq=660.0)
    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.audio
    assert dominant_frequency(load_audio(path, 16000), 16000) == pytest.approx(660.0, abs=3.0)


@pytest.mark.parametrize("name", ["wav", "aiff", "mp3", "flac", "ogg", "opus"])
def test_truncated_file_is_refused_by_name(tmp_path, name):
    whole = encode_format(tmp_path, name, seconds=3.0)
    cut = tmp_path / f"cut.{name}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(BadAudioFile, match=f"cut.{name}.*truncated"):
        load_audio(cut, 16000)


def test_60_byte_wav_is_refused_not_looped(tmp_path, sine):
    whole = write_wav(tmp_path / "whole.wav", sine(440.0, 1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:60])  # the header promises 1 s, 8 samples are there
    with pytest.raises(BadAudioFile, match="cut.wav.*truncated: holds 0.00 s of the 1.00 s"):
        load_audio(cut, 16000)


def test_empty_corrupt_and_too_short_files_name_their_reason(tmp_path, sine):
    empty = tmp_path / "empty.m4a"
    empty.touch()
    with pytest.raises(BadAudioFile, match="empty.m4a: empty"):
        load_audio(empty, 16000)
    noise = tmp_path / "noise.opus"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(BadAudioFile, match="noise.opus: .*corrupt"):
        load_audio(noise, 16000)
    short = write_wav(tmp_path / "short.wav", sine(440.0, 0.5), 16000)
    with pytest.raises(BadAudioFile, match="short.wav: too short: 0.50 s, needs at least 6.00 s"):
        load_audio(short, 16000, min_seconds=6.0)
    assert len(load_audio(short, 16000)) == 8000


def test_errors_are_one_line(tmp_path):
    cut = tmp_path / "cut.flac"
    whole = encode_format(tmp_path, "flac", seconds=3.0)
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(ImmersionsError) as err:
        load_audio(cut, 16000)
    assert "\n" not in str(err.value) and "cut.flac" in str(err.value)


def test_dream_start_clip_gives_the_same_reason(tmp_path, sine):
    from immersions.dream.loop import start_clip

    whole = write_wav(tmp_path / "whole.wav", sine(440.0, 1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:60])
    with pytest.raises(BadAudioFile) as err:
        start_clip(str(cut), 64000, 16000)
    with pytest.raises(BadAudioFile) as again:
        load_audio(cut, 16000)
    assert str(err.value) == str(again.value)
    assert start_clip(str(whole), 64000, 16000).shape == (64000,)  # a whole short clip still loops


def test_cli_dream_refuses_a_truncated_start_clip_in_one_line(tmp_path, sine):
    import subprocess
    import sys

    whole = write_wav(tmp_path / "whole.wav", sine(440.0, 1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:60])
    result = subprocess.run([sys.executable, "-m", "immersions", "dream", "--layer", "0", "--start", str(cut), "--steps", "1",
                             "--out", str(tmp_path / "d.wav")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cut.wav" in result.stderr and "truncated" in result.stderr
