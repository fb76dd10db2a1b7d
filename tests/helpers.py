"""What several test modules share (fixtures shared the same way live in conftest.py):
the command run as a user runs it, waiting on a thread, tones and heard clips, and small
audio files in every format, encoded by PyAV (FFmpeg) the way a music library holds them."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from immersions.audio.io import ENCODINGS as FORMATS
from immersions.audio.io import encode_audio

__all__ = ["FORMATS", "REPO", "encode_format", "heard_clip", "run_cli", "tone", "wait_for"]

REPO = Path(__file__).resolve().parent.parent


def read_log(folder: Path) -> list[dict[str, str]]:
    """The rows of a training run's train_log.csv."""
    with open(Path(folder) / "train_log.csv") as f:
        return list(csv.DictReader(f))


def assert_resumes_exactly(config, folder: Path) -> tuple[Path, Path]:
    """Train `config(out)` whole, and again stopped after 2 steps and resumed; the weights must
    be equal bit for bit. `config(out, **changes)` makes a TrainConfig. Returns both folders."""
    from immersions.model.checkpoint import load_model
    from immersions.train.trainer import train

    whole, stopped = Path(folder) / "whole", Path(folder) / "stopped"
    train(config(whole))
    train(config(stopped, steps=2))
    train(config(stopped, resume=True))
    a, b = load_model(whole).state_dict(), load_model(stopped).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    return whole, stopped


def run_cli(*args, timeout: float = 300):
    """`python -m immersions ARGS` in a fresh process from the checkout; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "immersions", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def wait_for(predicate, timeout: float = 60.0, every: float = 0.02) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def tone(freq: float, n: int, sample_rate: int, amplitude: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """`n` samples of a sine, float32."""
    t = np.arange(n) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def heard_clip(serial: int, samples, sample_rate: int) -> SimpleNamespace:
    """What the dream engine hands the player: a numbered clip at a sample rate."""
    return SimpleNamespace(serial=serial, clip=np.asarray(samples, np.float32), sample_rate=sample_rate)


def encode_format(folder: Path, name: str, seconds: float = 2.0, freq: float = 440.0, stem: str = "tone") -> Path:
    fmt, codec, rate = FORMATS[name]
    return encode_audio(folder / f"{stem}.{name}", tone(freq, int(round(seconds * rate)), rate), rate, fmt, codec,
                        video=name == "mp4")


# -- an Ogg Vorbis file that FFmpeg refuses and libvorbis plays ----------------------------------------------

def _ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every Ogg page."""
    pages, i = [], 0
    while i < len(data):
        assert data[i:i + 4] == b"OggS", f"no Ogg page at byte {i}"
        count = data[i + 26]
        size = 27 + count + sum(data[i + 27:i + 27 + count])
        pages.append((i, size))
        i += size
    return pages


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04c11db7, not reflected, over the page with its CRC zeroed."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _packets(data: bytes, offset: int, size: int) -> list[bytes]:
    """The whole packets on one page (the page must neither continue nor leave a packet open)."""
    count = data[offset + 26]
    lacing = data[offset + 27:offset + 27 + count]
    body, packets, start, length = data[offset + 27 + count:offset + size], [], 0, 0
    for value in lacing:
        length += value
        if value < 255:
            packets.append(body[start:start + length])
            start, length = start + length, 0
    assert length == 0, "a packet runs on to the next page"
    return packets


def vorbis_with_repeated_headers(path: Path, seconds: float = 3.0, sample_rate: int = 44100) -> Path:
    """A tone as Ogg Vorbis whose first audio page starts with the three header packets again,
    as three hyperrogue-music tracks (hr-savino-caribbean, -ivory, -ocean) do: libvorbis plays
    the file, FFmpeg's Ogg demuxer stops at 'Header processing failed'."""
    import soundfile

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sample_rate,
                    format="OGG", subtype="VORBIS")
    data = path.read_bytes()
    pages = _ogg_pages(data)
    headers = _packets(data, *pages[0]) + _packets(data, *pages[1])  # identification; comment, setup
    assert [p[0] for p in headers] == [1, 3, 5]
    offset, size = pages[2]
    assert data[offset + 5] & 1 == 0, "the first audio page continues a packet"
    count = data[offset + 26]
    lacing = []
    for packet in headers:
        lacing += [255] * (len(packet) // 255) + [len(packet) % 255]
    lacing += list(data[offset + 27:offset + 27 + count])
    assert len(lacing) <= 255, "too many segments for one page"
    page = bytearray(data[offset:offset + 26]) + bytes([len(lacing)]) + bytes(lacing) + b"".join(headers) \
        + data[offset + 27 + count:offset + size]
    page[22:26] = b"\0\0\0\0"
    page[22:26] = _ogg_crc(bytes(page)).to_bytes(4, "little")
    path.write_bytes(data[:offset] + bytes(page) + data[offset + size:])
    return path
