"""Per-neuron activation statistics, computed once after training and saved with the model.

For every tap, per (channel, pitch):
- silence_mean: the activation on a silent loop (the neuron's resting level),
- data_mean, data_std: over loops of real material and all their time steps.

Dreaming normalizes a neuron as (a - silence_mean) / (data_std + 0.1); the layout uses
data_std as a node's charge; the renderer scales brightness with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from immersions.errors import ImmersionsError
from immersions.model.checkpoint import STATS_FILE
from immersions.model.ear import Ear


class Excerpts(Protocol):
    """Where the data statistics' loops come from (a training corpus, train/dataset.py); named
    by what it does so that the model does not depend on training."""

    def batch(self, batch_size: int, samples: int, rng: np.random.Generator) -> torch.Tensor: ...


@dataclass
class TapStats:
    silence_mean: torch.Tensor  # [channel, pitch]
    data_mean: torch.Tensor
    data_std: torch.Tensor

    def silence_loving(self, channels: tuple[int, int], pitches: tuple[int, int]) -> float:
        """Share of these neurons whose resting level on silence is above their mean plus one
        std on real material. In the early layers such a neuron fires most at silence (the
        scalogram's floor) and any sound lowers it; deeper ones can still be driven higher."""
        (c0, c1), (p0, p1) = channels, pitches
        rest = self.silence_mean[c0:c1, p0:p1]
        return float((rest > self.data_mean[c0:c1, p0:p1] + self.data_std[c0:c1, p0:p1]).float().mean())


@torch.no_grad()
def compute_stats(model: Ear, corpus: Excerpts, clips: int = 64, batch: int = 8, seed: int = 0,
                  device: str | torch.device = "cpu") -> dict[str, TapStats]:
    model = model.eval()
    samples = model.loop_samples()
    silence = model.activations(torch.zeros(1, samples, device=device))
    rng = np.random.default_rng(seed)
    sums = [torch.zeros(t.channels, t.pitches, dtype=torch.float64, device=device) for t in model.taps]
    squares = [torch.zeros_like(s) for s in sums]
    counts = [0] * len(sums)
    for start in range(0, clips, batch):
        audio = corpus.batch(min(batch, clips - start), samples, rng).to(device)
        for i, act in enumerate(model.activations(audio)):
            a = act.double()
            sums[i] += a.sum(dim=(0, 3))
            squares[i] += a.square().sum(dim=(0, 3))
            counts[i] += a.shape[0] * a.shape[3]
    out = {}
    for tap, rest, s, sq, n in zip(model.taps, silence, sums, squares, counts):
        mean = s / n
        std = (sq / n - mean.square()).clamp_min(0).sqrt()
        out[tap.key] = TapStats(rest[0].mean(dim=-1).float().cpu(), mean.float().cpu(), std.float().cpu())
    return out


def save_stats(stats: dict[str, TapStats], folder: str | os.PathLike) -> Path:
    path = Path(folder) / STATS_FILE
    tensors = {}
    for key, s in stats.items():
        tensors[f"{key}.silence_mean"] = s.silence_mean.contiguous()
        tensors[f"{key}.data_mean"] = s.data_mean.contiguous()
        tensors[f"{key}.data_std"] = s.data_std.contiguous()
    save_file(tensors, str(path))
    return path


def load_stats(model: Ear) -> dict[str, TapStats] | None:
    """The statistics saved beside a loaded model, or None when it has none."""
    folder = getattr(model, "folder", None)
    if folder is None or not (Path(folder) / STATS_FILE).is_file():
        return None
    try:
        tensors = load_file(str(Path(folder) / STATS_FILE))
        out = {
            tap.key: TapStats(tensors[f"{tap.key}.silence_mean"], tensors[f"{tap.key}.data_mean"],
                              tensors[f"{tap.key}.data_std"])
            for tap in model.taps
        }
    except (OSError, KeyError, SafetensorError) as err:
        raise ImmersionsError(f"statistics in {folder} do not fit the model ({err}); recompute with `immersions stats`") from err
    for tap in model.taps:
        if tuple(out[tap.key].data_std.shape) != (tap.channels, tap.pitches):
            raise ImmersionsError(f"statistics in {folder} do not fit tap {tap.name}; recompute with `immersions stats`")
    return out
