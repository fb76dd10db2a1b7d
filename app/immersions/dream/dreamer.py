"""The dreamer: one loop, optimized step by step so that the selected neurons fire.

It holds the state a dream carries from step to step (the loop, the start clip, the
selection, the optimizer's moments, the parameterization's cache) and takes the step
(`ascend`) with a `Recipe` (recipe.py): a parameterization, transforms, an objective and
projections, none of which the step knows. `step(params)` takes the default recipe of a
snapshot, which, in order:
1. analyzes the loop in the chosen space (spaces.py); the network hears the loop plus a
   dither far below hearing, in jittered copies whose scalograms are pitch-shifted and
   masked (transforms.py);
2. evaluates the objective: the selection's weighted normalized activation minus the
   weighted penalties (objectives.py);
3. divides the gradient by its std (floored: see GRADIENT_FLOOR) and adds gradient noise;
   the ReLUs pass gradient to channels that are off (RedirectedReLU), so every neuron can
   be reached from silence;
4. steps (SGD, or Adam) with learning rate 10^x; below 10^-4.9 dreaming pauses;
5. applies the musical priors, blends the start clip back in, de-noises; then every loop
   keeps its peak at or below full scale by scaling (never clipping, never wrapping), and a
   NaN or Inf resets to the start clip.
The clip that is heard is the loop through the 3-band EQ (applied to the output, never
fed back into the optimization, so it shapes the sound without compounding).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from immersions.audio.eq import equalize
from immersions.registry import REGISTRY, Snapshot
from immersions.dream import priors as P
from immersions.dream import transforms as T
from immersions.dream.recipe import make_space
from immersions.dream.loop import fit_length
from immersions.dream import recipe as R
from immersions.dream.objectives import Reading, selection
from immersions.dream.recipe import Recipe
from immersions.heap import keep_large_blocks
from immersions.errors import ImmersionsError
from immersions.model.ear import Ear
from immersions.model.precision import network_autocast, resolve_precision
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

    def __init__(self, model: Ear, stats: dict[str, TapStats] | None, start: np.ndarray, copies: int = 4,
                 seed: int = 0, device: str | torch.device = "cpu", reach: bool = True, fold: bool = True,
                 precision: str = "fp32"):
        keep_large_blocks()  # a step's large tensors are reused, not mapped afresh (see heap.py)
        # BatchNorms folded into a copy: the same activations, cheaper steps (`fold=False`: the
        # model itself, to measure against)
        self.model = (model.for_dreaming() if fold else model.eval()).to(device)
        self.source = model  # the model as loaded (what a model switch compares against)
        if not fold:
            for p in self.model.parameters():
                p.requires_grad_(False)
        # channels that are off still hear the objective; `reach=False` dreams as before the
        # dither, the redirect and the gradient floor (kept to measure them against)
        self.reach = reach
        self.stats = stats
        self.device = torch.device(device)
        # the network in bf16 ("bf16", or "auto" where native; model/precision.py); the scalogram,
        # the objective and the update stay float32
        self.precision = resolve_precision(precision, self.device)
        self.sample_rate = model.sample_rate
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

    # -- one step -------------------------------------------------------------------------

    def recipe(self, params: Snapshot) -> Recipe:
        """This dreamer's default recipe for a snapshot (see recipe.py)."""
        self.model.redirect_relus(self.reach)  # the model may be shared with another dreamer
        hears = self.model.hears_scalogram  # else the network's own front end runs in `read`
        return R.recipe(params, self.selection, space=self._space(params), sample_rate=self.sample_rate,
                        copies=self.copies, scalogram=(lambda x: self.model.hear(x, circular=True)) if hears else None,
                        dither=self.dither if self.reach else None, start=self.start, balance=self._music_balance,
                        pitch_grid=self.model.pitch_grid)

    def read(self, loop: torch.Tensor, recipe: Recipe) -> Reading:
        """The loop through the recipe's transforms and the network. An ear that hears a
        scalogram reads the chain's last stage; any other reads the jittered copies through
        its own front end, and their scalogram is drawn only for an objective that reads it
        (the energy and brightness penalties)."""
        x = R.run_transforms(recipe.transforms, loop, self.generator, self._stage)
        ear = self.model
        with self._stage("network"):
            heard = x if ear.hears_scalogram else ear.hear(x, circular=True)
            if self.precision == "fp32":
                acts = ear.read(heard)
            else:
                with network_autocast(self.precision, self.device):
                    acts = ear.read(heard)
                acts = [a.float() for a in acts]
        return Reading(ear.taps, acts, lambda: ear.picture(x, heard), self.stats)

    def step(self, params: Snapshot) -> StepReport:
        """One step of the default recipe; below PAUSE_BELOW the loop is held exactly."""
        if params["learning_rate"] < PAUSE_BELOW:
            self.steps += 1
            return StepReport(self.steps, math.nan, True, self.nan_resets, self.peak, 0.0)
        return self.ascend(self.recipe(params))

    def ascend(self, recipe: Recipe) -> StepReport:
        """One step up the recipe's objective, in its space, through its transforms, followed by
        its projections; then the invariants every loop keeps (finite, peak at most 1)."""
        started = time.perf_counter()
        self.steps += 1
        space = recipe.space
        coefficients = space.analyze(self.loop).detach().requires_grad_()
        loop = space.synthesize(coefficients)
        reading = self.read(loop, recipe)
        with self._stage("objective"):
            value = recipe.objective(reading)
        with self._stage("backward"):
            wanted = [coefficients, loop] if recipe.wants_loop_gradient else [coefficients]
            grad, *loop_grad = torch.autograd.grad(value, wanted)
        with self._stage("update"), torch.no_grad():
            std = float(grad.std())
            self._largest_grad_std = max(self._largest_grad_std, std)
            grad = grad / max(std, (GRADIENT_FLOOR if self.reach else 0.0) * self._largest_grad_std, 1e-12)
            grad = T.gradient_noise(grad, recipe.gradient_noise, self.generator)
            update = self._adam_update(grad) if recipe.optimizer == "adam" else grad
            new = space.synthesize(coefficients + recipe.learning_rate * update)
        with self._stage("priors"), torch.no_grad():
            for project in recipe.after:
                new = project(new, loop_grad[0] if loop_grad else None)
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
        when the space, the tilt, its floor or the loop's length changes)."""
        key = (params["space"], float(params["step_tilt"]), float(params["step_floor"]), self.loop.shape[-1],
               self._start_version if params["space"] == "components" else None)
        if key != self._space_key:
            if params["space"] not in self.model.dream_spaces:
                raise ImmersionsError(f"the ear {self.model.name} cannot dream in the {params['space']} space; "
                                      f"use one of {', '.join(self.model.dream_spaces)}")
            self._space_key = key
            space, tilt, floor, samples, _ = key
            self._space_cache = make_space(space, samples, self.sample_rate, tilt, self.device, start=self.start,
                                           floor_hz=floor)
            self._adam = None
        return self._space_cache

    def _music_balance(self) -> torch.Tensor:
        if self._balance is None:
            self._balance = torch.tensor(P.music_balance(sample_rate=self.sample_rate), dtype=torch.float32, device=self.device)
        return self._balance

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
        """Normalized mean activation of `region` on the current loop, without transforms (whatever
        the region's weight: a quieted region is measured as it fires)."""
        with torch.no_grad():
            audio = self.loop[None]
            heard = self.model.hear(audio, circular=True)
            acts = self.model.read(heard)
            plain = Selection((replace(region, weight=1.0),))
            return selection(plain)(Reading(self.model.taps, acts, lambda: self.model.picture(audio, heard), self.stats)).item()


def default_params() -> Snapshot:
    return REGISTRY.defaults()
