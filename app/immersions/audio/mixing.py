"""Mixing a loop, in arrays: the pure arithmetic of the loop player, no threads, no devices.

- `equal_power_gains` / `equal_power_into`: the crossfade's cos/sin gains (fade_out**2 +
  fade_in**2 == 1), the latter in place, for the audio callback;
- `fader_gains` / `fader_gains_into`: the crossfader's two decks' gains for a fader position
  (0 = deck A alone, 1 = deck B alone) on one of its `FADER_CURVES` (equal-power, or cut), the
  latter in place, for the audio callback;
- `soft_limit`: identity below LIMIT_THRESHOLD, a tanh knee above, never past full scale;
- `resample_loop`: a loop at another rate, still a loop (padded circularly); `loop_max_jump`:
  its largest sample-to-sample step, the seam included; `copy_loop`: a block from a loop,
  wrapping;
- `bar_position`, `retime_window`, `loop_offset`: where a loop plays against a shared bar
  group, in samples (see devices/player.py and devices/grid.py).

Everything that may run in the audio callback writes into buffers it is given and allocates
nothing.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from immersions.registry import FADER_CURVES

LIMIT_THRESHOLD = 0.8  # the soft limiter leaves everything below this untouched


# -- gains ---------------------------------------------------------------------------------------

def equal_power_into(fade_out: np.ndarray, fade_in: np.ndarray, start: int, length: int,
                     ramp: np.ndarray) -> None:
    """Gains of samples start .. start+len(fade_in) of a `length`-sample crossfade, in place."""
    m = len(fade_in)
    np.add(ramp[:m], start, out=fade_in)
    np.multiply(fade_in, 0.5 * math.pi / length, out=fade_in)
    np.cos(fade_in, out=fade_out)
    np.sin(fade_in, out=fade_in)


def equal_power_gains(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in) of an n-sample equal-power crossfade: cos and sin of a quarter turn,
    so fade_out**2 + fade_in**2 == 1. Sample 0 is all old clip (fade_out 1, fade_in 0): the
    switch sample itself is the old loop's own continuation; the new clip is alone at n."""
    if n < 1:
        raise ValueError("a crossfade needs at least one sample")
    fade_out, fade_in = np.empty(n, np.float32), np.empty(n, np.float32)
    equal_power_into(fade_out, fade_in, 0, n, np.arange(n, dtype=np.float32))
    return fade_out, fade_in


CUT_WIDTH = 0.05  # the cut curve: a deck comes fully in over the fader's last twentieth at its side


def fader_gains_into(position: np.ndarray, curve: str, gain_a: np.ndarray, gain_b: np.ndarray) -> None:
    """Both decks' gains for fader positions 0..1, in place. equal_power: cos and sin of a
    quarter turn (-3 dB each in the middle, the power constant); cut: both decks at full level
    over most of the travel, the far deck cut off over the last CUT_WIDTH at each end (a DJ's
    scratch curve). At 0 deck A is exactly 1 and B exactly 0, and the other way round at 1."""
    if curve == "cut":
        np.subtract(1.0, position, out=gain_a)
        np.multiply(gain_a, 1.0 / CUT_WIDTH, out=gain_a)
        np.minimum(gain_a, 1.0, out=gain_a)
        np.multiply(position, 1.0 / CUT_WIDTH, out=gain_b)
        np.minimum(gain_b, 1.0, out=gain_b)
    elif curve == "equal_power":
        np.multiply(position, 0.5 * math.pi, out=gain_b)
        np.cos(gain_b, out=gain_a)
        np.sin(gain_b, out=gain_b)
        np.maximum(gain_a, 0.0, out=gain_a)  # cos(pi/2) is -4e-8 in float32: exactly silent at the end
        np.minimum(gain_b, 1.0, out=gain_b)
    else:
        raise ValueError(f"unknown crossfader curve '{curve}' (one of {', '.join(FADER_CURVES)})")
    np.maximum(gain_a, 0.0, out=gain_a)
    np.maximum(gain_b, 0.0, out=gain_b)


def fader_gains(position: float, curve: str = "equal_power") -> tuple[float, float]:
    """(gain of deck A, gain of deck B) at one fader position."""
    x = np.array([min(1.0, max(0.0, float(position)))], np.float32)
    a, b = np.empty(1, np.float32), np.empty(1, np.float32)
    fader_gains_into(x, curve, a, b)
    return float(a[0]), float(b[0])


def soft_limit(x: np.ndarray, out: np.ndarray | None = None, threshold: float = LIMIT_THRESHOLD,
               scratch: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Identity for |x| <= threshold; above, the excess is squashed by tanh into the
    remaining headroom, so |y| never exceeds 1 and the slope is continuous (1 at the knee).
    With `out` and `scratch` (two float32 arrays shaped like x) nothing is allocated."""
    if out is None:
        out = np.empty(np.shape(x), np.result_type(x, np.float32))
    a, r = scratch if scratch is not None else (np.empty_like(out), np.empty_like(out))
    knee = 1.0 - threshold
    np.abs(x, out=a)
    np.subtract(a, threshold, out=r)
    np.maximum(r, 0.0, out=r)  # the excess over the threshold
    np.multiply(r, 1.0 / knee, out=r)
    np.tanh(r, out=r)
    np.multiply(r, knee, out=r)  # squashed into the headroom above the threshold
    np.minimum(a, threshold, out=a)
    np.add(a, r, out=a)
    np.minimum(a, 1.0, out=a)  # guards the last float32 rounding
    np.copysign(a, x, out=out)
    return out


# -- loops ---------------------------------------------------------------------------------------

def resample_loop(clip: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """A loop at another rate, still a loop: padded circularly before the polyphase filter
    (so the filter sees the loop's own start after its end, not silence), then cut back to
    round(len * rate_out / rate_in) samples; the loop keeps its length in seconds and pitch."""
    clip = np.asarray(clip, dtype=np.float32)
    if rate_in == rate_out:
        return np.ascontiguousarray(clip)
    ratio = Fraction(int(rate_out), int(rate_in))
    up, down = ratio.numerator, ratio.denominator
    # resample_poly's filter reaches 10 * max(up, down) samples of the upsampled signal each
    # way; the padding is a whole number of `down` so the output grid lines up with the loop
    reach = 10 * max(up, down) / up + 2
    pad = down * math.ceil(reach / down)
    padded = np.take(clip, np.arange(-pad, len(clip) + pad), mode="wrap")
    y = resample_poly(padded, up, down)
    start = pad * up // down
    return np.ascontiguousarray(y[start:start + round(len(clip) * up / down)], dtype=np.float32)


def loop_max_jump(samples: np.ndarray) -> float:
    """Largest |x[n] - x[n-1]| around the loop, the seam (last sample -> first) included."""
    if len(samples) < 2:
        return 0.0
    inner = float(np.abs(np.diff(samples)).max())
    return max(inner, abs(float(samples[0]) - float(samples[-1])))


def copy_loop(dst: np.ndarray, loop: np.ndarray, pos: int) -> int:
    """Fill dst from a loop starting at pos, wrapping; the position after."""
    n, length, i = len(dst), len(loop), 0
    while i < n:
        k = min(n - i, length - pos)
        np.copyto(dst[i:i + k], loop[pos:pos + k])
        i += k
        pos += k
        if pos == length:
            pos = 0
    return pos


# -- a loop against a shared bar -------------------------------------------------------------------

def bar_position(fraction: float, bar: float, length: int) -> int:
    """Where a clip of `length` samples plays `fraction` of the way through a bar group of `bar`
    samples: nearer the bar line behind, as many samples in as the bar group is (the clip's
    start lies on that bar line; a longer clip has its tail cut at the next one); nearer the bar
    line ahead, or past the end of a shorter clip, so that its end lands on the next bar line.
    For a clip as long as the bar group both are `fraction * length`."""
    into, ahead = fraction * bar, (1.0 - fraction) * bar
    if into < length and (into <= ahead or ahead > length):
        return int(into)
    return int(round(length - ahead)) % length


def retime_window(length: int, bar: float, lead: float) -> float:
    """How long (samples) before the shared bar line the end of a loop of `length` samples is
    re-timed onto it, in a bar group of `bar` samples: `lead`, plus what a clip shorter than the
    bar group lacks (so that the move comes before the clip wraps round on its own), and never
    most of the clip."""
    return min(0.9 * length, lead + max(0.0, bar - length))


def loop_offset(pos: float, target: float, length: int) -> float:
    """How far (samples, -length/2 .. length/2) a playhead at `pos` is ahead of `target`, round the loop."""
    d = (pos - target) % length
    return d - length if d > 0.5 * length else d
