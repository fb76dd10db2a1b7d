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
- `rhythm_repeat`: only the loop's rhythm repeats: each octave band's loudness envelope
  blends toward its average over whole beats, while what sounds inside the band (which
  notes, which chord) stays free to change from beat to beat. `beat_repeat` makes every
  beat the same sound; real music repeats its drums and moves its harmony.
- `harmonics`: each moment's strongest partials grow their overtones (2nd to 6th, each at
  1/k of the partial), phase-locked to the partial, so a tone the network asks for becomes
  a pitched, instrument-like sound rather than a bare sine over hiss.

Each is a small pure function of the loop; `Dreamer.step` applies them at strengths from
the registry (`sparsity`, `balance`, `beat_repeat`, `rhythm_repeat`, `harmonics`).
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
OVERTONES = 6  # a partial lends overtones 2..6 (at 1/k of its amplitude: a sawtooth's series)
PARTIAL_OVER_MEAN = 4.0  # a partial: a local peak 12 dB or more above its moment's mean magnitude
LOWEST_PARTIAL_BIN = 2  # below ~30 Hz (bins of N_FFT at 16 kHz) nothing is a partial
ENVELOPE_SECONDS = 0.02  # a band's loudness envelope is smoothed over 20 ms (and two of its lowest periods)
RHYTHM_MAX_GAIN = 4.0  # the most one step lifts or cuts a band at a moment (12 dB)
ENVELOPE_FLOOR = 1e-4  # envelope levels 80 dB under the band's loudest moment count as that level


def sparsify(loop: torch.Tensor, amount: float, gradient: torch.Tensor | None = None) -> torch.Tensor:
    """Gate the loop's STFT against each frame's loudest cell, sparing cells in proportion to
    how hard the objective's `gradient` (same shape as the loop) pulls on them."""
    if amount <= 0:
        return loop
    spec, back = _short_time(loop)
    magnitude = _magnitude(spec)
    threshold = amount * SPARSITY_SHARE * magnitude.amax(dim=-2, keepdim=True)
    if gradient is not None:
        pull = _magnitude(_short_time(gradient)[0])
        flat = pull.flatten()  # its NEED_QUANTILE, by selection (a sort of every cell cost 28 ms)
        scale = flat.kthvalue(max(1, math.ceil(NEED_QUANTILE * flat.numel()))).values
        if scale > 0:
            threshold = threshold * (1.0 - (pull / scale).clamp(max=1.0))
    # 0 below the threshold, 1 from twice the threshold: a ramp, so the gate does not click
    gain = ((magnitude - threshold) / threshold.clamp_min(1e-12)).clamp(0.0, 1.0)
    return back(spec * gain)


def harmonics(loop: torch.Tensor, amount: float) -> torch.Tensor:
    """Move each short-time spectrum `amount` of the way toward the harmonic series of its
    partials: where the k-th overtone of a partial (bin k x b of a partial at bin b; the STFT's
    bins are linear in frequency) is quieter than 1/k of the partial, it is raised toward that
    with k times the partial's phase, so the overtone moves with its partial from frame to
    frame. Cells already louder than their overtone target are left alone, so repeated steps
    settle instead of piling up; noise (no peak 12 dB over its moment's mean magnitude) is left
    as it is."""
    if amount <= 0:
        return loop
    spec, back = _short_time(loop)
    magnitude = _magnitude(spec)
    bins = magnitude.shape[-2]
    below = torch.nn.functional.pad(magnitude[..., :-1, :], (0, 0, 1, 0))
    above = torch.nn.functional.pad(magnitude[..., 1:, :], (0, 0, 0, 1))
    floor = PARTIAL_OVER_MEAN * magnitude.mean(dim=-2, keepdim=True)
    partial = (magnitude >= below) & (magnitude >= above) & (magnitude > floor)
    partial[..., :LOWEST_PARTIAL_BIN, :] = False
    # the partial's unit phasor (0 where there is none); its k-th power turns with k times the
    # phase. Each cell takes the loudest overtone landing on it (not their sum), so the
    # sawtooth series 1/k is a fixed point: an overtone's own overtones ask for no more.
    phasor = torch.where(partial, spec / magnitude.clamp_min(1e-12), torch.zeros_like(spec))
    wanted = torch.zeros_like(magnitude)
    turn = torch.zeros_like(spec)
    power = phasor
    for k in range(2, OVERTONES + 1):
        reach = (bins - 1) // k + 1  # partials whose k-th overtone is below Nyquist
        power = power[..., :reach, :] * phasor[..., :reach, :]
        lent = torch.where(partial[..., :reach, :], magnitude[..., :reach, :] / k, torch.zeros_like(power.real))
        louder = lent > wanted[..., ::k, :]
        wanted[..., ::k, :] = torch.where(louder, lent, wanted[..., ::k, :])
        turn[..., ::k, :] = torch.where(louder, power, turn[..., ::k, :])
    lift = amount * (wanted - magnitude).clamp_min(0.0)
    moved = spec + lift * turn
    return back(moved)


def _short_time(loop: torch.Tensor):
    """The loop's circular STFT (spaces.stft) and the function that turns such a spectrum
    back into a loop of the same length."""
    samples = loop.shape[-1]
    pad = min(S.N_FFT, samples)
    window = torch.hann_window(S.N_FFT, device=loop.device)
    return S.stft(loop, pad, window), lambda spec: S.istft(spec, samples, pad, window)


def _magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec| of a complex tensor (the sum of squares is cheaper than complex abs on CPUs)."""
    return (spec.real.square() + spec.imag.square()).sqrt()


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
    The bands compared are those both the loop's rate and the reference have (a reference
    measured at 16 kHz, given to a 44.1-kHz loop, leaves its top octave at the gain of the
    octave below; `balance_file` gives such an ear the profile measured at its own rate)."""
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


def beat_repeat(loop: torch.Tensor, beats: int, weight: float, parts: int = 1) -> torch.Tensor:
    """Blend `weight` of the loop's average over its `beats` whole-beat rotations into it
    (`beats` periods of the loop: with `repeat_every` half_bar or bar, fewer and longer ones).
    With `parts` > 1 (a chord progression's parts) each part repeats its own beats: a
    part's beats are averaged with each other, not with another chord's."""
    if weight <= 0 or beats < 2:
        return loop
    if parts > 1:
        samples = loop.shape[-1]
        edges = [round(k * samples / parts) for k in range(parts + 1)]
        return torch.cat([beat_repeat(loop[..., a:b], beats // parts, weight) for a, b in zip(edges[:-1], edges[1:])],
                         dim=-1)
    return (1.0 - weight) * loop + weight * _over_beats(loop, beats)


def _over_beats(x: torch.Tensor, beats: int) -> torch.Tensor:
    """The mean of x [..., samples] over its `beats` whole-beat circular rotations."""
    samples = x.shape[-1]
    return sum(torch.roll(x, round(k * samples / beats), dims=-1) for k in range(beats)) / beats


def _circular_smooth(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [..., samples] convolved circularly with a unit-sum Hann window `width` samples long."""
    window = torch.hann_window(width + 2, periodic=False, dtype=x.dtype, device=x.device)[1:-1]
    kernel = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    kernel[:width] = window / window.sum()
    kernel = torch.roll(kernel, -(width // 2))  # centred: no delay
    return torch.fft.irfft(torch.fft.rfft(x) * torch.fft.rfft(kernel), n=x.shape[-1])


def rhythm_repeat(loop: torch.Tensor, beats: int, weight: float, sample_rate: int) -> torch.Tensor:
    """Move each octave band's loudness envelope `weight` of the way (geometrically) toward
    its average over the loop's `beats` whole-beat rotations; the band's content keeps its
    own pitches. The bands are cut from the loop's spectrum (brick-wall, circular), so they
    sum back to it exactly; gains move at most RHYTHM_MAX_GAIN per step."""
    if weight <= 0 or beats < 2:
        return loop
    samples = loop.shape[-1]
    spectrum = torch.fft.rfft(loop)
    freqs = torch.fft.rfftfreq(samples, 1.0 / sample_rate).to(loop.device)
    edges = octave_edges(sample_rate)
    edges[0], edges[-1] = 0.0, sample_rate  # the lowest band takes what is under it, the top one Nyquist
    out = torch.zeros_like(loop)
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = torch.fft.irfft(spectrum * ((freqs >= lo) & (freqs < hi)), n=samples)
        width = max(int(ENVELOPE_SECONDS * sample_rate), int(2.0 * sample_rate / max(lo, LOWEST_OCTAVE_HZ)))
        envelope = _circular_smooth(band.square(), min(width, samples)).clamp_min(0.0).sqrt()
        # no sync with a GPU to ask whether the band is silent: a silent one gets gain 1
        envelope = torch.maximum(envelope, ENVELOPE_FLOOR * envelope.max()).clamp_min(torch.finfo(envelope.dtype).tiny)
        gain = (_over_beats(envelope, beats) / envelope) ** weight
        out = out + band * gain.clamp(1.0 / RHYTHM_MAX_GAIN, RHYTHM_MAX_GAIN)
    return out


@lru_cache(maxsize=4)
def balance_file(sample_rate: int | None = None) -> str:
    """The shipped profile for an ear's rate: measured at that rate where one ships (a 44.1-kHz
    ear's reaches the 8-16 kHz octave), else the 16-kHz one (its bands are those all rates share)."""
    from immersions.paths import assets_dir

    if sample_rate is not None:
        own = assets_dir() / BALANCE_FILE.replace(".json", f"-{int(sample_rate)}.json")
        if own.is_file():
            return str(own)
    return str(assets_dir() / BALANCE_FILE)


def music_balance(path: str | None = None, sample_rate: int | None = None) -> tuple[float, ...]:
    """Real music's octave profile (dB per band from 31.25 Hz, loudness removed), shipped in
    assets/ and made by `immersions balance`: the one measured at `sample_rate` where there is
    one (see `balance_file`)."""
    if path is None:
        path = balance_file(sample_rate)
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
