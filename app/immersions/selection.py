"""What the performer selected: regions of the network's taps.

Per dimension (channel, pitch, time) a position and a span in [0, 1];
start = floor(pos * (1 - span) * n), end = start + floor(span * n) + 1 (capped at n),
so span 0 selects one neuron and span 1 the whole axis. `keep` adds a new region to the
selection; otherwise it replaces it.

Every region carries a weight: positive to excite its neurons, negative to quiet them
("make these fire and keep those quiet"). The performer's `quiet` toggle gives the region
being edited the weight -`quiet_weight` (default 2); presets, journeys, the remote protocol and the autopilot carry
any weight in -4 .. 4.

Here too: the `layer` fader's mapping onto taps, tap names, and the check that a region
fits a model; the model is only read through its taps (`name`, `index`, `shape(batch)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from immersions.errors import ImmersionsError

if TYPE_CHECKING:
    import torch


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
    weight: float = 1.0  # > 0 excites the region's neurons, < 0 quiets them

    def __post_init__(self):
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 < abs(w) <= MAX_WEIGHT:
            raise ImmersionsError(f"region weight {w!r} must be a number in -{MAX_WEIGHT:g} .. {MAX_WEIGHT:g}, not 0 "
                                  "(negative quiets the region, positive excites it)")

    @property
    def quiet(self) -> bool:
        return self.weight < 0

    def bounds(self, shape: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
        return tuple(axis_range(pos, span, n) for (pos, span), n in zip((self.channel, self.pitch, self.time), shape))

    def mask(self, shape: tuple[int, int, int]) -> torch.Tensor:
        import torch  # here, not at import: the installation and the command line read regions before torch loads

        (c0, c1), (p0, p1), (t0, t1) = self.bounds(shape)
        m = torch.zeros(shape, dtype=torch.bool)
        m[c0:c1, p0:p1, t0:t1] = True
        return m


@dataclass(frozen=True)
class Selection:
    """The active regions; the last one is the one being edited."""

    regions: tuple[Region, ...] = ()

    def add(self, region: Region, keep: bool) -> "Selection":
        return Selection((self.regions if keep else ()) + (region,))

    def edit(self, region: Region) -> "Selection":
        """The last region (the one being edited) replaced by `region`; kept ones stay."""
        return Selection(self.regions[:-1] + (region,))

    def by_weight(self) -> dict[float, "Selection"]:
        """The regions grouped by weight, in order of first appearance: each group is one
        union of neurons that the objective averages and weighs as a whole."""
        out: dict[float, list[Region]] = {}
        for region in self.regions:
            out.setdefault(float(region.weight), []).append(region)
        return {w: Selection(tuple(rs)) for w, rs in out.items()}

    def masks(self, shapes: Mapping[int, tuple[int, int, int]], quiet: bool | None = None) -> dict[int, torch.Tensor]:
        """tap index -> boolean mask [channel, pitch, time] of the selected neurons (only the
        quieted regions' with `quiet=True`, only the excited ones' with False, all with None)."""
        out: dict[int, torch.Tensor] = {}
        for region in self.regions:
            if quiet is not None and region.quiet != quiet:
                continue
            m = region.mask(shapes[region.tap])
            out[region.tap] = out[region.tap] | m if region.tap in out else m
        return out


MAX_WEIGHT = 4.0


@dataclass(frozen=True)
class NamedRegion:
    """A region by its tap's name, as a preset file keeps it (a file outlives a model's tap
    indexes): `on(taps)` finds the tap again, or says in one line that the model lacks it."""

    layer: str
    channel: tuple[float, float]
    pitch: tuple[float, float]
    time: tuple[float, float]
    weight: float = 1.0

    @staticmethod
    def of(region: Region, taps: Sequence) -> "NamedRegion":
        return NamedRegion(taps[region.tap].name, tuple(region.channel), tuple(region.pitch), tuple(region.time),
                           float(region.weight))

    def on(self, taps: Sequence) -> Region:
        region = Region(resolve_tap(taps, self.layer), self.channel, self.pitch, self.time, self.weight)
        check_region(taps, region)
        return region

    def as_table(self) -> dict:
        return {"layer": self.layer, "channel": list(self.channel), "pitch": list(self.pitch),
                "time": list(self.time), "weight": self.weight}

    @staticmethod
    def from_table(table) -> "NamedRegion":
        """From a preset's [[region]] table; ImmersionsError naming what is wrong."""
        if not isinstance(table, Mapping):
            raise ImmersionsError("a region must be a table (layer, channel, pitch, time, weight)")
        unknown = set(table) - {"layer", "channel", "pitch", "time", "weight"}
        if unknown:
            raise ImmersionsError(f"unknown region key '{sorted(unknown)[0]}'")
        layer = table.get("layer")
        if not isinstance(layer, str) or not layer.strip():
            raise ImmersionsError("a region needs layer = \"TAP NAME\"")
        axes = []
        for axis, default in (("channel", (0.5, 0.0)), ("pitch", (0.5, 1.0)), ("time", (0.5, 1.0))):
            pair = table.get(axis, list(default))
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in pair)):
                raise ImmersionsError(f"region {axis} must be [position, span] in 0 .. 1, not {pair!r}")
            axes.append((float(pair[0]), float(pair[1])))
        weight = table.get("weight", 1.0)
        Region(0, weight=weight)  # the weight's own check
        return NamedRegion(layer.strip(), *axes, float(weight))


# -- the layer fader, tap names, checks -------------------------------------------------------

def tap_of_layer(layer: float, taps: int) -> int:
    """The tap the `layer` fader (0 = first encoder tap, 1 = last context layer) stands on."""
    return min(taps - 1, int(round(layer * (taps - 1))))


def layer_of_tap(tap: int, taps: int) -> float:
    """The `layer` fader value that selects tap index `tap` of `taps`."""
    return tap / max(1, taps - 1)


def region_from_params(taps: int, params: Mapping) -> Region:
    """The selection parameters of a snapshot (layer, channel/pitch/time position and span,
    quiet and its weight) as the region being edited, on a model with `taps` taps."""
    return Region(tap_of_layer(params["layer"], taps), (params["channel_pos"], params["channel_span"]),
                  (params["pitch_pos"], params["pitch_span"]), (params["time_pos"], params["time_span"]),
                  -float(params["quiet_weight"]) if params["quiet"] else 1.0)


def resolve_tap(taps: Sequence, layer: str | int) -> int:
    """A tap index from its name (`enc 3 conv 1`, `ar 9`) or its index as text."""
    text = str(layer).strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(taps):
        return int(text)
    for tap in taps:
        if text in (tap.name, tap.key):
            return tap.index
    names = ", ".join(t.name for t in taps)
    raise ImmersionsError(f"unknown layer '{layer}'; valid layers: {names} (or their index 0-{len(taps) - 1})")


def check_region(taps: Sequence, region: Region) -> None:
    """ImmersionsError unless `region` fits these taps (checked in the caller's thread, before it
    reaches a dream thread or a worker)."""
    if not 0 <= region.tap < len(taps):
        raise ImmersionsError(f"no tap {region.tap} in this model (0-{len(taps) - 1})")
    region.bounds(taps[region.tap].shape(1))


# the snapshot's position and span of each axis a tap may lack
AXIS_PARAMETERS = {"pitch": ("pitch_pos", "pitch_span"), "time": ("time_pos", "time_span")}


def missing_axes(tap) -> dict[str, str]:
    """The axes `tap` lacks, each with what to say instead of drawing it: a tap without a
    pitch axis (a 1-D layer) selects every position of it whatever its span, and so does one
    with a single time step."""
    out = {}
    if not tap.pitch_axis:
        out["pitch"] = f"no {tap.pitch_label} axis"
    if not tap.time_axis:
        out["time"] = "one time step"
    return out


def region_words(tap, params: Mapping) -> str:
    """The selection on `tap` in words, for the HUD: only the axes it has, and which it lacks."""
    lacks = missing_axes(tap)
    axes = [f"channel {params['channel_pos']:.2f}+{params['channel_span']:.2f}"]
    for axis in ("pitch", "time"):
        pos, span = AXIS_PARAMETERS[axis]
        axes.append(f"({lacks[axis]})" if axis in lacks else f"{axis} {params[pos]:.2f}+{params[span]:.2f}")
    return f"{tap.name}  " + "  ".join(axes)


def fits(taps: Sequence, selection: Selection) -> bool:
    """Whether every region of `selection` names a tap of these (a model switch keeps it then)."""
    return all(r.tap < len(taps) for r in selection.regions)
