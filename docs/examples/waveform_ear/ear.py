"""A third kind of ear, in one file: a small 1-D convnet that hears the waveform itself.

Run it through the whole instrument by naming this file:

    immersions perform --model docs/examples/waveform_ear/ear.py

This file is code, and naming it runs it as Python runs a script: use only model files you
trust. Its weights are `model.safetensors` beside it (data, loaded with safetensors);
`stats.safetensors` and `layout.npz` beside it are its activation statistics and its map.
`train.py` beside it made all three in a few minutes on two CPU cores (see its docstring).

What the instrument needs of an ear is `immersions.model.ear.Ear` (docs/architecture.md):
the factory `make_ear()` returns one, untrained; the loader fills in the weights.

The network, at 16 kHz: four strided causal convolutions over the waveform (no pitch axis:
each tap is channels x time), and a summary of the whole loop (one time step):

    waveform [B, samples]
      -> wave 1: conv 64 samples, stride 16   -> ReLU  [B, 32, 1, samples / 16]
      -> wave 2: conv 8, stride 4             -> ReLU  [B, 48, 1, samples / 64]
      -> wave 3: conv 8, stride 4             -> ReLU  [B, 64, 1, samples / 256]
      -> wave 4: conv 4, stride 4             -> ReLU  [B, 64, 1, samples / 1024]
      -> summary: mean over time, linear      -> ReLU  [B, 32, 1, 1]

It was trained contrastively (SimCLR's loss): two excerpts of one procedural track should
have summaries closer to each other than to any other track's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from immersions.audio.scalogram import Scalogram, ScalogramConfig
from immersions.model.ear import Ear, Link, Tap, kernel_strength

SAMPLE_RATE = 16000
LOOP_SECONDS = 4.0
# (channels, kernel, stride) of each convolution
CONVS = ((32, 64, 16), (48, 8, 4), (64, 8, 4), (64, 4, 4))
SUMMARY = 32
STRIDE = 16 * 4 * 4 * 4  # samples per step of the last convolution
CONTEXT = 2 * STRIDE  # past samples a loop's start hears from its end (>= the receptive field, 1392)


class WaveformEar(Ear):
    kind = "waveform-convnet"
    hears_scalogram = False  # it reads the waveform: the dream's scalogram transforms are left out

    def __init__(self):
        super().__init__()
        convs, c_in = [], 1
        for channels, kernel, stride in CONVS:
            convs.append(nn.Conv1d(c_in, channels, kernel, stride))
            c_in = channels
        self.convs = nn.ModuleList(convs)
        self.summary = nn.Linear(c_in, SUMMARY)
        # the house's picture of the sound (the HUD, the energy penalties); not the network's input
        self.scalogram = Scalogram(ScalogramConfig(SAMPLE_RATE))
        taps, stride = [], 1
        for i, (channels, _, s) in enumerate(CONVS, start=1):
            stride *= s
            taps.append(Tap(len(taps), f"wave{i}", f"wave {i}", channels, 1, stride))
        taps.append(Tap(len(taps), "summary", "summary", SUMMARY, 1, stride, time_axis=False))
        self.taps = tuple(taps)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def loop_seconds(self) -> float:
        return LOOP_SECONDS

    @property
    def name(self) -> str:
        return "waveform"

    def config_dict(self) -> dict:
        return {"convs": [list(c) for c in CONVS], "summary": SUMMARY, "sample_rate": SAMPLE_RATE}

    def origin(self) -> dict:
        """What `immersions info` says made it (this ear has no training record of the house's)."""
        return {"made_by": "trained contrastively (SimCLR's loss) for a few minutes on the procedural corpus "
                           "by train.py beside this file",
                "network": "a 1-D convnet over the waveform (docs/examples/waveform_ear)",
                "weights": "model.safetensors beside this file", "licence": None}

    def hear(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        return audio  # the waveform is what it reads

    def read(self, heard: torch.Tensor) -> list[torch.Tensor]:
        """Taps of a loop [B, samples]: its end is prepended as the start's past and its start
        appended up to a whole step, so nothing is heard at the seam that the loop lacks."""
        samples = heard.shape[-1]
        after = -samples % STRIDE
        x = heard
        while x.shape[-1] < CONTEXT + samples + after:  # a loop shorter than the context repeats
            x = torch.cat([heard, x], dim=-1)
        x = torch.cat([x[..., x.shape[-1] - samples - CONTEXT:x.shape[-1] - samples], heard, x[..., :after]], dim=-1)
        x = x[:, None]
        taps, step = [], 1
        for conv, (_, kernel, stride) in zip(self.convs, CONVS):
            x = F.relu(conv(F.pad(x, (kernel - stride, 0))))  # causal: padded at the start only
            step *= stride
            taps.append(x[:, :, None, CONTEXT // step:CONTEXT // step + -(-samples // step)])
        summary = F.relu(self.summary(taps[-1].mean(dim=(2, 3))))
        return [*taps, summary[:, :, None, None]]

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """Training: the summary before its ReLU, for excerpts (not loops) [B, samples]."""
        x = audio[:, None]
        for conv, (_, kernel, stride) in zip(self.convs, CONVS):
            x = F.relu(conv(F.pad(x, (kernel - stride, 0))))
        return self.summary(x.mean(dim=2))

    def links(self) -> list[Link]:
        out = [Link(i - 1, i, kernel_strength(conv.weight)) for i, conv in enumerate(self.convs) if i > 0]
        # the summary is a linear map of the last convolution's time-averaged channels
        dense = self.summary.weight.detach().abs().numpy()
        out.append(Link(len(self.convs) - 1, len(self.convs), dense=dense))
        return out


def make_ear() -> Ear:
    """The factory `--model path/to/ear.py` calls: the ear, untrained."""
    return WaveformEar()
