"""The `components` space: the loop as a mix of the start clip's components.

The start clip's magnitude STFT (the circular one of `spaces.stft`) is factored once, by
non-negative matrix factorization, into K spectral templates W [bins, K] (a kick's thump, a
hat's sizzle, a note's partials) and their activations H [K, frames]. The dream then steps
on the activations only: it can move a component in time, make it louder or softer, bring
it in where it was absent, but it cannot invent a spectrum the start clip never had. That
keeps the dream's timbre the start clip's, where a step on the samples drifts toward hiss.

- `analyze(loop)`: the loop's activations, by a few multiplicative updates of H with W
  fixed, warm-started from the previous analysis (the loop moves little per step), and the
  loop's own phase, kept for the synthesis (so the dream is one Griffin-Lim iteration per
  step: the phases settle to fit the new magnitudes instead of staying the start clip's).
- `synthesize(coefficients)`: |X| = W @ H with that phase, through `spaces.istft`.

The activations stay between zero and HEADROOM times the component's loudest moment in the
start clip, a_k, because the coefficients are free variables under a sigmoid:
H = a_k * HEADROOM * sigmoid(gain * c): so that no component runs away from the start
clip's dynamics during a long performance (a softplus, tried first, is unbounded; on the
small grid of docs/dreams.md the two measured alike, the dreams 7-14 dB quieter than the
clip under the same peak in both).
Every activation is floored at FLOOR_SHARE of its a_k, so no component is ever exactly
off (a multiplicative update cannot bring a zero back, and the sigmoid's slope there is
the floor itself). `gain` is set in closed form so that a step of unit-std
coefficients makes a waveform step of unit RMS at the start clip, as in the other spaces.

A silent start clip has nothing to factor: the space falls back to `stft` and logs it.
"""

from __future__ import annotations

import logging

import torch

from immersions.dream import spaces as S

log = logging.getLogger(__name__)

COMPONENTS = 32  # templates: enough for a drum loop's sounds and a few notes
FACTOR_ITERATIONS = 300  # multiplicative updates of W and H when the space is built
ANALYZE_ITERATIONS = 8  # updates of H alone per step (warm-started)
FLOOR_SHARE = 1e-4  # the least activation, relative to the component's loudest (-80 dB)
HEADROOM = 2.0  # no component louder than twice its loudest moment in the start clip
SILENT_PEAK = 1e-6  # a start clip quieter than this has no components
SEED = 0  # the factorization's initial guess; fixed, so a dream's seed alone repeats it
EPS = 1e-12


def factorize(magnitude: torch.Tensor, components: int, iterations: int, seed: int = SEED
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean NMF (Lee & Seung's multiplicative updates): W [bins, K], H [K, frames] with
    W @ H ~ magnitude; W's columns have unit peak, so H carries the loudness. Euclidean
    rather than KL because the round trip is judged by the waveform's squared error."""
    bins, frames = magnitude.shape
    generator = torch.Generator().manual_seed(seed)
    level = float(magnitude.mean().clamp_min(EPS) / components) ** 0.5
    w = (torch.rand(bins, components, generator=generator) * level + EPS).to(magnitude)
    h = (torch.rand(components, frames, generator=generator) * level + EPS).to(magnitude)
    for _ in range(iterations):
        h = update_activations(magnitude, w, h)
        w = w * (magnitude @ h.T) / (w @ (h @ h.T)).clamp_min(EPS)
    peak = w.amax(dim=0).clamp_min(EPS)
    return w / peak, h * peak[:, None]


def update_activations(magnitude: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One multiplicative update of H with W fixed (never increases the squared error)."""
    return h * (w.T @ magnitude) / ((w.T @ w) @ h).clamp_min(EPS)




class Components:
    name = "components"

    def __init__(self, start: torch.Tensor, components: int = COMPONENTS, iterations: int = FACTOR_ITERATIONS):
        self.samples = start.shape[-1]
        self.pad = min(S.N_FFT, self.samples)
        self.window = torch.hann_window(S.N_FFT, device=start.device)
        spec = S.stft(start, self.pad, self.window)
        # where the loop is exactly silent its phase is undefined: the start clip's stands in,
        # and where that too is silent, a fixed random phase
        noise = torch.rand(spec.shape, generator=torch.Generator().manual_seed(SEED)).to(start.device)
        self.reference_phase = _unit(spec + EPS * torch.polar(torch.ones_like(noise), 2 * torch.pi * noise))
        self.templates, activations = factorize(spec.abs(), components, iterations)
        self.level = activations.amax(dim=1, keepdim=True).clamp_min(EPS)  # a_k
        self.activations = activations  # the warm start of the next analysis
        self.phase = self.reference_phase
        self.gain = 1.0
        self.gain = 1.0 / self._unit_step_rms(self.analyze(start))

    def analyze(self, loop: torch.Tensor) -> torch.Tensor:
        spec = S.stft(loop, self.pad, self.window)
        self.phase = _unit(spec + 1e-7 * self.reference_phase)
        h = self.activations.clamp_min(0.0).maximum(FLOOR_SHARE * self.level)
        magnitude = spec.abs()
        for _ in range(ANALYZE_ITERATIONS):
            h = update_activations(magnitude, self.templates, h)
        h = h.maximum(FLOOR_SHARE * self.level).minimum((1.0 - FLOOR_SHARE) * HEADROOM * self.level)
        self.activations = h
        return torch.logit(h / (HEADROOM * self.level)) / self.gain

    def synthesize(self, coefficients: torch.Tensor) -> torch.Tensor:
        h = HEADROOM * self.level * torch.sigmoid(self.gain * coefficients)
        return S.istft((self.templates @ h) * self.phase, self.samples, self.pad, self.window)

    def _unit_step_rms(self, coefficients: torch.Tensor) -> float:
        """Waveform RMS of a unit-std coefficient step, linearized at `coefficients`
        (exactly proportional to the gain, so one measurement sets it)."""
        probe = torch.randn(coefficients.shape, generator=torch.Generator().manual_seed(SEED)).to(coefficients)
        share = torch.sigmoid(self.gain * coefficients)
        slope = HEADROOM * self.level * self.gain * share * (1.0 - share)
        step = S.istft((self.templates @ (slope * probe)) * self.phase, self.samples, self.pad, self.window)
        return max(float(step.square().mean().sqrt()), EPS)


def _unit(spec: torch.Tensor) -> torch.Tensor:
    return spec / spec.abs().clamp_min(1e-30)


def components_space(start: torch.Tensor | None, samples: int, sample_rate: int, tilt: float,
                     device: torch.device | str = "cpu", floor_hz: float = S.TILT_FLOOR_HZ):
    """The components of `start`; from silence (or without a start clip) the `stft` space."""
    if start is None or float(start.abs().max()) < SILENT_PEAK:
        log.info("components space: the start clip is silent, there is nothing to factor; "
                 "stepping in the stft space instead")
        space = S.STFT(samples, sample_rate, tilt, device, floor_hz)
        S.calibrate(space)
        return space
    return Components(start.to(device))
