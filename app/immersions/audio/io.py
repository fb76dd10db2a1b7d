"""Decode any audio file to mono float32 at a chosen rate; write WAV.

PyAV (FFmpeg, whose libraries ship in its wheels) decodes WAV, AIFF, FLAC, MP3, Ogg
Vorbis, Opus, M4A/AAC and the audio track of video files. The file is decoded and
resampled in chunks (FFmpeg's swresample), so an hour-long mix never sits in memory at
its native rate. `resample` (a scipy polyphase filter) serves signals already in memory.
"""

from __future__ import annotations

import logging
import os
import wave
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy.signal import resample_poly

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".wave", ".aif", ".aiff", ".aifc", ".flac", ".mp3", ".ogg", ".oga", ".opus",
                    ".m4a", ".aac", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".wma")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(rate_out, rate_in)
    out = resample_poly(audio, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)


def decode_chunks(path: str | os.PathLike, sample_rate: int) -> Iterator[np.ndarray]:
    """Mono float32 chunks of the file's first audio track at `sample_rate`, in order."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ImmersionsError(f"{path} has no audio track")
            stream = container.streams.audio[0]
            # planar float at the file's own layout: we average the channels ourselves, since
            # FFmpeg's downmix adds them at -3 dB and a full-scale stereo file would clip
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().mean(axis=0)
            for out in resampler.resample(None):
                yield out.to_ndarray().mean(axis=0)
    except av.FFmpegError as err:
        raise ImmersionsError(f"cannot decode audio file {path}: {err.strerror or err}; is it a valid audio file?") from err


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate`; raises ImmersionsError naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ImmersionsError(f"audio file not found: {path}")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise ImmersionsError(
            f"unsupported audio format '{path.suffix}' for {path}: use one of {', '.join(AUDIO_EXTENSIONS)}"
        )
    chunks = list(decode_chunks(path, sample_rate))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise ImmersionsError(f"audio file {path} holds no samples")
    return samples.astype(np.float32, copy=False)


def audio_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImmersionsError(f"audio folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def load_folder(folder: str | os.PathLike, sample_rate: int) -> Iterator[tuple[Path, np.ndarray]]:
    """Every decodable audio file under `folder`; bad files are skipped, named and counted."""
    files = audio_files(folder)
    skipped = 0
    for path in files:
        try:
            yield path, load_audio(path, sample_rate)
        except ImmersionsError as err:
            skipped += 1
            log.warning("skipping %s", err)
    if skipped:
        log.warning("skipped %d of %d audio files in %s", skipped, len(files), folder)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV; the signal is clipped to [-1, 1] (never wrapped around)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError("write_wav expects a mono signal")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return path
