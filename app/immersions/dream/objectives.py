"""Objectives: what a dream step maximizes, as an algebra.

    objective = selection(regions) - 0.5 * activation_penalty() - 0.1 * energy()

An `Objective` is a function of a `Reading` (the activations of every tap for a batch of
copies, their scalograms, the model's statistics) returning one number per batch; they
add, subtract, scale, divide and `sum()` like numbers. The dream step only calls it.

A selection's objective weighs each group of regions of one weight: "excite A, quiet B"
is mean(A) - mean(B), so B falls while A rises.

What a selection is lives in `immersions.selection`. Activations are normalized per
neuron with the model's statistics: (a - mean on silence) / (std on data + 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import torch

from immersions.errors import ImmersionsError
from immersions.model.ear import Tap
from immersions.model.stats import TapStats
from immersions.selection import Selection

STD_FLOOR = 0.1  # keeps near-silent neurons from dominating the normalized objective


@dataclass
class Reading:
    """What the network made of a batch of copies: everything an objective may read."""

    taps: Sequence[Tap]
    activations: Sequence[torch.Tensor]  # per tap [copies, channel, pitch, time]
    # the copies' scalogram [copies, bins, frames], or what makes it when first asked for (an
    # ear that does not hear a scalogram has it drawn only for an objective that reads it)
    picture: torch.Tensor | Callable[[], torch.Tensor]
    stats: dict[str, TapStats] | None

    @cached_property
    def scalogram(self) -> torch.Tensor:
        return self.picture() if callable(self.picture) else self.picture

    def normalized(self, index: int) -> torch.Tensor:
        a = self.activations[index]
        if self.stats is None:
            return a
        s = self.stats[self.taps[index].key]
        rest = s.silence_mean.to(a.device)[None, :, :, None]
        spread = s.data_std.to(a.device)[None, :, :, None] + STD_FLOOR
        return (a - rest) / spread


class Objective:
    def __init__(self, fn: Callable[[Reading], torch.Tensor], name: str):
        self.fn, self.name = fn, name

    def __call__(self, reading: Reading) -> torch.Tensor:
        return self.fn(reading)

    def __add__(self, other: "Objective") -> "Objective":
        return Objective(lambda p: self(p) + other(p), f"{self.name} + {other.name}")

    def __sub__(self, other: "Objective") -> "Objective":
        return Objective(lambda p: self(p) - other(p), f"{self.name} - {other.name}")

    def __mul__(self, k: float) -> "Objective":
        return Objective(lambda p: k * self(p), f"{k:g} * {self.name}")

    __rmul__ = __mul__

    def __radd__(self, other) -> "Objective":
        """`0 + objective`, so that the builtin sum() of objectives is an objective."""
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented

    def __truediv__(self, k: float) -> "Objective":
        return Objective(lambda p: self(p) / k, f"{self.name} / {k:g}")

    def __neg__(self) -> "Objective":
        return -1.0 * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def selection(sel: Selection) -> Objective:
    """The selection's weighted mean normalized activation: for each weight, the mean over the
    union of that weight's regions (over all copies), times the weight, summed. With every
    region at weight 1 this is the mean over the selected neurons."""
    if not sel.regions:
        raise ImmersionsError("nothing is selected: choose a layer and a region first")
    terms = [_union_mean(group) if w == 1.0 else w * _union_mean(group) for w, group in sel.by_weight().items()]
    objective = sum(terms)
    objective.name = f"selection({len(sel.regions)} region{'s' if len(sel.regions) > 1 else ''})"
    return objective


def _union_mean(sel: Selection) -> Objective:
    def fn(p: Reading) -> torch.Tensor:
        total, count = 0.0, 0
        shapes = {i: tuple(p.activations[i].shape[1:]) for i in {r.tap for r in sel.regions}}
        for index, mask in sel.masks(shapes).items():
            a = p.normalized(index)
            total = total + a[:, mask.to(a.device)].sum()
            count += int(mask.sum()) * a.shape[0]
        return total / count

    return Objective(fn, "mean")


def surround(sel: Selection, share: float = 1.0) -> Objective:
    """The neurons that share a tap with an excited region but are not selected, by their mean
    normalized activation: subtracted, the selection must rise above its own layer, not with
    it (louder loops lift most neurons of a tap at once).

    With `share` 1 that is the mean over all of them. Below 1 it is the mean of the loudest
    `share` of the layer's other channels (at least one), each channel by its mean over its
    unselected positions, taken again at every step: the ones rising with the selection. An
    ear couples some channels tightly (real music drives them together), and a mean over the
    whole layer hardly sees the one or two that follow the selection."""
    excited = Selection(tuple(r for r in sel.regions if r.weight > 0))

    def fn(p: Reading) -> torch.Tensor:
        terms, total, count = [], 0.0, 0
        shapes = {i: tuple(p.activations[i].shape[1:]) for i in {r.tap for r in sel.regions}}
        chosen = sel.masks(shapes)
        for index in excited.masks(shapes):
            rest = ~chosen[index].to(p.activations[index].device)
            if not rest.any():
                continue
            a = p.normalized(index)
            if share >= 1.0:
                total = total + a[:, rest].sum()
                count += int(rest.sum()) * a.shape[0]
                continue
            cells = rest.flatten(1).sum(dim=1)  # unselected positions per channel
            others = cells > 0
            per_channel = (a * rest).flatten(2).sum(dim=2)[:, others] / cells[others]  # [copies, channels]
            k = max(1, int(share * per_channel.shape[1]))
            terms.append(per_channel.topk(k, dim=1).values.mean())
        if count:
            terms.append(total / count)
        return torch.stack(terms).mean() if terms else torch.zeros(())

    return Objective(fn, "surround" if share >= 1.0 else f"surround(loudest {share:g})")


def activation_penalty() -> Objective:
    """Mean |normalized activation| over every neuron of every tap: keeps the rest quiet."""

    def fn(p: Reading) -> torch.Tensor:
        return torch.stack([p.normalized(i).abs().mean() for i in range(len(p.activations))]).mean()

    return Objective(fn, "activation_penalty")


def energy() -> Objective:
    """Mean scalogram level: loudness and noise."""
    return Objective(lambda p: p.scalogram.mean(), "energy")


def high_frequency() -> Objective:
    """Scalogram level weighted by a ramp from 0 at the middle bin to 1 at the top."""

    def fn(p: Reading) -> torch.Tensor:
        bins = p.scalogram.shape[1]
        ramp = torch.linspace(-1.0, 1.0, bins, device=p.scalogram.device).clamp_min(0)
        return (p.scalogram * ramp[None, :, None]).sum(dim=1).mean() / ramp.sum()

    return Objective(fn, "high_frequency")
