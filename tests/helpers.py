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
