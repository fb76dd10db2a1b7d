"""A dream recipe: everything one step needs, built from a snapshot, in Lucent's shape.

The step (`Dreamer.ascend`) takes
- a parameterization of the loop (`spaces.py`: where the step is taken),
- a list of transforms that turn the heard loop into what the network reads (dither,
  jittered copies, their scalograms, pitch shifts, masks: `transforms.py`),
- an objective (`objectives.py`),
- the update's settings (learning rate, optimizer, gradient noise),
- and the projections applied after each step (musical priors, mixing in the start clip,
  de-noising: `priors.py`, `transforms.py`),
and knows none of them. `recipe()` builds today's defaults from a snapshot; anything else
(a test, a benchmark, a new kind of dream) can build its own `Recipe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from immersions.dream import priors as P
from immersions.dream import spaces as S
from immersions.dream import transforms as T
from immersions.dream.components import components_space
from immersions.dream.objectives import Objective, activation_penalty, energy, high_frequency, selection, surround
from immersions.registry import PROGRESSIONS, REPEAT_PERIODS, Snapshot
from immersions.selection import Selection

# (loop after the step, the objective's gradient on the heard loop or None) -> loop
Projection = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
PENALTIES = (("activation_penalty", activation_penalty), ("energy_penalty", energy),
             ("high_frequency_penalty", high_frequency))


@dataclass(frozen=True)
class Stage:
    """One transform of the chain, named for the step's timings."""

    name: str
    apply: T.Transform

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, gen)


@dataclass(frozen=True)
class Recipe:
    space: object  # a parameterization: analyze(loop) -> coefficients, synthesize(coefficients) -> loop
    transforms: tuple[Stage, ...]  # heard loop [samples] -> what the network reads (scalograms [copies, bins, frames])
    objective: Objective
    learning_rate: float  # the step size itself (10^x of the registry's learning_rate)
    optimizer: str  # "sgd" or "adam"
    gradient_noise: float
    after: tuple[Projection, ...] = ()
    wants_loop_gradient: bool = False  # a projection reads the objective's gradient on the heard loop


def make_space(name: str, samples: int, sample_rate: int, tilt: float, device: torch.device | str = "cpu",
               start: torch.Tensor | None = None, floor_hz: float = S.TILT_FLOOR_HZ):
    """The parameterization a snapshot names (`space`), for a loop of `samples` (spaces.py;
    `components` is factored from `start`: components.py); `tilt` and `floor_hz` are the
    snapshot's `step_tilt` and `step_floor`."""
    if name == "components":
        return components_space(start, samples, sample_rate, tilt, device, floor_hz)
    if name == "waveform":
        return S.Waveform()
    if name in ("spectrum", "stft"):
        space = (S.Spectrum if name == "spectrum" else S.STFT)(samples, sample_rate, tilt, device, floor_hz)
        S.calibrate(space)
        return space
    raise ValueError(f"unknown dream space '{name}' (one of {', '.join(S.SPACES + S.START_SPACES)})")


def objective_for(selected: Selection, params: Snapshot) -> Objective:
    """The selection's weighted activation minus the weighted penalties that are on."""
    penalties = [params[name] * term() for name, term in PENALTIES if params[name] > 0]
    if params["contrast"] > 0:
        penalties.append(params["contrast"] * surround(selected, params["contrast_share"]))
    return selection(selected) - sum(penalties) if penalties else selection(selected)


def jitter_grid(params: Snapshot, sample_rate: int) -> int:
    """Samples per step of the time-jitter grid at the tempo: 1 when the jitter is free."""
    per_beat = {"free": 0.0, "beat": 1.0, "sixteenth": 0.25}[params["jitter_grid"]]
    return max(1, int(round(per_beat * 60.0 / params["bpm"] * sample_rate)))


def recipe(params: Snapshot, selected: Selection, *, space, sample_rate: int, copies: int,
           scalogram: Callable[[torch.Tensor], torch.Tensor] | None, dither: torch.Tensor | None,
           start: torch.Tensor, balance: Callable[[], torch.Tensor],
           pitch_grid: tuple[int, int] | None = (32, 128)) -> Recipe:
    """The default dream of a snapshot: the transforms and regularizers of the paper, the
    musical priors, on `space`. `scalogram` turns copies into the network's input; None for
    an ear that does not hear a scalogram: the chain ends at the jittered copies, and the
    scalogram's pitch shifts, masks and chord transpositions are left out. `dither`
    is added to what the network hears (never to the loop); `balance()` gives real music's
    octave profile (asked for only when the balance prior is on); `pitch_grid` is the
    scalogram's (bins per octave, hop), for a chord progression."""
    transforms: list[Stage] = []
    chords, shifts = PROGRESSIONS[params["progression"]], {}
    if dither is not None:
        transforms.append(Stage("transforms", lambda x, gen: x + dither))
    transforms.append(Stage("transforms", T.jitter(copies, int(params["time_jitter"] * sample_rate),
                                                   jitter_grid(params, sample_rate), record=shifts)))
    if scalogram is not None:
        transforms.append(Stage("scalogram", lambda x, gen: scalogram(x)))
        if len(chords) > 1:
            transforms.append(Stage("transforms", T.transpose_parts(chords, *pitch_grid, shifts)))
        transforms.append(Stage("transforms", T.compose(T.pitch_shift(int(round(params["pitch_jitter"]))),
                                                        T.mask_time(params["mask_time"]), T.mask_pitch(params["mask_pitch"]))))
    return Recipe(space, tuple(transforms), objective_for(selected, params), 10.0 ** params["learning_rate"],
                  params["optimizer"], params["gradient_noise"], projections(params, sample_rate, start, balance),
                  wants_loop_gradient=params["sparsity"] > 0)


def projections(params: Snapshot, sample_rate: int, start: torch.Tensor,
                balance: Callable[[], torch.Tensor]) -> tuple[Projection, ...]:
    """After each step, in order: whole-beat repetition (of the loop, then of its rhythm),
    octave balance, overtones, sparsity, the start clip mixed back in, de-noising. Only the
    ones that are on."""
    out: list[Projection] = []
    beats, amount = 4 * int(params["bars"]), params["beat_repeat"]
    if amount > 0:
        period = REPEAT_PERIODS[params["repeat_every"]]  # in beats
        parts = len(PROGRESSIONS[params["progression"]])
        if parts > 1 and beats // parts // period < 2:  # a chord too short to hold two periods repeats its beats
            period = 1
        periods = beats // period
        out.append(lambda loop, grad: P.beat_repeat(loop, periods, amount, parts))
    if params["rhythm_repeat"] > 0:
        rhythm = params["rhythm_repeat"]
        out.append(lambda loop, grad: P.rhythm_repeat(loop, beats, rhythm, sample_rate))
    if params["balance"] > 0:
        strength = params["balance"]
        out.append(lambda loop, grad: P.toward_balance(loop, sample_rate, balance(), strength))
    if params["harmonics"] > 0:
        lend = params["harmonics"]
        out.append(lambda loop, grad: P.harmonics(loop, lend))
    if params["sparsity"] > 0:
        share = params["sparsity"]
        out.append(lambda loop, grad: P.sparsify(loop, share, grad))
    if params["mix_original"] > 0:
        mix = params["mix_original"]
        out.append(lambda loop, grad: (1 - mix) * loop + mix * start)
    if params["denoise"] > 0:
        strength = params["denoise"]
        out.append(lambda loop, grad: T.denoise(loop, strength))
    return tuple(out)


def run_transforms(stages: Sequence[Stage], loop: torch.Tensor, gen: torch.Generator, timed=None) -> torch.Tensor:
    """The loop through the chain; `timed(name)` (a context manager) times each stage."""
    x = loop
    for stage in stages:
        if timed is None:
            x = stage(x, gen)
        else:
            with timed(stage.name):
                x = stage(x, gen)
    return x
