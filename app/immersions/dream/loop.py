"""The optimized variable: the waveform of one loop, as long as the tempo says.

A loop is `bars` bars of 4/4 at `bpm`: two bars at 120 BPM are 4.0 s. It starts from
silence, noise, one of the starter clips in assets/clips, or any audio file (decoded,
resampled, and looped or trimmed to the loop's length).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from immersions.audio.io import load_audio
from immersions.registry import START_CLIPS
from immersions.synth import render_loop
from immersions.errors import ImmersionsError
from immersions.paths import assets_dir

START_MIN_SECONDS = 0.05  # a start clip shorter than this would loop as a buzz, not as music


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Loop a short clip or trim a long one to exactly `samples`."""
    if len(audio) == 0:
        raise ImmersionsError("the start clip is empty")
    if len(audio) < samples:
        audio = np.tile(audio, -(-samples // len(audio)))
    return np.ascontiguousarray(audio[:samples], dtype=np.float32)


def start_clip(start: str, samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """'silence', 'noise', a starter clip name (kick, groove, ...) or a path to an audio file."""
    if start == "silence":
        return np.zeros(samples, dtype=np.float32)
    if start == "noise":
        return fit_length(render_loop("noise", sample_rate=sample_rate, seed=seed), samples)
    if start in START_CLIPS:
        path = assets_dir() / "clips" / f"{start}.wav"
    else:
        path = Path(start)
        if not path.exists():
            raise ImmersionsError(
                f"start clip '{start}' is neither silence, noise, a starter clip ({', '.join(START_CLIPS)}) "
                "nor an existing audio file"
            )
    # the same checks as a training corpus: a truncated or corrupt file is refused with its reason
    # rather than looping the few samples it holds
    return fit_length(load_audio(path, sample_rate, min_seconds=START_MIN_SECONDS), samples)
