"""Sound measures: does a dream sound like music? Small pure functions over a mono loop.

- `spectral_flatness`: how noise-like the spectrum is (1 = white noise, near 0 = a few
  tones). Median over frames of geometric / arithmetic mean of the power spectrum.
- `peak_energy_share`: how much of the energy sits in spectral peaks standing well above
  their neighbourhood (pitched content) rather than in a broad floor.
- `onset_repetition`: how strongly the onset-strength envelope repeats one beat and one bar
  later at the loop's tempo (a groove repeats; stationary noise does not).
- `harmonic_change`: how much the pitch classes sounding change from one beat to the next,
  on average (0 = every beat the same chord; real music's melodies and chords move).
- `octave_profile` / `balance_distance`: the spectrum's shape in octave bands, loudness
  removed, and its distance in dB from a reference (real music's mean profile).

A loop is circular: frames wrap around the end, the envelope's autocorrelation is circular.
Silence has no spectrum; measures that would divide by zero say None.
"""

from __future__ import annotations

import math

import numpy as np

from immersions.registry import beat_seconds

N_FFT = 1024
HOP = 256
SILENT_POWER = 1e-12  # mean power per bin below which a frame counts as silent (about -120 dB)
PEAK_RATIO = 10.0  # a spectral peak stands 10 dB above the median of its neighbourhood
PEAK_NEIGHBOURHOOD = 31  # bins (~500 Hz at 16 kHz / 1024): wider than a note's partial
LOWEST_OCTAVE_HZ = 31.25  # octave bands 31.25-62.5 Hz ... up to Nyquist
CHROMA_N_FFT = 4096  # 3.9 Hz bins at 16 kHz: semitones apart from 65 Hz up
CHROMA_HZ = (100.0, 2000.0)  # where notes and chords sit (fundamentals and first overtones)
STEADY_FLUX = 0.05  # an onset envelope varying by less than 0.5 dB (std) has no onsets to repeat


def power_frames(audio: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Power spectra [frames, bins] of a circular loop (Hann window)."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1 or len(audio) == 0:
        raise ValueError("a measure needs a mono loop with at least one sample")
    if len(audio) < n_fft:
        audio = np.tile(audio, -(-n_fft // len(audio)))
    wrapped = np.concatenate([audio, audio[:n_fft]])  # the last frame may start up to hop - 1 before the end
    starts = np.arange(0, len(audio), hop)
    frames = np.lib.stride_tricks.sliding_window_view(wrapped, n_fft)[starts]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2


def _sounding(power: np.ndarray) -> np.ndarray:
    return power[power.mean(axis=-1) > SILENT_POWER]


def spectral_flatness(audio: np.ndarray) -> float | None:
    """Median over sounding frames of geometric mean / arithmetic mean of the power (DC left out)."""
    power = _sounding(power_frames(audio)[:, 1:])
    if len(power) == 0:
        return None
    floor = power.mean(axis=-1, keepdims=True) * 1e-10  # a zero bin would make the geometric mean 0
    geometric = np.exp(np.log(power + floor).mean(axis=-1))
    return float(np.median(geometric / power.mean(axis=-1)))


def _local_median(power: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(power, size=(1, width), mode="nearest")


def peak_energy_share(audio: np.ndarray) -> float | None:
    """Share of all energy in bins that stand PEAK_RATIO above their neighbourhood's median.
    A sine gives about 1, white noise about 0.001 (an exponential variable's tail), clicks ~0."""
    power = _sounding(power_frames(audio)[:, 1:])
    if len(power) == 0:
        return None
    peaks = power > PEAK_RATIO * _local_median(power, PEAK_NEIGHBOURHOOD)
    return float(power[peaks].sum() / power.sum())


def _band_matrix(sample_rate: int, per_octave: int = 3) -> np.ndarray:
    """[bands, bins] 0/1: FFT bins summed into bands `1/per_octave` octave wide."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
    octaves = math.log2(sample_rate / 2 / LOWEST_OCTAVE_HZ)
    edges = LOWEST_OCTAVE_HZ * 2.0 ** (np.arange(int(octaves * per_octave) + 1) / per_octave)
    bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])])
    return bands[bands.any(axis=1)].astype(np.float64)


def onset_envelope(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Spectral flux in third-octave bands: per frame, the summed rise in log band power since
    the last frame (circular, so the first frame compares with the last). Bands, not bins: a
    steady tone's leakage flickers from bin to bin, its band power does not."""
    power = power_frames(audio) @ _band_matrix(sample_rate).T
    # levels 80 dB under the loudest frame are not heard; their rounding noise is no onset
    level = np.log10(power + max(SILENT_POWER, 1e-8 * float(power.sum(axis=-1).max())))
    rise = level - np.roll(level, 1, axis=0)
    return np.clip(rise, 0.0, None).sum(axis=-1)


def circular_autocorrelation(envelope: np.ndarray, lag: float) -> float:
    """Pearson correlation of a circular envelope with itself `lag` frames later; a fractional
    lag takes the better of the two nearest whole ones (an onset falls in one frame or the
    next). 0 for a constant envelope."""
    x = np.asarray(envelope, np.float64) - np.mean(envelope)
    variance = float((x * x).mean())
    if variance <= STEADY_FLUX**2:
        return 0.0
    lags = {int(math.floor(lag)), int(math.ceil(lag))}
    return max(float((x * np.roll(x, -k)).mean()) / variance for k in lags)


def onset_repetition(audio: np.ndarray, sample_rate: int, bpm: float, beats_per_bar: int = 4) -> dict[str, float]:
    """How strongly the onsets repeat one beat and one bar later (correlation, -1 .. 1)."""
    envelope = onset_envelope(audio, sample_rate)
    beat_frames = beat_seconds(bpm) * sample_rate / HOP
    out = {"beat": circular_autocorrelation(envelope, beat_frames)}
    bar_frames = beats_per_bar * beat_frames
    # a one-bar loop repeats itself trivially at its own length: no evidence of a groove
    out["bar"] = circular_autocorrelation(envelope, bar_frames) if bar_frames < len(envelope) - 1 else None
    return out


def best_tempo_repetition(audio: np.ndarray, sample_rate: int, low_bpm: float = 80.0,
                          high_bpm: float = 160.0) -> dict[str, float]:
    """For music of unknown tempo: the beat repetition at the tempo (whole BPM in
    low..high) where it is strongest, and that tempo."""
    envelope = onset_envelope(audio, sample_rate)
    best = max((circular_autocorrelation(envelope, beat_seconds(bpm) * sample_rate / HOP), float(bpm))
               for bpm in np.arange(low_bpm, high_bpm + 1))
    return {"beat": best[0], "bpm": best[1]}


def octave_edges(sample_rate: int) -> np.ndarray:
    """Edges of the octave bands a profile is measured in: from LOWEST_OCTAVE_HZ up to the top
    whole octave below Nyquist (8-16 kHz at 44.1 kHz, 4-8 kHz at 16 kHz)."""
    return LOWEST_OCTAVE_HZ * 2.0 ** np.arange(int(math.log2(sample_rate / 2 / LOWEST_OCTAVE_HZ)) + 1)


def octave_profile(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """Mean power per octave band (`octave_edges`) in dB, minus its mean over the bands
    (loudness removed)."""
    power = _sounding(power_frames(audio))
    if len(power) == 0:
        return None
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
    mean = power.mean(axis=0)
    edges = octave_edges(sample_rate)
    bands = [mean[(freqs >= lo) & (freqs < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])]
    db = 10.0 * np.log10(np.asarray(bands) + SILENT_POWER)
    return db - db.mean()


def balance_distance(profile: np.ndarray | None, reference: np.ndarray | None) -> float | None:
    """RMS difference in dB between two octave profiles (0 = the same spectral balance)."""
    if profile is None or reference is None:
        return None
    return float(np.sqrt(np.mean((np.asarray(profile) - np.asarray(reference)) ** 2)))


def beat_chroma(audio: np.ndarray, sample_rate: int, bpm: float) -> np.ndarray | None:
    """Per whole beat of the loop, its pitch-class profile [beats, 12] (power summed over
    CHROMA_HZ per semitone class, unit length); None when nothing sounds there or the loop is
    shorter than two beats."""
    beat = beat_seconds(bpm) * sample_rate
    beats = int(len(audio) // round(beat))
    hop = CHROMA_N_FFT // 4
    if beats < 2:
        return None
    power = power_frames(audio, CHROMA_N_FFT, hop)
    freqs = np.fft.rfftfreq(CHROMA_N_FFT, 1.0 / sample_rate)
    inside = (freqs >= CHROMA_HZ[0]) & (freqs <= min(CHROMA_HZ[1], sample_rate / 2))
    classes = np.round(12.0 * np.log2(freqs[inside] / 440.0)).astype(int) % 12
    chroma = np.stack([power[:, inside][:, classes == k].sum(axis=-1) for k in range(12)], axis=-1)
    # frames whose centre lies in the beat (a frame starts at its index * hop)
    owner = ((np.arange(len(power)) * hop + CHROMA_N_FFT // 2) % len(audio) / beat).astype(int)
    per_beat = np.stack([chroma[owner == b].sum(axis=0) for b in range(beats)])
    norms = np.linalg.norm(per_beat, axis=-1, keepdims=True)
    if float(norms.min()) <= SILENT_POWER * CHROMA_N_FFT:
        return None
    return per_beat / norms


def harmonic_change(audio: np.ndarray, sample_rate: int, bpm: float) -> float | None:
    """Mean over the loop's beats of 1 - cosine similarity between a beat's pitch-class
    profile and the next one's (circular): 0 when every beat sounds the same notes, near 1
    when every next beat's notes are all new; a chord change once a bar in a two-bar loop
    counts a quarter of its size. None when some beat is silent in CHROMA_HZ."""
    chroma = beat_chroma(np.asarray(audio, np.float64), sample_rate, bpm)
    if chroma is None:
        return None
    return float(np.mean(1.0 - (chroma * np.roll(chroma, -1, axis=0)).sum(axis=-1)))


def measure(audio: np.ndarray, sample_rate: int, bpm: float, reference: np.ndarray | None = None) -> dict:
    """Every measure of one loop, ready for JSON."""
    audio = np.asarray(audio, np.float64)
    repetition = onset_repetition(audio, sample_rate, bpm)
    profile = octave_profile(audio, sample_rate)
    return {
        "rms_db": float(10 * np.log10(np.mean(audio**2) + 1e-20)),
        "spectral_flatness": spectral_flatness(audio),
        "peak_energy_share": peak_energy_share(audio),
        "onset_repetition_beat": repetition["beat"],
        "onset_repetition_bar": repetition["bar"],
        "harmonic_change": harmonic_change(audio, sample_rate, bpm),
        "balance_distance_db": balance_distance(profile, reference),
        "octave_profile_db": None if profile is None else [round(float(v), 2) for v in profile],
    }
