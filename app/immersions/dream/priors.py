"""Musical priors: what a dream step does to the loop after the gradient step, so that what
rises is music rather than the cheapest sound that makes the neurons fire.

- `sparsify`: de-noising that keeps content. Each short-time spectrum is gated against its
  own loudest partial (sparse spectra are tones and hits; a broad floor is hiss): a cell
  below the threshold goes, one at twice the threshold or more stays untouched, so loud
  content does not fade step after step. A cell the selected neurons pull on strongly has
  its threshold lowered in proportion to that pull, so what the selection needs stays even
  when it is quiet.
- `toward_balance`: the loop's long-term spectrum, in octave bands, moves a little toward
  real music's balance each step (`assets/reference/music-balance.json`, from the music the
  real-music ear trained on), instead of piling energy at the top of the scalogram.
- `beat_repeat`: the loop blends toward its own average over whole beats, so what works on
  one beat comes back on the next: the onsets repeat at the loop's tempo.

Each is a small pure function of the loop; `Dreamer.step` applies them at strengths from
the registry (`sparsity`, `balance`, `beat_repeat`).
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from immersions.dream import spaces as S
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)
# the gate's threshold at sparsity 1, relative to the moment's loudest cell: everything 20 dB
# or more below it goes, and from 14 dB below up nothing is touched; at 0.3, 30 and 24 dB
SPARSITY_SHARE = 0.1
NEED_QUANTILE = 0.99  # a cell pulled on as hard as the top 1 % of cells is spared entirely
BALANCE_MAX_DB = 3.0  # the most one step changes a band
SILENT_POWER = 1e-12  # mean power per bin below which a loop has no balance to correct
LOWEST_OCTAVE_HZ = 31.25  # the octave bands of `immersions.audio.measures.octave_profile`
BALANCE_FILE = "reference/music-balance.json"


def sparsify(loop: torch.Tensor, amount: float, gradient: torch.Tensor | None = None) -> torch.Tensor:
    """Gate the loop's STFT against each frame's loudest cell, sparing cells in proportion to
    how hard the objective's `gradient` (same shape as the loop) pulls on them."""
    if amount <= 0:
        return loop
    samples = loop.shape[-1]
    pad = min(S.N_FFT, samples)
    window = torch.hann_window(S.N_FFT, device=loop.device)
    spec = S.stft(loop, pad, window)
    magnitude = spec.abs()
    threshold = amount * SPARSITY_SHARE * magnitude.amax(dim=-2, keepdim=True)
    if gradient is not None:
        pull = S.stft(gradient, pad, window).abs()
        scale = torch.quantile(pull.flatten()[:: max(1, pull.numel() // 100_000)], NEED_QUANTILE)
        if scale > 0:
            threshold = threshold * (1.0 - (pull / scale).clamp(max=1.0))
    # 0 below the threshold, 1 from twice the threshold: a ramp, so the gate does not click
    gain = ((magnitude - threshold) / threshold.clamp_min(1e-12)).clamp(0.0, 1.0)
    return S.istft(spec * gain, samples, pad, window)


def octave_edges(sample_rate: int) -> np.ndarray:
    """Edges of the octave bands from 31.25 Hz up to Nyquist (as in the sound measures)."""
    return LOWEST_OCTAVE_HZ * 2.0 ** np.arange(int(math.log2(sample_rate / 2 / LOWEST_OCTAVE_HZ)) + 1)


def band_profile(loop: torch.Tensor, sample_rate: int, bands: int | None = None) -> torch.Tensor | None:
    """Mean power per octave band in dB minus its mean over the bands; None for silence.
    With `bands`, only the lowest that many octaves (a reference measured at another rate)."""
    power = torch.fft.rfft(loop, norm="ortho").abs().square()
    if float(power.mean()) < SILENT_POWER:
        return None
    freqs = torch.fft.rfftfreq(loop.shape[-1], 1.0 / sample_rate).to(loop.device)
    edges = octave_edges(sample_rate)[: None if bands is None else bands + 1]
    bands = torch.stack([power[(freqs >= lo) & (freqs < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    db = 10.0 * torch.log10(bands + SILENT_POWER)
    return db - db.mean()


def toward_balance(loop: torch.Tensor, sample_rate: int, reference_db: torch.Tensor, weight: float) -> torch.Tensor:
    """Move the loop's octave balance `weight` of the way toward `reference_db` (at most
    BALANCE_MAX_DB per band per step), with gains interpolated smoothly over log frequency.
    The bands compared are those both the loop's rate and the reference have (real music's
    reference is measured at 16 kHz: a 44.1-kHz model's top octave keeps the gain of the
    octave below it)."""
    if weight <= 0:
        return loop
    bands = min(len(reference_db), len(octave_edges(sample_rate)) - 1)
    profile = band_profile(loop, sample_rate, bands)
    if profile is None:
        return loop
    reference = reference_db.to(loop.device)
    if bands < len(reference):  # loudness removed over the bands compared
        reference = reference[:bands] - reference[:bands].mean()
    correction = (weight * (reference - profile)).clamp(-BALANCE_MAX_DB, BALANCE_MAX_DB)
    edges = octave_edges(sample_rate)[: bands + 1]
    centres = torch.as_tensor(np.log2(np.sqrt(edges[:-1] * edges[1:])), dtype=loop.dtype, device=loop.device)
    freqs = torch.fft.rfftfreq(loop.shape[-1], 1.0 / sample_rate).to(loop.device)
    position = torch.log2(freqs.clamp_min(LOWEST_OCTAVE_HZ)).to(loop.dtype)
    gain_db = _interpolate(position, centres, correction.to(loop.dtype))
    spectrum = torch.fft.rfft(loop) * 10.0 ** (gain_db / 20.0)
    return torch.fft.irfft(spectrum, n=loop.shape[-1])


def _interpolate(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for tensors: linear between the points, flat beyond the ends."""
    index = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, len(xp) - 1)
    lo, hi = xp[index - 1], xp[index]
    t = ((x.clamp(xp[0], xp[-1]) - lo) / (hi - lo)).clamp(0.0, 1.0)
    return fp[index - 1] + t * (fp[index] - fp[index - 1])


def beat_repeat(loop: torch.Tensor, beats: int, weight: float) -> torch.Tensor:
    """Blend `weight` of the loop's average over its `beats` whole-beat rotations into it."""
    if weight <= 0 or beats < 2:
        return loop
    samples = loop.shape[-1]
    average = sum(torch.roll(loop, round(k * samples / beats), dims=-1) for k in range(beats)) / beats
    return (1.0 - weight) * loop + weight * average


@lru_cache(maxsize=4)
def music_balance(path: str | None = None) -> tuple[float, ...]:
    """Real music's octave profile (dB per band from 31.25 Hz, loudness removed), shipped in
    assets/ and made by `immersions balance`."""
    if path is None:
        from immersions.paths import assets_dir

        path = str(assets_dir() / BALANCE_FILE)
    try:
        doc = json.loads(Path(path).read_text())
        return tuple(float(v) for v in doc["profile_db"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImmersionsError(f"cannot read the music balance {path} ({err}); "
                              "remake it with `immersions balance MUSIC_DIR`") from err


def measure_balance(files: list[Path], sample_rate: int, excerpt_seconds: float = 8.0,
                    per_file: int = 8) -> tuple[np.ndarray, int]:
    """Mean octave profile over excerpts spread through each file; returns (profile, excerpts).
    Files that cannot be decoded are skipped (the loader logs them)."""
    from immersions.audio.io import load_audio
    from immersions.audio.measures import octave_profile

    samples = int(excerpt_seconds * sample_rate)
    profiles = []
    for path in files:
        try:
            audio = load_audio(path, sample_rate)
        except ImmersionsError as err:
            log.warning("skipped: %s", err)
            continue
        if len(audio) < samples:
            continue
        for start in np.linspace(0, len(audio) - samples, per_file).astype(int):
            profile = octave_profile(audio[start:start + samples], sample_rate)
            if profile is not None:
                profiles.append(profile)
    if not profiles:
        raise ImmersionsError("no audio could be measured for the music balance; give a folder of music files")
    return np.mean(profiles, axis=0), len(profiles)
