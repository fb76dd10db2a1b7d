"""Small audio files in every format, encoded by PyAV (FFmpeg) the way a music library holds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from immersions.audio.io import ENCODINGS as FORMATS
from immersions.audio.io import encode_audio

__all__ = ["FORMATS", "encode_format", "tone"]


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_format(folder: Path, name: str, seconds: float = 2.0, freq: float = 440.0, stem: str = "tone") -> Path:
    fmt, codec, rate = FORMATS[name]
    return encode_audio(folder / f"{stem}.{name}", tone(freq, seconds, rate), rate, fmt, codec, video=name == "mp4")
