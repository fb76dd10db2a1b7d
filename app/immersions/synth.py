"""Procedural house music: an endless, seeded corpus and the starter loops.

This room is the generator: training's unlimited corpus (`render_track`) and the starter
clips a performance begins from (`render_loop`, `write_starter_clips`, `START_CLIPS`, declared once in the registry).

Every seed is a different "track": tempo, key, mode, chord progression, drum sounds,
patterns, bass and chord timbres and the arrangement are all drawn from
`numpy.random.default_rng(seed)`, so the same seed always gives the same samples.

How it is built (a small drum machine plus two synth voices, like a 90s studio):

* Each voice is a small function that renders one hit or note from a simple physical
  or subtractive model: `kick()`, `clap()`, `snare()`, `hat()`, `perc()`, `crash()`,
  `bass_note()`, `chord_note()`.
* A track is a grid of 16th-note steps (with swing on the off 16ths). Patterns say on
  which steps a voice plays; the arrangement says which parts play in which section.
* Each distinct hit or note is rendered once and added at all its positions, which is
  what makes rendering fast (hundreds of times real time): the work is a few hundred
  short array additions, not per-sample synthesis of the whole track.
* The bass and chords sit on a bus that ducks under the kick (sidechain pumping), then
  a soft clipper and normalization put the peak at -1 dBFS.

Loops (`render_loop`) are rendered on a circular timeline: tails that run past the end
wrap around to the start, so the clip repeats without a click.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import signal

from immersions.audio.io import write_wav
from immersions.errors import ImmersionsError
from immersions.registry import START_CLIPS  # the kinds render_loop makes: the start_clip choices
from immersions.registry import BEATS_PER_BAR, bar_seconds, beat_seconds

log = logging.getLogger(__name__)


# The parts an arrangement switches on and off.
KICK, CLAP, HATS, PERC, BASS, CHORDS = "kick", "clap", "hats", "perc", "bass", "chords"
PARTS = (KICK, CLAP, HATS, PERC, BASS, CHORDS)

STEPS_PER_BAR = 16  # 16th notes in a 4/4 bar
PEAK = 10 ** (-1 / 20)  # -1 dBFS

# Scales as semitones above the key's root. House lives mostly in minor and dorian.
MODES: dict[str, tuple[int, ...]] = {
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
MODE_WEIGHTS = {"aeolian": 0.35, "dorian": 0.25, "phrygian": 0.08, "ionian": 0.2, "mixolydian": 0.12}

# Progressions as 0-based scale degrees (0 = i/I). Chords are stacked in thirds inside
# the mode, so the same degrees give minor 7ths in minor and major 7ths in major.
MINOR_PROGRESSIONS = (
    (0, 5, 2, 6),  # i - VI - III - VII
    (0, 6, 5, 6),  # i - VII - VI - VII
    (0, 3, 6, 2),  # i - iv - VII - III
    (0, 0, 3, 3),  # i - i - iv - iv: the deep-house vamp
    (0, 5, 3, 4),  # i - VI - iv - v
    (0, 3),  # i - iv
    (0, 6),  # i - VII
)
MAJOR_PROGRESSIONS = (
    (1, 4, 0, 5),  # ii - V - I - vi
    (0, 5, 3, 4),  # I - vi - IV - V
    (3, 4, 2, 5),  # IV - V - iii - vi
    (1, 4),  # ii - V
    (0, 3),  # I - IV
    (5, 3, 0, 4),  # vi - IV - I - V
)
PHRYGIAN_PROGRESSIONS = ((0, 1), (0, 1, 0, 6), (0, 5, 1, 0))  # the dark bII of phrygian

CHORD_TIMBRES = ("saws", "organ", "epiano", "pad")
BASS_WAVES = ("saw", "square", "sub", "fm")
PERC_KINDS = ("conga", "tom", "rim", "woodblock", "shaker", "cowbell")

# Chord tones as indices into the stack of thirds (0 root, 1 third, 2 fifth, 3 seventh, 4 ninth).
VOICINGS: dict[str, tuple[int, ...]] = {
    "triad": (0, 1, 2),
    "seventh": (0, 1, 2, 3),
    "ninth": (0, 1, 2, 3, 4),
    "rootless": (1, 2, 3, 4),  # the classic deep-house minor 9th: let the bass play the root
}

# Bass note tones: which chord tone a bass note plays.
ROOT, FIFTH, OCTAVE, SEVENTH, THIRD = 0, 1, 2, 3, 4

Pattern = tuple[float, ...]  # 16 velocities, 0 = no hit


@dataclass(frozen=True)
class TrackStyle:
    """Everything that varies per track. `from_seed` draws a coherent one."""

    bpm: float
    swing: float  # the off 16ths are late by this fraction of a 16th (0 = straight)
    key: int  # MIDI pitch class of the root, 0 = C
    mode: str = "aeolian"
    progression: tuple[int, ...] = (0, 5, 2, 6)
    chord_bars: int = 1  # bars per chord of the progression
    section_bars: int = 8  # length of the groove and drop sections (the others last 8 bars)
    variation: int = 0  # seeds the arrangement
    # kick: a sine that sweeps down in pitch, plus a click
    kick_start_hz: float = 150.0
    kick_end_hz: float = 50.0
    kick_pitch_decay: float = 0.03  # s, time constant of the pitch sweep
    kick_decay: float = 0.3  # s
    kick_click: float = 0.3
    kick_drive: float = 1.5
    # clap / snare on 2 and 4
    clap_kind: str = "clap"  # "clap", "snare" or "both"
    clap_hz: float = 1200.0  # centre of the noise band
    clap_decay: float = 0.15  # s, the tail
    snare_hz: float = 190.0  # the snare's drum-head tone
    clap_pattern: Pattern = (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0)
    # hats
    hat_hz: float = 7000.0  # high-pass cutoff: brightness
    hat_metal: float = 0.5  # 0 = pure noise, 1 = 808-style cluster of square waves
    hat_decay: float = 0.04  # s, closed hat
    open_hat_decay: float = 0.25  # s
    hat_pattern: Pattern = (0.7, 0, 1, 0) * 4
    open_hat_pattern: Pattern = (0,) * 16
    # percussion
    perc_kind: str = "conga"
    perc_hz: float = 300.0
    perc_pattern: tuple[tuple[int, int, float], ...] = ((3, 0, 0.8), (7, 1, 0.7), (14, 0, 0.8))  # step, variant, vel
    # bass
    bass_wave: str = "saw"
    bass_cutoff: float = 400.0  # Hz, resting cutoff of the resonant low-pass
    bass_env_octaves: float = 2.0  # how far the filter envelope opens it
    bass_filter_decay: float = 0.08  # s
    bass_resonance: float = 2.0  # Q
    bass_decay: float = 0.3  # s, amplitude decay toward the sustain level
    bass_register: int = 31  # MIDI: bass roots lie in [register, register + 12)
    bass_pattern: tuple[tuple[int, int, int], ...] = ((2, 2, ROOT), (6, 2, ROOT), (10, 2, ROOT), (14, 2, ROOT))
    # chords
    chord_timbre: str = "saws"
    chord_voicing: str = "seventh"
    chord_register: int = 62  # MIDI: voicings cluster within an octave around this note
    chord_cutoff: float = 1500.0  # Hz (saws/pad) or brightness (organ/epiano)
    chord_env_octaves: float = 1.5
    chord_detune_cents: float = 10.0
    chord_pattern: tuple[tuple[int, int], ...] = ((2, 2), (6, 2), (10, 2), (14, 2))  # step, length in steps
    # mix
    kick_level: float = 1.0
    clap_level: float = 0.45
    hat_level: float = 0.25
    perc_level: float = 0.3
    bass_level: float = 0.6
    chord_level: float = 0.35
    duck_depth: float = 0.5  # how far bass and chords dip under the kick
    duck_release: float = 0.12  # s

    @classmethod
    def from_seed(cls, seed: int) -> "TrackStyle":
        """A coherent random style: the same seed always gives the same style."""
        rng = _rng(seed, 0)
        mode = str(rng.choice(list(MODE_WEIGHTS), p=list(MODE_WEIGHTS.values())))
        if mode == "phrygian":
            progressions = PHRYGIAN_PROGRESSIONS + MINOR_PROGRESSIONS[:3]
        elif mode in ("aeolian", "dorian"):
            progressions = MINOR_PROGRESSIONS
        else:
            progressions = MAJOR_PROGRESSIONS
        progression = progressions[rng.integers(len(progressions))]
        # two-chord vamps change every bar, four-chord progressions now and then every 2 bars
        chord_bars = 1 if len(progression) == 2 or rng.random() < 0.65 else 2
        clap_kind = str(rng.choice(["clap", "snare", "both"], p=[0.55, 0.2, 0.25]))
        hat_pattern, open_hat_pattern = _hat_patterns(rng)
        perc_kind = str(rng.choice(PERC_KINDS))
        chord_timbre = str(rng.choice(CHORD_TIMBRES, p=[0.3, 0.25, 0.25, 0.2]))
        bass_wave = str(rng.choice(BASS_WAVES))
        perc_hz = {
            "conga": rng.uniform(180, 330),
            "tom": rng.uniform(90, 170),
            "rim": rng.uniform(420, 560),
            "woodblock": rng.uniform(700, 1300),
            "shaker": rng.uniform(3500, 7000),
            "cowbell": rng.uniform(480, 620),
        }[perc_kind]
        return cls(
            bpm=float(rng.uniform(118.0, 128.0)),
            swing=float(rng.uniform(0.0, 0.2)),
            key=int(rng.integers(12)),
            mode=mode,
            progression=tuple(int(d) for d in progression),
            chord_bars=chord_bars,
            section_bars=int(rng.choice([8, 16], p=[0.75, 0.25])),
            variation=int(rng.integers(2**31)),
            kick_start_hz=float(rng.uniform(110, 220)),
            kick_end_hz=float(rng.uniform(40, 60)),
            kick_pitch_decay=float(rng.uniform(0.015, 0.05)),
            kick_decay=float(rng.uniform(0.1, 0.24)),
            kick_click=float(rng.uniform(0.05, 0.5)),
            kick_drive=float(rng.uniform(1.0, 2.5)),
            clap_kind=clap_kind,
            clap_hz=float(rng.uniform(800, 2000)),
            clap_decay=float(rng.uniform(0.06, 0.18)),
            snare_hz=float(rng.uniform(160, 240)),
            clap_pattern=_clap_pattern(rng),
            hat_hz=float(rng.uniform(4000, 9500)),
            hat_metal=float(rng.uniform(0.0, 1.0)),
            hat_decay=float(rng.uniform(0.02, 0.07)),
            open_hat_decay=float(rng.uniform(0.15, 0.4)),
            hat_pattern=hat_pattern,
            open_hat_pattern=open_hat_pattern,
            perc_kind=perc_kind,
            perc_hz=float(perc_hz),
            perc_pattern=_perc_pattern(rng, perc_kind),
            bass_wave=bass_wave,
            bass_cutoff=float(rng.uniform(180, 900)),
            bass_env_octaves=float(rng.uniform(0.5, 3.5)),
            bass_filter_decay=float(rng.uniform(0.04, 0.2)),
            bass_resonance=float(rng.uniform(0.8, 4.0)),
            bass_decay=float(rng.uniform(0.1, 0.6)),
            bass_register=int(rng.integers(28, 36)),
            bass_pattern=_bass_pattern(rng),
            chord_timbre=chord_timbre,
            chord_voicing=str(rng.choice(list(VOICINGS))),
            chord_register=int(rng.integers(57, 69)),
            chord_cutoff=float(rng.uniform(700, 3500)),
            chord_env_octaves=float(rng.uniform(0.5, 2.5)),
            chord_detune_cents=float(rng.uniform(4, 22)),
            chord_pattern=_chord_pattern(rng, chord_timbre),
            kick_level=1.0,
            clap_level=float(rng.uniform(0.5, 0.8)),
            hat_level=float(rng.uniform(0.3, 0.5)),
            perc_level=float(rng.uniform(0.2, 0.35)),
            bass_level=float(rng.uniform(0.35, 0.55)),
            chord_level=float(rng.uniform(0.3, 0.5)),
            duck_depth=float(rng.uniform(0.35, 0.75)),
            duck_release=float(rng.uniform(0.08, 0.2)),
        )


@dataclass(frozen=True)
class Section:
    """A stretch of bars in which the same parts play."""

    name: str
    start_bar: int
    bars: int
    parts: frozenset[str]


# ----------------------------------------------------------------------------------
# random streams and small helpers


def _rng(seed: int, stream: int) -> np.random.Generator:
    """One independent generator per purpose (style, performance, noise sources).

    Any Python int works as a seed: negatives are taken in two's complement.
    """
    return np.random.default_rng([stream, int(seed) & (2**64 - 1)])


def _time(n: int, sample_rate: int) -> np.ndarray:
    return np.arange(n) / sample_rate


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _attack(y: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Linear fade-in: every hit starts from zero so that no onset clicks."""
    n = min(len(y), max(1, int(seconds * sample_rate)))
    y[:n] *= np.arange(n) / n
    return y


def _fade_out(y: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Raised-cosine fade to zero at the end, so tails never stop with a step."""
    n = min(len(y), max(1, int(seconds * sample_rate)))
    y[len(y) - n :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, n + 1) / n)
    return y


def _normalize(y: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(y)) if len(y) else 0.0
    return y / peak if peak > 0 else y


def _nyquist_safe(hz: float, sample_rate: int, fraction: float = 0.42) -> float:
    """Clamp a filter frequency below Nyquist (brightness saturates at 16 kHz)."""
    return min(hz, fraction * sample_rate)


def _saw(freq: float, n: int, sample_rate: int, phase: float = 0.0) -> np.ndarray:
    """Band-limited sawtooth (polyBLEP): a naive saw aliases badly at 16 kHz."""
    dt = freq / sample_rate
    p = (phase + dt * np.arange(n)) % 1.0
    y = 2.0 * p - 1.0
    lo = p < dt  # just after the wrap: smooth the step with a polynomial
    t = p[lo] / dt
    y[lo] -= 2 * t - t * t - 1
    hi = p > 1.0 - dt  # just before the wrap
    t = (p[hi] - 1.0) / dt
    y[hi] -= t * t + 2 * t + 1
    return y


def _square(freq: float, n: int, sample_rate: int, phase: float = 0.0) -> np.ndarray:
    """Band-limited square: the difference of two saws half a cycle apart."""
    return 0.5 * (_saw(freq, n, sample_rate, phase) - _saw(freq, n, sample_rate, phase + 0.5))


def _lowpass_coefficients(cutoff: np.ndarray, q: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ cookbook resonant low-pass biquads, one row per cutoff."""
    w0 = 2 * np.pi * np.asarray(cutoff, dtype=float) / sample_rate
    cw, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    a0 = 1 + alpha
    b = np.stack([(1 - cw) / 2, 1 - cw, (1 - cw) / 2], axis=-1) / a0[..., None]
    a = np.stack([a0, -2 * cw, 1 - alpha], axis=-1) / a0[..., None]
    return b, a


def _lowpass_sweep(
    x: np.ndarray, sample_rate: int, cutoff_at: Callable[[np.ndarray], np.ndarray], q: float, block_s: float = 0.002
) -> np.ndarray:
    """Resonant low-pass whose cutoff follows `cutoff_at(t)` (Hz), updated every `block_s`.

    This is the analog synth's filter envelope. The biquad's coefficients change per
    2 ms block and its state carries over; once the cutoff has settled the rest of the
    note is filtered in one call, so a note costs a few dozen short `lfilter` calls.
    """
    n = len(x)
    block = max(8, int(round(block_s * sample_rate)))
    starts = np.arange(0, n, block)
    cutoff = np.clip(cutoff_at(starts / sample_rate), 20.0, 0.45 * sample_rate)
    b, a = _lowpass_coefficients(cutoff, q, sample_rate)
    moving = np.nonzero(np.abs(np.log2(cutoff / cutoff[-1])) > 0.01)[0]
    n_moving = int(moving[-1]) + 1 if len(moving) else 0
    y = np.empty(n)
    zi = np.zeros(2)
    for i in range(n_moving):
        s = starts[i]
        y[s : s + block], zi = signal.lfilter(b[i], a[i], x[s : s + block], zi=zi)
    rest = n_moving * block
    if rest < n:
        y[rest:], _ = signal.lfilter(b[-1], a[-1], x[rest:], zi=zi)
    return y


# ----------------------------------------------------------------------------------
# drum voices: each returns one hit, peak-normalized to 1


def kick(style: TrackStyle, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sine sweeping down from kick_start_hz to kick_end_hz (the drum head's pitch
    drop), a punchy amplitude envelope, tanh drive for harmonics that small speakers
    can reproduce, and a short noise click for the beater."""
    n = int(sample_rate * (3.0 * style.kick_decay + 0.05))
    t = _time(n, sample_rate)
    freq = style.kick_end_hz + (style.kick_start_hz - style.kick_end_hz) * np.exp(-t / style.kick_pitch_decay)
    phase = 2 * np.pi * (np.cumsum(freq) - freq[0]) / sample_rate
    # exponent 1.5: holds its level a moment, then falls faster than exponential
    amp = np.exp(-((t / style.kick_decay) ** 1.5))
    body = np.tanh(style.kick_drive * np.sin(phase) * amp) / np.tanh(style.kick_drive)
    click_n = max(4, int(0.004 * sample_rate))
    hp = signal.butter(2, _nyquist_safe(1500.0, sample_rate), "highpass", fs=sample_rate, output="sos")
    click = signal.sosfilt(hp, rng.standard_normal(click_n)) * np.exp(-t[:click_n] / 0.001)
    body[:click_n] += style.kick_click * click / (np.max(np.abs(click)) + 1e-9)
    _attack(body, sample_rate, 0.0005)
    return _normalize(_fade_out(body, sample_rate, 0.01))


def clap(style: TrackStyle, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Hand claps: band-passed noise retriggered 3-4 times within ~30 ms (several
    hands not quite together), then a longer tail, the room."""
    n = int(sample_rate * (0.04 + 5 * style.clap_decay))
    t = _time(n, sample_rate)
    low, high = style.clap_hz / 1.6, _nyquist_safe(style.clap_hz * 1.6, sample_rate)
    sos = signal.butter(2, [low, high], "bandpass", fs=sample_rate, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(n))
    env = np.zeros(n)
    onsets = np.cumsum([0.0] + list(rng.uniform(0.006, 0.012, size=int(rng.integers(2, 4)))))
    for onset in onsets:
        env += np.where(t >= onset, np.exp(-(t - onset) / 0.004), 0.0)
    last = onsets[-1]
    env += 0.6 * np.where(t >= last, np.exp(-(t - last) / style.clap_decay), 0.0)
    y = noise * env
    _attack(y, sample_rate, 0.0005)
    return _normalize(_fade_out(y, sample_rate, 0.02))


def snare(style: TrackStyle, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A drum head's two lowest modes (tonal body) plus high-passed noise (the wires)."""
    n = int(sample_rate * (0.03 + 4 * style.clap_decay))
    t = _time(n, sample_rate)
    f = style.snare_hz * (1 + 0.3 * np.exp(-t / 0.01))  # the head drops slightly in pitch
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    body = np.sin(phase) * np.exp(-t / 0.06) + 0.5 * np.sin(1.6 * phase) * np.exp(-t / 0.035)
    hp = signal.butter(2, _nyquist_safe(1800.0, sample_rate), "highpass", fs=sample_rate, output="sos")
    wires = signal.sosfilt(hp, rng.standard_normal(n)) * np.exp(-t / (0.6 * style.clap_decay))
    y = 0.6 * body + 0.5 * wires / (np.max(np.abs(wires)) + 1e-9)
    _attack(y, sample_rate, 0.0005)
    return _normalize(_fade_out(y, sample_rate, 0.02))


# The six square-wave oscillators of the TR-808 cymbal/hat circuit (Hz).
_808_METAL = (205.3, 304.4, 369.6, 522.7, 540.0, 800.0)


def hat(
    style: TrackStyle, sample_rate: int, rng: np.random.Generator, decay: float, cutoff_scale: float = 1.0
) -> np.ndarray:
    """Hi-hat: a mix of white noise and the 808's inharmonic square-wave cluster,
    high-passed (hat_hz sets the brightness), with a short (closed) or long (open) decay."""
    n = int(sample_rate * (5 * decay + 0.01))
    t = _time(n, sample_rate)
    metal = np.zeros(n)
    for f in _808_METAL:  # their clashing harmonics (aliased, too) are the metallic ring
        metal += np.sign(np.sin(2 * np.pi * f * 1.7 * t + rng.uniform(0, 2 * np.pi)))
    source = style.hat_metal * metal / len(_808_METAL) + (1 - style.hat_metal) * rng.standard_normal(n) * 0.6
    cutoff = _nyquist_safe(style.hat_hz * cutoff_scale, sample_rate)
    sos = signal.butter(4, cutoff, "highpass", fs=sample_rate, output="sos")
    y = signal.sosfilt(sos, source) * np.exp(-t / decay)
    _attack(y, sample_rate, 0.0003)
    return _normalize(_fade_out(y, sample_rate, min(0.02, decay)))


def crash(style: TrackStyle, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A long metallic wash that marks the start of a drop."""
    return hat(replace(style, hat_metal=0.4), sample_rate, rng, decay=0.6, cutoff_scale=0.55)


def perc(style: TrackStyle, sample_rate: int, rng: np.random.Generator, variant: int) -> np.ndarray:
    """The percussion voice: variant 0 is the low drum / first sound, 1 the high one."""
    kind = style.perc_kind
    pitch = style.perc_hz * (1.0, 1.5)[variant]
    if kind == "shaker":
        pitch = style.perc_hz * (1.0, 1.25)[variant]
        n = int(0.12 * sample_rate)
        t = _time(n, sample_rate)
        low = _nyquist_safe(pitch / 1.5, sample_rate, 0.3)
        sos = signal.butter(2, [low, _nyquist_safe(pitch * 1.5, sample_rate)], "bandpass", fs=sample_rate, output="sos")
        env = (1 - np.exp(-t / 0.012)) * np.exp(-t / (0.035 if variant == 0 else 0.02))
        y = signal.sosfilt(sos, rng.standard_normal(n)) * env
    elif kind == "cowbell":
        # the 808 cowbell: two square waves a fifth-ish apart through a band-pass
        n = int(0.3 * sample_rate)
        t = _time(n, sample_rate)
        ratio = 800.0 / 540.0
        tone = _square(pitch, n, sample_rate) + _square(pitch * ratio, n, sample_rate)
        band = [pitch * 0.8, _nyquist_safe(pitch * 3.0, sample_rate)]
        sos = signal.butter(2, band, "bandpass", fs=sample_rate, output="sos")
        env = 0.7 * np.exp(-t / 0.015) + 0.3 * np.exp(-t / (0.08 if variant == 0 else 0.05))
        y = signal.sosfilt(sos, tone) * env
    else:
        # membranes and blocks: decaying sines with a pitch drop and inharmonic partials
        decay, drop, partials = {
            "conga": (0.08, 0.25, ((1.0, 1.0),)),
            "tom": (0.14, 0.6, ((1.0, 1.0), (1.5, 0.3))),
            "rim": (0.018, 0.05, ((1.0, 1.0), (3.66, 0.7))),
            "woodblock": (0.045, 0.02, ((1.0, 1.0), (2.76, 0.35))),
        }[kind]
        n = int(sample_rate * (5 * decay + 0.01))
        t = _time(n, sample_rate)
        f = pitch * (1 + drop * np.exp(-t / 0.012))
        phase = 2 * np.pi * np.cumsum(f) / sample_rate
        y = np.zeros(n)
        for ratio, gain in partials:
            if ratio * pitch < 0.45 * sample_rate:
                y += gain * np.sin(ratio * phase) * np.exp(-t * ratio / decay)
        slap_n = int(0.003 * sample_rate)
        hp = signal.butter(2, _nyquist_safe(2000.0, sample_rate), "highpass", fs=sample_rate, output="sos")
        slap = signal.sosfilt(hp, rng.standard_normal(slap_n)) * np.exp(-t[:slap_n] / 0.0008)
        y[:slap_n] += 0.3 * slap
        if kind == "rim":
            y = np.tanh(2.5 * y)  # the rim shot's hard, clipped knock
    _attack(y, sample_rate, 0.0005 if kind != "shaker" else 0.002)
    return _normalize(_fade_out(y, sample_rate, 0.01))


# ----------------------------------------------------------------------------------
# pitched voices


def bass_note(
    style: TrackStyle, sample_rate: int, midi: int, seconds: float, accent: float, rng: np.random.Generator
) -> np.ndarray:
    """One bass note of `seconds` (gate length) plus a short release.

    saw/square: a subtractive mono synth, oscillator into a resonant low-pass whose
    cutoff jumps up at the note start and decays back (accent opens it further).
    sub: a sine with a touch of 2nd and 3rd harmonic, the deep-house organ bass.
    fm: a sine phase-modulated by itself with a decaying index, a plucky bass.
    """
    release = 0.015
    n = int(sample_rate * (seconds + release))
    t = _time(n, sample_rate)
    f = _hz(midi)
    if style.bass_wave in ("saw", "square"):
        osc = _saw(f, n, sample_rate) if style.bass_wave == "saw" else _square(f, n, sample_rate)
        env_oct = style.bass_env_octaves * (0.6 + 0.6 * accent)
        cutoff = lambda tt: style.bass_cutoff * 2.0 ** (env_oct * np.exp(-tt / style.bass_filter_decay))  # noqa: E731
        y = _lowpass_sweep(osc, sample_rate, cutoff, style.bass_resonance)
    elif style.bass_wave == "sub":
        w = 2 * np.pi * f * t
        y = np.sin(w) + 0.25 * np.sin(2 * w) + 0.1 * np.sin(3 * w)
    else:  # fm
        index = 0.4 + (1.0 + accent) * 1.5 * np.exp(-t / style.bass_filter_decay)
        w = 2 * np.pi * f * t
        y = np.sin(w + index * np.sin(w))
    sustain = 0.55
    amp = sustain + (1 - sustain) * np.exp(-t / style.bass_decay)
    gate_end = int(seconds * sample_rate)
    amp[gate_end:] *= np.linspace(1.0, 0.0, n - gate_end)
    y = np.tanh(1.5 * _normalize(y) * amp)
    _attack(y, sample_rate, 0.003)
    return _normalize(_fade_out(y, sample_rate, 0.003))


_DRAWBARS = ((0.5, 0.6), (1.0, 1.0), (2.0, 0.8), (3.0, 0.5), (4.0, 0.45), (6.0, 0.2), (8.0, 0.25))


def chord_note(
    style: TrackStyle, sample_rate: int, pitches: tuple[int, ...], seconds: float, rng: np.random.Generator
) -> np.ndarray:
    """One chord (all its notes) held for `seconds`, with the timbre's own release.

    saws: detuned sawtooth pairs through a filter envelope, the classic stab.
    organ: additive drawbar sines (the M1 organ of 90s house), with a percussive 2nd/3rd.
    epiano: two-operator FM, a Rhodes-like tine whose brightness decays.
    pad: three detuned saws per note, slow attack and release, low-passed: a string pad.
    """
    timbre = style.chord_timbre
    release = {"saws": 0.04, "organ": 0.05, "epiano": 0.25, "pad": 0.5}[timbre]
    n = int(sample_rate * (seconds + release))
    t = _time(n, sample_rate)
    y = np.zeros(n)
    detune = style.chord_detune_cents
    for midi in pitches:
        f = _hz(midi)
        if timbre in ("saws", "pad"):
            cents = (-detune / 2, detune / 2) if timbre == "saws" else (-detune, 0.0, detune)
            for c in cents:
                y += _saw(f * 2 ** (c / 1200), n, sample_rate, rng.uniform())
        elif timbre == "organ":
            for ratio, gain in _DRAWBARS:
                fh = f * ratio
                if fh < 0.45 * sample_rate:
                    bright = 1 / (1 + (fh / (2 * style.chord_cutoff)) ** 2)  # the cutoff darkens high drawbars
                    y += gain * bright * np.sin(2 * np.pi * fh * t)
            w = 2 * np.pi * f * t
            y += 0.4 * (np.sin(2 * w) + np.sin(3 * w)) * np.exp(-t / 0.08)  # percussion drawbar
        else:  # epiano
            index = 0.2 + 2.5 * (style.chord_cutoff / 3500) * np.exp(-t / 0.25)
            w = 2 * np.pi * f * t
            y += np.sin(w + index * np.sin(w))
            if 14 * f < 0.45 * sample_rate:  # the tine's brief high "ping"
                y += 0.15 * np.sin(14 * w) * np.exp(-t / 0.02)
    gate_end = min(n, int(seconds * sample_rate))
    if timbre == "saws":
        cutoff = lambda tt: style.chord_cutoff * 2.0 ** (style.chord_env_octaves * np.exp(-tt / 0.12))  # noqa: E731
        y = _lowpass_sweep(y, sample_rate, cutoff, 1.2)
        amp = 0.6 + 0.4 * np.exp(-t / 0.15)
        attack = 0.003
    elif timbre == "pad":
        cutoff_hz = _nyquist_safe(0.8 * style.chord_cutoff, sample_rate)
        sos = signal.butter(2, cutoff_hz, "lowpass", fs=sample_rate, output="sos")
        y = signal.sosfilt(sos, y)
        amp = np.ones(n)
        attack = min(0.25, 0.4 * seconds)
    elif timbre == "organ":
        amp = np.ones(n)
        attack = 0.004
    else:
        amp = np.exp(-t / 1.2)
        attack = 0.002
    amp[gate_end:] *= np.exp(-(t[gate_end:] - t[gate_end]) / (release / 4))
    y = _normalize(y) * amp
    _attack(y, sample_rate, attack)
    return _normalize(_fade_out(y, sample_rate, 0.005))


# ----------------------------------------------------------------------------------
# harmony


def chord_tones(style: TrackStyle, degree: int) -> tuple[int, tuple[int, ...]]:
    """(root pitch class, intervals of the stack of thirds: root, 3rd, 5th, 7th, 9th)."""
    scale = MODES[style.mode]

    def tone(i: int) -> int:
        return scale[(degree + i) % 7] + 12 * ((degree + i) // 7)

    root = tone(0)
    return (style.key + root) % 12, tuple(tone(2 * k) - root for k in range(5))


def chord_pitches(style: TrackStyle, degree: int) -> tuple[int, ...]:
    """MIDI notes of the chord stab: the voicing's pitch classes placed within an octave
    around chord_register. Close placement gives smooth voice leading for free."""
    root, intervals = chord_tones(style, degree)
    indices = VOICINGS[style.chord_voicing]
    if intervals[4] % 12 == 1:  # a minor 9th over the root (phrygian i) is too harsh for a pad
        indices = tuple(i for i in indices if i != 4) or (0, 1, 2)
    low = style.chord_register - 6
    return tuple(sorted(low + (root + intervals[i] - low) % 12 for i in indices))


def bass_pitch(style: TrackStyle, degree: int, tone: int) -> int:
    root, intervals = chord_tones(style, degree)
    midi = style.bass_register + (root - style.bass_register) % 12
    return midi + {ROOT: 0, FIFTH: intervals[2], OCTAVE: 12, SEVENTH: intervals[3], THIRD: intervals[1]}[tone]


# ----------------------------------------------------------------------------------
# patterns (drawn once per track by TrackStyle.from_seed)


def _accents(rng: np.random.Generator) -> np.ndarray:
    """Hat velocities: off-beat 8ths loudest, downbeats medium, other 16ths soft."""
    base = np.array([0.65 if s % 4 == 0 else 0.95 if s % 4 == 2 else 0.5 for s in range(16)])
    return base * rng.uniform(0.85, 1.0, size=16)


def _hat_patterns(rng: np.random.Generator) -> tuple[Pattern, Pattern]:
    kind = rng.choice(["offbeat_open", "sixteenths", "eighths", "offbeat_closed"])
    acc = _accents(rng)
    closed, opened = np.zeros(16), np.zeros(16)
    offbeats = np.array([2, 6, 10, 14])
    if kind == "offbeat_open":  # the open hat on every "and": the house hat
        opened[offbeats] = acc[offbeats]
        density = rng.uniform(0.2, 0.7)
        for s in range(16):
            if opened[s] == 0 and opened[s - 1] == 0 and rng.random() < density:
                closed[s] = acc[s]
    elif kind == "sixteenths":
        closed[:] = acc
        if rng.random() < 0.6:
            s = int(rng.choice([6, 14]))
            closed[s], opened[s] = 0.0, acc[s]
            closed[(s + 1) % 16] = 0.0  # let the open hat ring for a moment
    elif kind == "eighths":
        closed[::2] = acc[::2]
        if rng.random() < 0.5:
            closed[14], opened[14] = 0.0, acc[14]
    else:  # off-beat closed hats with soft ghost 16ths
        closed[offbeats] = acc[offbeats]
        ghosts = rng.random(16) < rng.uniform(0.1, 0.4)
        ghosts[offbeats] = False
        closed[ghosts] = 0.35 * acc[ghosts]
    return tuple(float(v) for v in closed), tuple(float(v) for v in opened)


def _clap_pattern(rng: np.random.Generator) -> Pattern:
    p = np.zeros(16)
    p[[4, 12]] = 1.0
    if rng.random() < 0.3:  # a soft ghost hit pushes the groove
        p[int(rng.choice([7, 10, 15]))] = rng.uniform(0.3, 0.5)
    return tuple(float(v) for v in p)


def _perc_pattern(rng: np.random.Generator, kind: str) -> tuple[tuple[int, int, float], ...]:
    """Syncopated: off 16ths and "ands" are likelier than downbeats (which the kick owns)."""
    weights = np.array([0.2 if s % 4 == 0 else 0.8 if s % 4 == 2 else 1.0 for s in range(16)])
    hits = int(rng.integers(8, 14)) if kind == "shaker" else int(rng.integers(3, 8))
    steps = np.sort(rng.choice(16, size=hits, replace=False, p=weights / weights.sum()))
    return tuple((int(s), int(rng.integers(2)), float(rng.uniform(0.55, 1.0))) for s in steps)


_BASS_TEMPLATES = {
    "offbeat": ((2, 2, ROOT), (6, 2, ROOT), (10, 2, ROOT), (14, 2, ROOT)),
    "octaves": tuple((s + d, 1, OCTAVE if d else ROOT) for s in (2, 6, 10, 14) for d in (0, 1)),  # the disco octave
    "deep": ((0, 3, ROOT), (3, 3, ROOT), (6, 2, FIFTH), (10, 3, ROOT), (13, 3, OCTAVE)),
    "garage": ((2, 1, ROOT), (3, 2, ROOT), (7, 1, FIFTH), (10, 1, ROOT), (11, 2, ROOT), (14, 2, OCTAVE)),
    "rolling": tuple((s, 1, OCTAVE if s % 4 == 3 else ROOT) for s in range(16) if s % 4 != 0),
}


def _bass_pattern(rng: np.random.Generator) -> tuple[tuple[int, int, int], ...]:
    names = list(_BASS_TEMPLATES) + ["random"]
    name = names[rng.integers(len(names))]
    if name != "random":
        notes = list(_BASS_TEMPLATES[name])
        if rng.random() < 0.5:  # vary one note's tone so templates don't repeat exactly
            i = int(rng.integers(len(notes)))
            notes[i] = (notes[i][0], notes[i][1], int(rng.choice([OCTAVE, FIFTH, SEVENTH])))
        return tuple(notes)
    weights = np.array([0.25 if s % 4 == 0 else 1.0 if s % 4 == 2 else 0.7 for s in range(16)])
    steps = np.sort(rng.choice(16, size=int(rng.integers(4, 8)), replace=False, p=weights / weights.sum()))
    ends = np.append(steps[1:], 16)
    tones = [ROOT, ROOT, ROOT, FIFTH, OCTAVE, SEVENTH, THIRD]
    return tuple(
        (int(s), int(min(rng.integers(1, 4), e - s)), int(tones[rng.integers(len(tones))])) for s, e in zip(steps, ends)
    )


_CHORD_TEMPLATES = (
    ((2, 1), (6, 1), (10, 1), (14, 1)),  # off-beat stabs
    ((2, 2), (6, 2), (10, 2), (14, 2)),
    ((0, 3), (3, 3), (6, 4), (10, 3), (13, 3)),  # the syncopated "house piano"
    ((3, 2), (6, 2), (11, 2), (14, 2)),
    ((2, 2), (7, 1), (10, 2)),
    ((0, 6), (6, 4), (10, 6)),  # longer chords
)


def _chord_pattern(rng: np.random.Generator, timbre: str) -> tuple[tuple[int, int], ...]:
    if timbre == "pad":
        return ((0, 16),)  # held; the renderer stretches it over the chord's bars
    if rng.random() < 0.8:
        return _CHORD_TEMPLATES[rng.integers(len(_CHORD_TEMPLATES))]
    steps = np.sort(rng.choice([0, 2, 3, 6, 7, 10, 11, 13, 14], size=int(rng.integers(2, 5)), replace=False))
    ends = np.append(steps[1:], 16)
    return tuple((int(s), int(min(rng.integers(1, 4), e - s))) for s, e in zip(steps, ends))


# ----------------------------------------------------------------------------------
# arrangement


def arrangement(style: TrackStyle, n_bars: int) -> list[Section]:
    """The sections of a track of `n_bars` bars, drawn from style.variation.

    A DJ-friendly shape: intro (kick and hats), build (bass and clap come in), groove
    (everything, one part resting), breakdown (no kick, no bass: chords alone), drop
    (everything, with a crash); then groove / breakdown / drop again. Some tracks
    start further in, so that short excerpts are not all intros.
    """
    rng = _rng(style.variation, 1)

    def maybe(part: str, p: float) -> set[str]:
        return {part} if rng.random() < p else set()

    def parts(name: str) -> frozenset[str]:
        if name == "intro":
            return frozenset({KICK, HATS} | maybe(PERC, 0.4))
        if name == "build":
            return frozenset({KICK, HATS, CLAP, BASS} | maybe(PERC, 0.6))
        if name == "groove":
            resting = rng.choice([PERC, CHORDS, HATS, CLAP])
            return frozenset(p for p in PARTS if p != resting)
        if name == "breakdown":
            return frozenset({CHORDS} | maybe(HATS, 0.5) | maybe(PERC, 0.5) | maybe(CLAP, 0.2))
        return frozenset(PARTS)  # drop

    names = ["intro", "build", "groove", "breakdown", "drop"]
    names = names[int(rng.choice([0, 1, 2], p=[0.5, 0.25, 0.25])) :]
    sections: list[Section] = []
    bar = 0
    while bar < n_bars:
        if not names:
            names = ["groove", "breakdown", "drop"] if rng.random() < 0.6 else ["groove", "groove", "breakdown", "drop"]
        name = names.pop(0)
        # groove and drop are the long sections; intro, build and breakdown stay short
        length = style.section_bars if name in ("groove", "drop") else 8
        bars = min(length, n_bars - bar)
        sections.append(Section(name, bar, bars, parts(name)))
        bar += bars
    return sections


# ----------------------------------------------------------------------------------
# the renderer


class _Timeline:
    """A sample buffer that hits are added into; circular for loops (tails wrap)."""

    def __init__(self, n: int, circular: bool):
        self.buf = np.zeros(n, dtype=np.float32)  # float32: an hour at 16 kHz is 230 MB, not 460
        self.circular = circular

    def add(self, hit: np.ndarray, pos: int, gain: float = 1.0) -> None:
        n = len(self.buf)
        if n == 0:
            return
        if self.circular:
            pos %= n
            done = 0
            while done < len(hit):
                m = min(len(hit) - done, n - pos)
                self.buf[pos : pos + m] += gain * hit[done : done + m]
                done += m
                pos = 0
            return
        if pos < 0:
            hit, pos = hit[-pos:], 0
        if pos >= n:
            return
        m = min(len(hit), n - pos)
        self.buf[pos : pos + m] += gain * hit[:m]


def _render(
    style: TrackStyle,
    sections: list[Section],
    n_samples: int,
    sample_rate: int,
    rng: np.random.Generator,
    circular: bool = False,
    sound_seed: int = 0,
) -> np.ndarray:
    """Play `sections` of `style` into a buffer of n_samples; returns the raw mix."""
    sr = sample_rate
    step_s = beat_seconds(style.bpm) / 4
    sounds = _rng(sound_seed, 2)  # noise sources of the hits: fixed per track

    def at(step: int, jitter_s: float = 0.0) -> int:
        """Sample position of a global 16th step: swing delays the off 16ths."""
        late = style.swing * step_s if step % 2 else 0.0
        jitter = rng.normal(0.0, jitter_s) if jitter_s else 0.0
        return int(round((step * step_s + late + jitter) * sr))

    def vel(v: float, spread: float = 0.06) -> float:
        return float(np.clip(v * (1 + rng.normal(0.0, spread)), 0.05, 1.2))

    drums = _Timeline(n_samples, circular)
    music = _Timeline(n_samples, circular)  # ducked under the kick
    fx = _Timeline(n_samples, circular)

    kick_hit = kick(style, sr, sounds)
    clap_hits = {"clap": [clap(style, sr, sounds)], "snare": [snare(style, sr, sounds)]}
    clap_hits["both"] = [0.8 * clap_hits["clap"][0], 0.6 * clap_hits["snare"][0]]
    clap_hit_list = clap_hits[style.clap_kind]
    closed_hit = hat(style, sr, sounds, style.hat_decay)
    open_hit = hat(style, sr, sounds, style.open_hat_decay, cutoff_scale=0.85)
    perc_hits = [perc(style, sr, sounds, 0), perc(style, sr, sounds, 1)]
    notes: dict[tuple, np.ndarray] = {}  # each distinct bass note / chord is rendered once

    kick_positions: list[int] = []
    closed_positions: list[int] = []
    open_events: list[tuple[int, float]] = []
    gate = 0.85
    for section in sections:
        last_step = (section.start_bar + section.bars) * STEPS_PER_BAR
        for bar in range(section.start_bar, section.start_bar + section.bars):
            first = bar * STEPS_PER_BAR
            degree = style.progression[(bar // style.chord_bars) % len(style.progression)]
            if KICK in section.parts:
                for s in (0, 4, 8, 12):  # four on the floor, tight: no timing jitter
                    pos = at(first + s)
                    drums.add(kick_hit, pos, style.kick_level * vel(1.0, 0.03))
                    kick_positions.append(pos)
            if CLAP in section.parts:
                for s, v in enumerate(style.clap_pattern):
                    if v:
                        pos, g = at(first + s, 0.002), style.clap_level * vel(v)
                        for h in clap_hit_list:
                            drums.add(h, pos, g)
            if HATS in section.parts:
                for s in range(16):
                    if style.hat_pattern[s]:
                        pos = at(first + s, 0.0015)
                        drums.add(closed_hit, pos, style.hat_level * vel(style.hat_pattern[s], 0.1))
                        closed_positions.append(pos)
                    if style.open_hat_pattern[s]:
                        pos = at(first + s, 0.0015)
                        open_events.append((pos, style.hat_level * vel(style.open_hat_pattern[s], 0.1)))
            if PERC in section.parts:
                for s, variant, v in style.perc_pattern:
                    drums.add(perc_hits[variant], at(first + s, 0.002), style.perc_level * vel(v, 0.1))
            if BASS in section.parts:
                for s, length, tone in style.bass_pattern:
                    accent = 1.0 if (s % 4 == 2) else 0.5
                    key = ("bass", bass_pitch(style, degree, tone), length, accent)
                    if key not in notes:
                        notes[key] = bass_note(style, sr, key[1], length * step_s * gate, accent, sounds)
                    music.add(notes[key], at(first + s, 0.001), style.bass_level * vel(1.0, 0.05))
            pad = style.chord_timbre == "pad"
            # a pad holds its chord over all the chord's bars: it starts only on the first
            if CHORDS in section.parts and not (pad and (bar - section.start_bar) % style.chord_bars):
                for s, length in style.chord_pattern:
                    if pad:
                        length = min(16 * style.chord_bars, last_step - first)
                    key = ("chord", degree, length)
                    if key not in notes:
                        seconds = length * step_s * (1.0 if pad else 0.8)
                        notes[key] = chord_note(style, sr, chord_pitches(style, degree), seconds, sounds)
                    music.add(notes[key], at(first + s, 0.0 if pad else 0.002), style.chord_level * vel(1.0, 0.05))

    _add_open_hats(drums, open_hit, open_events, closed_positions, sr)
    _add_transitions(style, sections, fx, sr, sounds, at)
    _duck(music.buf, kick_positions, style, sr, circular)
    log.debug("rendered %d sections, %d distinct notes", len(sections), len(notes))
    return drums.buf + music.buf + fx.buf


def _add_open_hats(
    drums: _Timeline, open_hit: np.ndarray, events: list[tuple[int, float]], closed: list[int], sr: int
) -> None:
    """Open hats ring until the next closed hat chokes them (as on a real hi-hat or a 909)."""
    if not events:
        return
    closed_sorted = np.sort(np.asarray(closed, dtype=np.int64))
    n = len(drums.buf)
    fade = max(2, int(0.004 * sr))
    for pos, gain in events:
        length = len(open_hit)
        if len(closed_sorted):
            i = np.searchsorted(closed_sorted, pos, side="right")
            if i < len(closed_sorted):
                length = min(length, int(closed_sorted[i] - pos) + fade)
            elif drums.circular:  # the choking hat is at the start of the next repeat
                length = min(length, int(closed_sorted[0] + n - pos) + fade)
        hit = open_hit[: max(length, fade)].copy()
        if length < len(open_hit):
            _fade_out(hit, sr, fade / sr)
        drums.add(hit, pos, gain)


def _add_transitions(
    style: TrackStyle,
    sections: list[Section],
    fx: _Timeline,
    sr: int,
    rng: np.random.Generator,
    at: Callable[[int], int],
) -> None:
    """A noise riser at the end of a breakdown and a crash when the drop lands."""
    step_s = beat_seconds(style.bpm) / 4
    crash_hit = None
    for prev, section in zip(sections, sections[1:]):
        if section.name != "drop":
            continue
        start = at(section.start_bar * STEPS_PER_BAR)
        if prev.name == "breakdown":
            seconds = min(prev.bars, 2) * 16 * step_s
            n = int(seconds * sr)
            t = _time(n, sr)
            # the cutoff climbs exponentially from 300 Hz to near Nyquist as the drop nears
            cutoff = lambda tt, s=seconds: 300.0 * (0.4 * sr / 300.0) ** (tt / s)  # noqa: E731
            riser = _lowpass_sweep(rng.standard_normal(n), sr, cutoff, 3.0, block_s=0.005)
            riser = _normalize(riser) * (t / seconds) ** 2
            fx.add(_fade_out(riser, sr, 0.01), start - n, 0.25)
        if crash_hit is None:
            crash_hit = crash(style, sr, rng)
        fx.add(crash_hit, start, 0.3)


def _duck(music: np.ndarray, kick_positions: list[int], style: TrackStyle, sr: int, circular: bool) -> None:
    """Sidechain: bass and chords dip when the kick hits and swell back (the house pump)."""
    if not kick_positions or not len(music):
        return
    n_shape = int(5 * style.duck_release * sr)
    t = _time(n_shape, sr)
    shape = np.exp(-t / style.duck_release)
    _attack(shape, sr, 0.003)
    env = np.zeros(len(music), dtype=np.float32)
    # overlapping kicks: take the deeper dip, not the sum (np.maximum on each slice)
    for pos in kick_positions:
        for start, piece in _pieces(len(music), pos, shape, circular):
            view = env[start : start + len(piece)]
            np.maximum(view, piece, out=view)
    music *= 1.0 - style.duck_depth * env


def _pieces(n: int, pos: int, hit: np.ndarray, circular: bool):
    """(start, slice of hit) pieces of hit placed at pos in a buffer of n samples."""
    if circular:
        pos %= n
        done = 0
        while done < len(hit):
            m = min(len(hit) - done, n - pos)
            yield pos, hit[done : done + m]
            done += m
            pos = 0
    elif pos < n:
        lo = max(0, -pos)
        yield max(pos, 0), hit[lo : max(lo, n - pos)]


def _master(mix: np.ndarray) -> np.ndarray:
    """Normalize, soft-clip (tames the kick's peaks, lifts the body), peak at -1 dBFS."""
    peak = np.max(np.abs(mix)) if len(mix) else 0.0
    if peak == 0:
        return mix.astype(np.float32)
    drive = 1.3
    y = np.tanh(drive * mix / peak) / np.tanh(drive)
    return (PEAK * y).astype(np.float32)


def _check_rate(sample_rate: int) -> None:
    if int(sample_rate) != sample_rate or sample_rate < 4000:
        raise ImmersionsError(f"sample rate must be a whole number of Hz, at least 4000; got {sample_rate}")


def _track_plan(seed: int, seconds: float, style: TrackStyle | None) -> tuple[TrackStyle, float, list[Section]]:
    """(style, seconds per bar, sections) of a track."""
    if not seconds >= 0 or not math.isfinite(seconds):
        raise ImmersionsError(f"track length must be zero or more seconds; got {seconds}")
    style = style or TrackStyle.from_seed(seed)
    bar_s = bar_seconds(style.bpm)
    return style, bar_s, arrangement(style, int(math.ceil(seconds / bar_s)) + 1)


def track_sections(seed: int, seconds: float, style: TrackStyle | None = None) -> list[tuple[str, float, float]]:
    """(name, start s, end s) of each section of the track `render_track` makes for these arguments."""
    _, bar_s, sections = _track_plan(seed, seconds, style)
    return [(s.name, s.start_bar * bar_s, min(seconds, (s.start_bar + s.bars) * bar_s))
            for s in sections if s.start_bar * bar_s < seconds]


def render_track(seed: int, seconds: float, sample_rate: int = 16000, style: TrackStyle | None = None) -> np.ndarray:
    """Mono float32 in [-1, 1], length round(seconds * sample_rate). Same seed -> same samples."""
    _check_rate(sample_rate)
    style, _, sections = _track_plan(seed, seconds, style)
    n = int(round(seconds * sample_rate))
    log.debug("track %d: %.1f BPM, key %d %s, %s", seed, style.bpm, style.key, style.mode, [s.name for s in sections])
    mix = _render(style, sections, n, sample_rate, _rng(seed, 3), sound_seed=seed)
    return _master(mix)


def render_loop(kind: str, bars: int = 2, bpm: float = 120.0, sample_rate: int = 44100, seed: int = 0) -> np.ndarray:
    """Starter clips: kind in {"silence", "noise", "kick", "groove"}; length exactly
    bars * 4 * 60 / bpm seconds. Loops repeat seamlessly: tails wrap to the start."""
    if kind not in START_CLIPS:
        raise ImmersionsError(f"unknown loop kind '{kind}'; valid kinds: {', '.join(START_CLIPS)}")
    _check_rate(sample_rate)
    if bars < 1 or not bpm > 0:
        raise ImmersionsError(f"a loop needs at least 1 bar and a positive tempo; got {bars} bars at {bpm} BPM")
    n = int(round(bar_seconds(bpm, bars * BEATS_PER_BAR) * sample_rate))
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind == "noise":
        return _pink_noise(n, _rng(seed, 4))
    style = replace(TrackStyle.from_seed(seed), bpm=float(bpm))
    parts = frozenset({KICK}) if kind == "kick" else frozenset(PARTS)
    if kind == "kick":
        style = replace(style, swing=0.0)
    sections = [Section("loop", 0, bars, parts)]
    mix = _render(style, sections, n, sample_rate, _rng(seed, 3), circular=True, sound_seed=seed)
    return _master(mix)


def _pink_noise(n: int, rng: np.random.Generator, rms: float = 0.1) -> np.ndarray:
    """Pink (1/f) noise shaped in the frequency domain: periodic, so it loops seamlessly."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=float)
    f[0] = 1.0
    spectrum /= np.sqrt(f)
    spectrum[0] = 0.0  # no DC
    y = np.fft.irfft(spectrum, n)
    y *= rms / (np.sqrt(np.mean(y**2)) + 1e-12)  # -20 dBFS RMS, peaks well under full scale
    return np.clip(y, -PEAK, PEAK).astype(np.float32)


def write_starter_clips(folder, sample_rate: int = 44100) -> list[Path]:
    """Writes <folder>/<kind>.wav for each starter clip (2 bars at 120 BPM)."""
    folder = Path(folder)
    paths = []
    for kind in START_CLIPS:
        clip = render_loop(kind, bars=2, bpm=120.0, sample_rate=sample_rate)
        paths.append(write_wav(folder / f"{kind}.wav", clip, sample_rate))
    log.info("wrote %d starter clips to %s", len(paths), folder)
    return paths
