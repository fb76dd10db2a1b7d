"""The dream step: change the loop so that the selected neurons fire.

Each step, with the newest parameter snapshot:
1. jitter the loop into B circularly shifted copies, take their scalograms, shift their
   pitch a little and mask a random time and pitch band (transforms.py);
2. run the network, evaluate the objective: the selection's normalized activation minus
   the weighted penalties (objectives.py);
3. take the gradient with respect to the loop, divide it by its std (floored: see
   GRADIENT_FLOOR), add gradient noise; the network hears the loop plus a dither far
   below hearing, and its ReLUs pass gradient to channels that are off (RedirectedReLU),
   so every neuron can be reached from silence;
4. step (SGD, or Adam) with learning rate 10^x; below 10^-4.9 dreaming pauses;
5. blend the start clip back in, de-noise, and keep the peak at or below full scale by
   scaling (never clipping, never wrapping); a NaN or Inf resets to the start clip.
The clip that is heard is the loop through the 3-band EQ (applied to the output, never
fed back into the optimization, so it shapes the sound without compounding).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from immersions.audio.eq import equalize
from immersions.registry import REGISTRY, Snapshot
from immersions.dream import priors as P
from immersions.dream import transforms as T
from immersions.dream.spaces import make_space
from immersions.dream.loop import fit_length
from immersions.dream.objectives import Objective, Probe, activation_penalty, energy, high_frequency, selection
from immersions.model.cpc import CPC, for_dreaming
from immersions.model.stats import TapStats
from immersions.selection import Region, Selection

PAUSE_BELOW = -4.9  # log10 learning rate under which the optimizer rests
ADAM_BETAS = (0.9, 0.999)
# The network hears the loop plus this white dither (-80 dBFS RMS), never the listener: the
# scalogram's power has zero gradient at exact silence, so without it a silent loop is a
# dead point that only gradient noise could leave.
DITHER_RMS = 1e-4
# The gradient is divided by its std, but never by less than this share of the largest std
# seen since the selection or start changed: near a dead point or an optimum the gradient is
# mostly numerical noise, and scaling that up to a full step made selections fall.
GRADIENT_FLOOR = 0.1


@dataclass(frozen=True)
class StepReport:
    step: int
    objective: float
    paused: bool
    nan_resets: int
    peak: float
    seconds: float


class Dreamer:
    """Holds one loop and optimizes it step by step; knows nothing of threads or windows."""

    def __init__(self, model: CPC, stats: dict[str, TapStats] | None, start: np.ndarray, copies: int = 4,
                 seed: int = 0, device: str | torch.device = "cpu", reach: bool = True, fold: bool = True):
        # BatchNorms folded into a copy: the same activations, cheaper steps (`fold=False`: the
        # model itself, to measure against)
        self.model = (for_dreaming(model) if fold else model.eval()).to(device)
        self.source = model  # the model as loaded (what a model switch compares against)
        if not fold:
            for p in self.model.parameters():
                p.requires_grad_(False)
        # channels that are off still hear the objective; `reach=False` dreams as before the
        # dither, the redirect and the gradient floor (kept to measure them against)
        self.reach = reach
        self.stats = stats
        self.device = torch.device(device)
        self.sample_rate = model.cfg.scalogram.sample_rate
        self.copies = copies
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.selection = Selection()
        self.steps = 0
        self.nan_resets = 0
        self.timings: dict[str, float] | None = None  # set to {} to accumulate seconds per stage
        self._space_key = None
        self._space_cache = None
        self._start_version = 0  # the components space is rebuilt from each new start clip
        self._balance: torch.Tensor | None = None  # real music's octave profile, loaded on first use
        self.set_start(start)

    @contextmanager
    def _stage(self, name: str):
        if self.timings is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - began

    # -- state changes --------------------------------------------------------------------

    def set_start(self, start: np.ndarray) -> None:
        """A new start clip: the loop restarts from it (and mixing blends toward it)."""
        self.start = torch.as_tensor(np.asarray(start, np.float32), device=self.device).clone()
        self.loop = self.start.clone()
        self._start_version += 1
        self.dither = (DITHER_RMS if self.reach else 0.0) * torch.randn(self.loop.shape, generator=torch.Generator().manual_seed(self.seed)).to(self.device)
        self._adam = None
        self._largest_grad_std = 0.0

    def set_blend(self, clip: np.ndarray) -> None:
        """A new clip for `mix_original` to blend in (and a NaN to reset to), fitted to the loop's
        length; unlike set_start, the loop itself carries on."""
        fitted = fit_length(np.asarray(clip, np.float32), self.loop.shape[-1])
        self.start = torch.as_tensor(fitted, device=self.device)
        self._start_version += 1

    def set_length(self, samples: int) -> None:
        """Follow a tempo change: loop or trim the loop and the start clip to `samples`
        (content is repeated or cut, never resampled, so the pitch stays)."""
        if samples == self.loop.shape[-1]:
            return
        self.loop = torch.as_tensor(fit_length(self.loop.cpu().numpy(), samples), device=self.device)
        self.start = torch.as_tensor(fit_length(self.start.cpu().numpy(), samples), device=self.device)
        self.dither = torch.as_tensor(fit_length(self.dither.cpu().numpy(), samples), device=self.device)
        self._adam = None

    def select(self, region: Region, keep: bool = False) -> None:
        self.selection = self.selection.add(region, keep)
        self._largest_grad_std = 0.0

    def edit(self, region: Region) -> None:
        self.selection = self.selection.edit(region)
        self._largest_grad_std = 0.0

    def objective(self, params: Snapshot) -> Objective:
        objective = selection(self.selection)
        for name, term in (("activation_penalty", activation_penalty), ("energy_penalty", energy),
                           ("high_frequency_penalty", high_frequency)):
            if params[name] > 0:
                objective = objective - params[name] * term()
        return objective

    # -- one step -------------------------------------------------------------------------

    def probe(self, loop: torch.Tensor, params: Snapshot) -> Probe:
        """Copies of the loop through the transforms and the network."""
        sr = self.sample_rate
        self.model.redirect_relus(self.reach)  # the model may be shared with another dreamer
        with self._stage("transforms"):
            copies = T.jitter(self.copies, int(params["time_jitter"] * sr), jitter_grid(params, sr))(
                loop + self.dither, self.generator)
        with self._stage("scalogram"):
            spec = self.model.scalogram(copies, circular=True)
        with self._stage("transforms"):
            spec = T.compose(T.pitch_shift(int(round(params["pitch_jitter"]))), T.mask_time(params["mask_time"]),
                             T.mask_pitch(params["mask_pitch"]))(spec, self.generator)
        with self._stage("network"):
            acts = self.model.loop_activations(spec)
        return Probe(self.model.taps, acts, spec, self.stats)

    def step(self, params: Snapshot) -> StepReport:
        started = time.perf_counter()
        self.steps += 1
        objective = self.objective(params)
        if params["learning_rate"] < PAUSE_BELOW:
            return StepReport(self.steps, math.nan, True, self.nan_resets, self.peak, time.perf_counter() - started)
        space = self._space(params)
        coefficients = space.analyze(self.loop).detach().requires_grad_()
        loop = space.synthesize(coefficients)
        probe = self.probe(loop, params)
        with self._stage("objective"):
            value = objective(probe)
        with self._stage("backward"):
            # sparsify spares what the objective pulls on, so it needs the loop's own gradient too
            wanted = [coefficients, loop] if params["sparsity"] > 0 else [coefficients]
            grad, *loop_grad = torch.autograd.grad(value, wanted)
        with self._stage("update"), torch.no_grad():
            std = float(grad.std())
            self._largest_grad_std = max(self._largest_grad_std, std)
            grad = grad / max(std, (GRADIENT_FLOOR if self.reach else 0.0) * self._largest_grad_std, 1e-12)
            grad = T.gradient_noise(grad, params["gradient_noise"], self.generator)
            lr = 10.0 ** params["learning_rate"]
            update = self._adam_update(grad) if params["optimizer"] == "adam" else grad
            new = space.synthesize(coefficients + lr * update)
        with self._stage("priors"), torch.no_grad():
            new = self._priors(new, loop_grad[0] if loop_grad else None, params)
            mix = params["mix_original"]
            if mix > 0:
                new = (1 - mix) * new + mix * self.start
            new = T.denoise(new, params["denoise"])
            if not torch.isfinite(new).all() or not math.isfinite(value.item()):
                self.nan_resets += 1
                new = self.start.clone()
                self._adam = None
            peak = new.abs().max()
            if peak > 1.0:
                new = new / peak
        self.loop = new.detach()
        return StepReport(self.steps, value.item(), False, self.nan_resets, self.peak, time.perf_counter() - started)

    def _space(self, params: Snapshot):
        """The loop's parameterization for these settings (rebuilt, and Adam's moments reset,
        when the space, the tilt or the loop's length changes)."""
        key = (params["space"], float(params["step_tilt"]), self.loop.shape[-1],
               self._start_version if params["space"] == "components" else None)
        if key != self._space_key:
            self._space_key = key
            self._space_cache = make_space(key[0], key[2], self.sample_rate, key[1], self.device, start=self.start)
            self._adam = None
        return self._space_cache

    def _priors(self, loop: torch.Tensor, gradient: torch.Tensor | None, params: Snapshot) -> torch.Tensor:
        """The musical priors, in order: whole-beat repetition, octave balance, sparsity."""
        beats = 4 * int(params["bars"])
        loop = P.beat_repeat(loop, beats, params["beat_repeat"])
        if params["balance"] > 0:
            if self._balance is None:
                self._balance = torch.tensor(P.music_balance(), dtype=loop.dtype, device=self.device)
            loop = P.toward_balance(loop, self.sample_rate, self._balance, params["balance"])
        return P.sparsify(loop, params["sparsity"], gradient)

    def _adam_update(self, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = ADAM_BETAS
        if self._adam is None:
            self._adam = [torch.zeros_like(grad), torch.zeros_like(grad), 0]
        m, v, t = self._adam
        t += 1
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self._adam[2] = t
        return (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8)

    # -- what is heard ----------------------------------------------------------------------

    @property
    def peak(self) -> float:
        return float(self.loop.abs().max())

    def clip(self, params: Snapshot) -> np.ndarray:
        """The loop as heard: through the EQ, its peak kept at or below full scale."""
        with torch.no_grad():
            out = equalize(self.loop, self.sample_rate, params["eq_low"], params["eq_mid"], params["eq_high"])
            peak = out.abs().max()
            if peak > 1.0:
                out = out / peak
        return out.cpu().numpy().astype(np.float32)

    def measure(self, region: Region, params: Snapshot) -> float:
        """Normalized mean activation of `region` on the current loop, without transforms."""
        with torch.no_grad():
            spec = self.model.scalogram(self.loop[None], circular=True)
            acts = self.model.loop_activations(spec)
            return selection(Selection((region,)))(Probe(self.model.taps, acts, spec, self.stats)).item()


def jitter_grid(params: Snapshot, sample_rate: int) -> int:
    """Samples per step of the time-jitter grid at the tempo: 1 when the jitter is free."""
    per_beat = {"free": 0.0, "beat": 1.0, "sixteenth": 0.25}[params["jitter_grid"]]
    return max(1, int(round(per_beat * 60.0 / params["bpm"] * sample_rate)))


def default_params() -> Snapshot:
    return REGISTRY.defaults()
