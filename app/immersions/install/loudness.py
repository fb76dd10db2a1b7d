"""How loud a loop is, how noisy, how much it changed, and the volume that keeps the room
at one level.

Measurements are small pure functions on one loop (a float waveform that repeats):
- `clip_loudness`: ITU-R BS.1770 integrated loudness (pyloudnorm) of the loop repeated to
  at least 3 s, so a short loop is measured over several 400 ms gating blocks the way it is
  heard: round and round. -inf for digital silence.
- `spectral_flatness`: geometric over arithmetic mean of the Welch power spectrum. White
  noise is near 1; a pitched or rhythmic loop is near 0 (the shipped groove is 0.006, a
  dreamed loop 0.02 .. 0.05, the shipped noise start clip 0.4).
- `scalogram_change`: mean absolute difference of two heard loops' small scalograms (the
  DreamFrame's uint8 HUD image), 0 = identical, 1 = opposite. Dreaming that still moves
  changes a loop by about 0.01 .. 0.05 per loop.

`LoudnessRider` turns the measurements into the `volume` parameter: each new loop gets a
target gain that puts it at the target loudness (default -16 LUFS, a comfortable level in
a room), never above unity gain unless the loop is very quiet, and never so high that its
peaks pass 0 dBFS; the gain then glides there in decibels (down quickly, up slowly), frame
by frame, so a correction is a gentle swell, never a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from immersions.registry import REGISTRY
from immersions.errors import ImmersionsError

MIN_SECONDS = 3.0  # a loop is repeated to at least this long before it is measured
PEAK_CEILING = 0.98  # the loudest sample may reach this at the chosen gain (just below 0 dBFS)
VOLUME = REGISTRY["volume"]


@lru_cache(maxsize=8)
def _meter(rate: int):
    import pyloudnorm  # imported when first needed: it takes most of a second, and the CLI starts without it

    return pyloudnorm.Meter(rate)


def clip_loudness(clip: np.ndarray, rate: int, min_seconds: float = MIN_SECONDS) -> float:
    """Integrated loudness in LUFS of a loop heard round and round; -inf when silent."""
    clip = np.nan_to_num(np.asarray(clip, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if clip.ndim != 1 or len(clip) == 0:
        raise ImmersionsError(f"cannot measure a clip of shape {clip.shape}: expected a mono waveform")
    if not np.any(clip):
        return -math.inf
    repeats = max(1, math.ceil(min_seconds * rate / len(clip)))
    with np.errstate(divide="ignore"):  # pyloudnorm takes log10(0) for gated-out silence
        value = float(_meter(int(rate)).integrated_loudness(np.tile(clip, repeats)))
    return value if math.isfinite(value) else -math.inf


def peak(clip: np.ndarray) -> float:
    clip = np.asarray(clip)
    return float(np.nanmax(np.abs(clip))) if len(clip) else 0.0


def spectral_flatness(clip: np.ndarray, rate: int) -> float:
    """Wiener entropy of the averaged power spectrum: ~1 white noise, ~0 tones and beats."""
    from scipy.signal import welch

    clip = np.nan_to_num(np.asarray(clip, dtype=np.float64))
    if len(clip) < 64 or not np.any(clip):
        return 0.0
    _, power = welch(clip, rate, nperseg=min(1024, len(clip)))
    power = power[1:] + 1e-20  # without DC; the floor keeps log() finite
    return float(np.exp(np.mean(np.log(power))) / np.mean(power))


def scalogram_change(a: np.ndarray, b: np.ndarray) -> float:
    """0 (identical) .. 1: mean absolute difference of two uint8 scalogram images."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        return 1.0
    return float(np.mean(np.abs(a - b)) / 255.0)


def db(gain: float) -> float:
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


def gain_for(loudness: float, clip_peak: float, target: float = -16.0, quiet_margin: float = 10.0) -> float | None:
    """The volume that puts a loop measured at `loudness` (at unity gain) at `target` LUFS.
    At most unity, unless the loop is more than `quiet_margin` dB below the target (then up
    to the registry's maximum); at most what keeps its peak below 0 dBFS. None for silence."""
    if not math.isfinite(loudness):
        return None
    ceiling = VOLUME.maximum if loudness < target - quiet_margin else 1.0
    if clip_peak > 0:
        ceiling = min(ceiling, PEAK_CEILING / clip_peak)
    wanted = 10.0 ** ((target - loudness) / 20.0)
    return float(max(0.01, min(wanted, ceiling)))


@dataclass(frozen=True)
class ClipReading:
    """What a heard loop measured (at unity gain)."""

    serial: int
    loudness: float  # LUFS, -inf for silence
    peak: float
    flatness: float


def read_clip(frame) -> ClipReading:
    """Measure a DreamFrame's clip (anything with .serial, .clip, .sample_rate)."""
    clip = np.asarray(frame.clip, dtype=np.float32)
    return ClipReading(int(frame.serial), clip_loudness(clip, frame.sample_rate), peak(clip),
                       spectral_flatness(clip, frame.sample_rate))


class LoudnessRider:
    """Rides the master volume so that every loop is heard near `target` LUFS.

    `observe(reading)` once per new loop sets where the gain should go; `step(dt)` once per
    frame moves the gain there at `down_db_per_s` / `up_db_per_s`, and returns it."""

    def __init__(self, gain: float = VOLUME.default, target: float = -16.0, quiet_margin: float = 10.0,
                 down_db_per_s: float = 12.0, up_db_per_s: float = 3.0):
        if not -40.0 <= target <= -3.0:
            raise ImmersionsError(f"target loudness {target} LUFS: choose -40 .. -3 (rooms: -20 .. -14)")
        self.target, self.quiet_margin = float(target), float(quiet_margin)
        self.down, self.up = float(down_db_per_s), float(up_db_per_s)
        self.gain = min(max(float(gain), 0.01), 1.0)
        self.wanted = self.gain
        self.heard: list[float] = []  # loudness of each observed loop at the gain it got (LUFS)

    def observe(self, reading: ClipReading) -> None:
        wanted = gain_for(reading.loudness, reading.peak, self.target, self.quiet_margin)
        if wanted is not None:
            self.wanted = wanted
            self.heard.append(reading.loudness + db(self.gain))

    def step(self, dt: float) -> float:
        now, wanted = db(self.gain), db(self.wanted)
        rate = self.down if wanted < now else self.up
        move = max(-rate * dt, min(rate * dt, wanted - now))
        self.gain = min(VOLUME.maximum, 10.0 ** ((now + move) / 20.0))
        return self.gain

    def heard_loudness(self) -> float | None:
        """Median loudness of the loops as they were heard, or None before the first."""
        return float(np.median(self.heard)) if self.heard else None
