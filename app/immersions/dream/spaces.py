"""Where the dream takes its steps: the loop's parameterization.

A plain gradient on the waveform is nearly white: every step adds a little broadband
noise, and 100 steps of it sound like a hiss with a few steady bands. Feature
visualization for images became legible when the step was taken in a decorrelated,
frequency-scaled space instead (Lucid's Fourier parameterization with 1/f scaling). These
spaces do the same for a loop:

- `waveform`: the samples themselves (the step as it always was);
- `spectrum`: the loop's whole-loop Fourier coefficients, each scaled by a tilt in dB per
  octave, so that a step's energy falls with frequency as music's does;
- `stft`: complex short-time Fourier coefficients (1024-point Hann, hop 256, circular)
  with the same tilt, resynthesized each step; Adam then adapts per time-frequency cell.

A space maps the loop to real coefficients (`analyze`) and back (`synthesize`); the dream
takes the gradient with respect to the coefficients, steps there, and resynthesizes. Each
step starts from the analysis of the loop as it is, so blending, de-noising and peak
scaling (done on the waveform) always stay in the state. With SGD, a step in `spectrum`
is the waveform's gradient filtered by the tilt twice (once by the chain rule, once by
the synthesis): `step_tilt` is the slope of that filter's power, so -3 dB/octave gives
pink steps. The gains are calibrated so that a step of unit-std coefficients makes a waveform step
of unit RMS in every space, so the learning rate keeps its meaning.
"""

from __future__ import annotations

import math

import torch

SPACES = ("waveform", "spectrum", "stft")
START_SPACES = ("components",)  # built from the start clip (dream/components.py)
TILT_PIVOT_HZ = 1000.0  # the tilt turns around 1 kHz
# Below this (the `step_floor` parameter's default) the gain stays flat. Real music's octave
# profile is nearly flat under 250 Hz (assets/reference/music-balance.json); a tilt that kept
# rising down to 40 Hz piled the dreams' energy into the lowest octave (docs/dreams.md, round 5).
TILT_FLOOR_HZ = 160.0
N_FFT = 1024
HOP = N_FFT // 4


def tilt_gains(freqs: torch.Tensor, tilt_db_per_octave: float, floor_hz: float = TILT_FLOOR_HZ) -> torch.Tensor:
    """Per-frequency amplitude gain of the coefficients: applied twice (chain rule and
    synthesis), the step's power falls by `tilt` dB per octave above `floor_hz` and stays
    level below it; RMS over the bins is 1."""
    exponent = tilt_db_per_octave / (40.0 * math.log10(2.0))
    gains = (freqs.clamp_min(floor_hz) / TILT_PIVOT_HZ) ** exponent
    return gains / gains.square().mean().sqrt()


class Waveform:
    name = "waveform"

    def analyze(self, loop: torch.Tensor) -> torch.Tensor:
        return loop

    def synthesize(self, coefficients: torch.Tensor) -> torch.Tensor:
        return coefficients


class Spectrum:
    """Whole-loop real FFT (orthonormal), coefficients scaled by the tilt; a loop is circular,
    so the Fourier basis fits it without a seam."""

    name = "spectrum"

    def __init__(self, samples: int, sample_rate: int, tilt: float, device: torch.device | str = "cpu",
                 floor_hz: float = TILT_FLOOR_HZ):
        self.samples = samples
        freqs = torch.fft.rfftfreq(samples, 1.0 / sample_rate)
        self.gains = tilt_gains(freqs, tilt, floor_hz).to(device)

    def analyze(self, loop: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(torch.fft.rfft(loop, norm="ortho") / self.gains)

    def synthesize(self, coefficients: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.view_as_complex(coefficients.contiguous()) * self.gains, n=self.samples,
                               norm="ortho")


class STFT:
    """Complex STFT of the circular loop (wrapped by one window on each side, so every sample
    is covered by full overlaps), coefficients scaled by the tilt per frequency row."""

    name = "stft"

    def __init__(self, samples: int, sample_rate: int, tilt: float, device: torch.device | str = "cpu",
                 floor_hz: float = TILT_FLOOR_HZ):
        self.samples = samples
        self.pad = min(N_FFT, samples)
        self.window = torch.hann_window(N_FFT, device=device)
        freqs = torch.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
        self.gains = tilt_gains(freqs, tilt, floor_hz).to(device)[:, None]

    def analyze(self, loop: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(stft(loop, self.pad, self.window) / self.gains)

    def synthesize(self, coefficients: torch.Tensor) -> torch.Tensor:
        spec = torch.view_as_complex(coefficients.contiguous()) * self.gains
        return istft(spec, self.samples, self.pad, self.window)


def stft(loop: torch.Tensor, pad: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT [..., bins, frames] of a circular loop wrapped by `pad` on each side."""
    wrapped = torch.cat([loop[..., -pad:], loop, loop[..., :pad]], dim=-1)
    return torch.stft(wrapped, N_FFT, HOP, window=window, return_complex=True)


def istft(spec: torch.Tensor, samples: int, pad: int, window: torch.Tensor) -> torch.Tensor:
    """The loop back from `stft` (the wrapped margins are cut off)."""
    wrapped = torch.istft(spec, N_FFT, HOP, window=window, length=samples + 2 * pad)
    return wrapped[..., pad:pad + samples]


def calibrate(space) -> None:
    """Scale a space's gains so that a step of unit-std coefficients makes a waveform step of
    unit RMS, as in the waveform space (the STFT's overlap would otherwise shrink it)."""
    probe = torch.randn(space.analyze(torch.zeros(space.samples, device=space.gains.device)).shape,
                        generator=torch.Generator().manual_seed(0)).to(space.gains.device)
    rms = float(space.synthesize(probe).square().mean().sqrt())
    space.gains = space.gains / rms
