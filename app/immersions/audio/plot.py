"""Draw a scalogram to PNG, so a person can look at what the model hears."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from immersions.audio.scalogram import Scalogram, ScalogramConfig


def save_scalogram_png(audio: np.ndarray, sample_rate: int, path: str | os.PathLike,
                       cfg: ScalogramConfig | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = cfg or ScalogramConfig(sample_rate=sample_rate)
    with torch.no_grad():
        image = Scalogram(cfg)(torch.from_numpy(np.asarray(audio, np.float32)), circular=False)[0].numpy()
    seconds = len(audio) / sample_rate
    fig, ax = plt.subplots(figsize=(min(24, 4 + seconds / 3), 4.5))
    ax.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, cfg.n_bins))
    octaves = np.arange(0, cfg.n_bins, cfg.bins_per_octave)
    ax.set_yticks(octaves, [f"{cfg.fmin * 2 ** (b / cfg.bins_per_octave):.0f}" for b in octaves])
    ax.set(xlabel="seconds", ylabel="Hz", title="scalogram (log power)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
