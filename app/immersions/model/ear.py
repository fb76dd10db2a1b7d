"""What an ear is to the rest of the house: any torch network the instrument can listen
through, dream into and draw.

An `Ear` is an `nn.Module` that declares
- `sample_rate`, and `loop_seconds` (the loop its statistics are measured on);
- `taps`: named post-nonlinearity activations, each with a declared layout (`Tap`):
  channels, an optional pitch/frequency axis, an optional time axis;
- how audio reaches the taps, in two halves so that a dream's transforms can act between
  them: `hear(audio)` makes what the network reads (a scalogram [batch, bins, frames] when
  `hears_scalogram`, else anything, e.g. the waveform itself), `read(heard)` gives every tap
  as [batch, channel, pitch, time], the audio heard as a loop (its end runs into its start);
- `links()`: the neuron graph's weighted edges, from the network's own layers (see `Link`);
- `config_dict()`, to be saved beside its weights (safetensors + JSON, never a pickle);
- `dream_spaces`: the loop parameterizations a dream may take with it.

Node order, shared by the dream engine, the layout and the renderer: tap by tap, then
channel, then pitch:  node = node_offsets[tap] + channel * tap.pitches + pitch.
Time is not a node dimension; it is animated.

`scalogram` is the house's picture of what the ear hears (the overlay's strip, the energy
and brightness penalties). An ear that hears a scalogram hears this one; any other ear keeps
one at its own rate for the picture, and the dream's pitch shifts and masks are left out.
`immersions.model.cpc.CPC` is the first ear; `docs/examples/waveform_ear.py` a second kind.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

# the loop parameterizations of dream/spaces.py (listed here, not imported: model/ sits below dream/)
DREAM_SPACES = ("waveform", "spectrum", "stft", "components")


@dataclass(frozen=True)
class Tap:
    """A named post-nonlinearity activation that selection and visuals can address, and its
    declared layout. Every tap is handed on as [batch, channel, pitch, time]:
    - a tap without a pitch (or frequency) axis has `pitches` 1 (a 1-D layer, a dense layer);
    - a tap without a time axis (`time_axis` False) has one time step however long the loop
      (a summary of the whole loop, a single frame)."""

    index: int
    key: str  # stable identifier, e.g. "enc3.conv2", "ar5"
    name: str  # for people, e.g. "enc 3 conv 2"
    channels: int
    pitches: int
    time_stride: int  # input frames (the scalogram's, or samples for a waveform ear) per time step
    time_axis: bool = True
    pitch_label: str = "pitch"  # what the second axis is, in words ("pitch", "frequency", "note")

    def shape(self, frames: int) -> tuple[int, int, int]:
        """(channel, pitch, time) for an input of `frames` frames."""
        return (self.channels, self.pitches, -(-frames // self.time_stride) if self.time_axis else 1)

    @property
    def neurons(self) -> int:
        """Graph nodes of this tap: one per (channel, pitch)."""
        return self.channels * self.pitches

    @property
    def pitch_axis(self) -> bool:
        return self.pitches > 1

    def layout_words(self) -> str:
        """The tap's layout for people: '16 channels x 64 pitch bins x time', and the axes it lacks."""
        axes, missing = [f"{self.channels} channel{'s' if self.channels != 1 else ''}"], []
        if self.pitch_axis:
            axes.append(f"{self.pitches} {self.pitch_label} bins")
        else:
            missing.append(f"no {self.pitch_label} axis")
        if self.time_axis:
            axes.append("time")
        else:
            missing.append("one time step")
        return "; ".join([" x ".join(axes), *missing])


@dataclass(frozen=True)
class Link:
    """The weighted connections of one layer from tap `src` to tap `dst` (indices), in one of
    two forms:
    - a convolution over pitch: `strength` [c_out, c_in, kernel pitches], each entry the
      kernel's magnitude at that pitch offset (summed over its time taps, times any
      normalization's scale), after a max-pool of `pool` pitches in front of it ('same'
      padding: zeros outside the range give no edge); a layer without a pitch axis is
      [c_out, c_in, 1]; an identity residual is the eye;
    - any other map: `dense` [dst neurons, src neurons] (e.g. a linear layer onto a 360-bin
      pitch output), every nonzero entry one edge.
    Links between the same two taps are kept as separate parts of the graph, in order."""

    src: int
    dst: int
    strength: np.ndarray | None = None
    pool: int = 1
    dense: np.ndarray | None = None


def kernel_strength(weight: torch.Tensor, scale: torch.Tensor | None = None) -> np.ndarray:
    """|kernel| summed over time, times a per-output-channel `scale` (a following batch norm's):
    [c_out, c_in, pitch offsets] for conv2d [c_out, c_in, pitch, time], [c_out, c_in, 1] for
    conv1d [c_out, c_in, time] and linear [c_out, c_in] (no pitch axis)."""
    w = weight.detach().float().abs()
    if w.dim() == 4:
        m = w.sum(dim=3)
    elif w.dim() == 3:
        m = w.sum(dim=2, keepdim=True)
    else:
        m = w[:, :, None]
    return (m if scale is None else m * scale.detach().float()[:, None, None]).numpy()


def batch_norm_scale(bn: nn.Module) -> torch.Tensor:
    """|gamma| / sqrt(var + eps): how much an eval-mode batch norm scales each channel."""
    return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()


class Ear(nn.Module, ABC):
    """A network the instrument listens through (see the module's docstring)."""

    taps: tuple[Tap, ...]
    sample_rate: int
    loop_seconds: float
    hears_scalogram: bool = True
    dream_spaces: tuple[str, ...] = DREAM_SPACES
    kind: str = "ear"  # what config.json calls this kind of ear
    # set by the loader: where it came from, and the meta saved with it
    folder: Path | None = None
    meta: dict

    scalogram: nn.Module  # the house's picture of the sound: audio [B, samples] -> [B, bins, frames]

    @abstractmethod
    def hear(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        """Audio [batch, samples] -> what the network reads (circular: as a loop)."""

    @abstractmethod
    def read(self, heard: torch.Tensor) -> list[torch.Tensor]:
        """Every tap of what `hear` made, each [batch, channel, pitch, time], in the order of
        `taps`, heard as a loop (no seam at the loop boundary)."""

    @abstractmethod
    def links(self) -> list[Link]:
        """The neuron graph's weighted edges, derived from the network's own layers."""

    @abstractmethod
    def config_dict(self) -> dict:
        """What rebuilds this ear's architecture (JSON), saved beside its weights."""

    def describe(self) -> dict:
        """Facts about the ear's front end for `immersions info` (JSON-able)."""
        return {}

    def origin(self) -> dict | None:
        """Where this ear's weights come from, when not from a training run of ours (whose steps
        its config's meta records): {"made_by": words, "weights": where they are, "licence":
        theirs or None}, JSON-able, for `immersions info`. None: a training record says."""
        return None

    def frames(self, samples: int) -> int:
        """Input frames (the unit of `Tap.time_stride`) for `samples` of audio: a waveform
        ear's are samples."""
        return samples

    # -- what follows from the above ---------------------------------------------------------

    def activations(self, audio: torch.Tensor, circular: bool = True) -> list[torch.Tensor]:
        """Every tap for audio [batch, samples], each [batch, channel, pitch, time]."""
        return self.read(self.hear(audio, circular=circular))

    def picture(self, audio: torch.Tensor, heard: torch.Tensor, circular: bool = True) -> torch.Tensor:
        """The scalogram [batch, bins, frames] the house draws and penalizes for `audio`
        (for an ear that hears a scalogram: what it heard)."""
        return heard if self.hears_scalogram else self.scalogram(audio, circular=circular)

    @property
    def pitch_grid(self) -> tuple[int, int] | None:
        """(bins per octave, hop) of the scalogram the network reads, for transposing parts
        of it; None when the network does not read one."""
        if not self.hears_scalogram:
            return None
        cfg = self.scalogram.cfg
        return cfg.bins_per_octave, cfg.hop

    @property
    def label(self) -> str:
        """What frames and logs call this ear: its folder, else its own name."""
        return str(self.folder) if self.folder is not None else self.name

    @property
    def name(self) -> str:
        return self.kind

    @property
    def graph_nodes(self) -> int:
        return sum(tap.neurons for tap in self.taps)

    @property
    def node_offsets(self) -> tuple[int, ...]:
        """Index of each tap's first graph node (see the node order above)."""
        offsets, total = [], 0
        for tap in self.taps:
            offsets.append(total)
            total += tap.neurons
        return tuple(offsets)

    def tap(self, name_or_index: str | int) -> Tap:
        for tap in self.taps:
            if name_or_index in (tap.index, tap.key, tap.name):
                return tap
        raise KeyError(name_or_index)

    @property
    def item_seconds(self) -> float:
        """How long the excerpts of a corpus are that its statistics are measured on."""
        return self.loop_seconds

    def loop_samples(self) -> int:
        return int(round(self.loop_seconds * self.sample_rate))

    def for_dreaming(self) -> "Ear":
        """A copy for the dream step: eval mode, weights frozen (an ear may also make its
        steps cheaper here, as CPC folds its batch norms)."""
        dreaming = copy.deepcopy(self).eval()
        for p in dreaming.parameters():
            p.requires_grad_(False)
        return dreaming

    def redirect_relus(self, on: bool = True) -> None:
        """Dreaming: let gradients reach channels that are off (CPC's RedirectedReLU). An ear
        without such units ignores it."""
