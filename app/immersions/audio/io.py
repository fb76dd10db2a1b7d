"""Decode any audio file to mono float32 at a chosen rate; write WAV.

miniaudio decodes WAV, FLAC, MP3 and Ogg Vorbis at the file's own rate and channel
count; we downmix by averaging and resample with a polyphase filter (scipy), which
is far cleaner than miniaudio's built-in linear resampler.
"""

from __future__ import annotations

import logging
import os
import wave
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import miniaudio
import numpy as np
from scipy.signal import resample_poly

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(rate_out, rate_in)
    out = resample_poly(audio, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate`; raises ImmersionsError naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ImmersionsError(f"audio file not found: {path}")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise ImmersionsError(
            f"unsupported audio format '{path.suffix}' for {path}: use one of {', '.join(AUDIO_EXTENSIONS)}"
        )
    try:
        info = miniaudio.get_file_info(str(path))
        decoded = miniaudio.decode_file(
            str(path),
            output_format=miniaudio.SampleFormat.FLOAT32,
            nchannels=info.nchannels,
            sample_rate=info.sample_rate,
        )
    except (miniaudio.DecodeError, OSError, ValueError) as err:
        raise ImmersionsError(f"cannot decode audio file {path}: {err}; is it a valid audio file?") from err
    samples = np.asarray(decoded.samples, dtype=np.float32)
    if decoded.nchannels > 1:
        samples = samples.reshape(-1, decoded.nchannels).mean(axis=1)
    if samples.size == 0:
        raise ImmersionsError(f"audio file {path} holds no samples")
    return resample(samples, decoded.sample_rate, sample_rate)


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
