"""What the performer selected: regions of the network's taps.

Per dimension (channel, pitch, time) a position and a span in [0, 1];
start = floor(pos * (1 - span) * n), end = start + floor(span * n) + 1 (capped at n),
so span 0 selects one neuron and span 1 the whole axis. `keep` adds a new region to the
selection; otherwise it replaces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from immersions.errors import ImmersionsError


def axis_range(pos: float, span: float, n: int) -> tuple[int, int]:
    """[start, end) of the selected indices along an axis of n."""
    for label, v in (("position", pos), ("span", span)):
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ImmersionsError(f"selection {label} {v!r} is outside 0 .. 1")
    start = min(n - 1, int(math.floor(pos * (1.0 - span) * n)))
    end = min(n, start + int(math.floor(span * n)) + 1)
    return start, end


@dataclass(frozen=True)
class Region:
    """One selected block of a tap: (pos, span) per axis."""

    tap: int
    channel: tuple[float, float] = (0.5, 0.0)
    pitch: tuple[float, float] = (0.5, 1.0)
    time: tuple[float, float] = (0.5, 1.0)

    def bounds(self, shape: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
        return tuple(axis_range(pos, span, n) for (pos, span), n in zip((self.channel, self.pitch, self.time), shape))

    def mask(self, shape: tuple[int, int, int]) -> torch.Tensor:
        (c0, c1), (p0, p1), (t0, t1) = self.bounds(shape)
        m = torch.zeros(shape, dtype=torch.bool)
        m[c0:c1, p0:p1, t0:t1] = True
        return m


@dataclass(frozen=True)
class Selection:
    """The union of the active regions."""

    regions: tuple[Region, ...] = ()

    def add(self, region: Region, keep: bool) -> "Selection":
        return Selection((self.regions if keep else ()) + (region,))

    def edit(self, region: Region) -> "Selection":
        """The last region (the one being edited) replaced by `region`; kept ones stay."""
        return Selection(self.regions[:-1] + (region,))

    def masks(self, shapes: dict[int, tuple[int, int, int]]) -> dict[int, torch.Tensor]:
        """tap index -> boolean mask [channel, pitch, time] of the selected neurons."""
        out: dict[int, torch.Tensor] = {}
        for region in self.regions:
            m = region.mask(shapes[region.tap])
            out[region.tap] = out[region.tap] | m if region.tap in out else m
        return out
