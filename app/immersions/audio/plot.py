"""Draw a scalogram to PNG, so a person can look at what the model hears.

A long signal is transformed in pieces (`picture_scalogram`): the frequency-domain
scalogram builds one plan per signal length, and a plan for a whole minute (about a
million samples) costs a minute of FFTs, while the transform itself takes a second. Every
piece has the same length, so one small plan serves them all and the work grows with the
length of the sound, not with its plan.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from immersions.audio.scalogram import Scalogram, ScalogramConfig

DPI = 80
PICTURE_CHUNK = 1 << 15  # samples a piece adds to the picture (2 s at 16 kHz), or twice the padding when more


def picture_scalogram(audio: np.ndarray, cfg: ScalogramConfig, chunk: int | None = None,
                      scalogram: Scalogram | None = None) -> np.ndarray:
    """The log-power scalogram [n_bins, ceil(samples / hop)] of a signal taken as it is (zero
    before and after, as `Scalogram(..., circular=False)`), computed in pieces of `chunk`
    samples (rounded to whole hops), each with `scalogram.pad` samples of its neighbours on
    either side, so that every piece has one length and one plan. The default piece, 2 s at
    16 kHz (a plan of 57 344 samples), is where the plan and the pieces cost least together."""
    scalogram = scalogram or Scalogram(cfg)
    hop, pad = cfg.hop, scalogram.pad
    chunk = chunk or max(PICTURE_CHUNK, 2 * pad)
    chunk = max(hop, chunk // hop * hop)
    audio = np.asarray(audio, np.float32).reshape(-1)
    n_frames = -(-len(audio) // hop)
    pieces = max(1, -(-n_frames * hop // chunk))
    padded = np.zeros(pad + pieces * chunk + pad, np.float32)
    padded[pad:pad + len(audio)] = audio
    frames_per_piece, skip = chunk // hop, pad // hop
    image = np.empty((cfg.n_bins, pieces * frames_per_piece), np.float32)
    with torch.no_grad():
        for i in range(pieces):
            piece = torch.from_numpy(padded[i * chunk:i * chunk + chunk + 2 * pad])
            part = scalogram(piece, circular=True)[0]  # the pads hold the neighbours: no wrap reaches the middle
            image[:, i * frames_per_piece:(i + 1) * frames_per_piece] = part[:, skip:skip + frames_per_piece].numpy()
    return image[:, :n_frames]


def fit_columns(image: np.ndarray, columns: int) -> tuple[np.ndarray, int]:
    """The image's frames averaged in groups so that no more than about `columns` remain (the
    picture's width in pixels: more columns than pixels cost matplotlib time and show
    nothing more), and how many frames the result spans (a last part group is left out)."""
    factor = max(1, image.shape[1] // max(1, columns))
    if factor == 1:
        return image, image.shape[1]
    kept = image.shape[1] // factor * factor
    return image[:, :kept].reshape(image.shape[0], kept // factor, factor).mean(axis=2), kept


def save_scalogram_png(audio: np.ndarray, sample_rate: int, path: str | os.PathLike,
                       cfg: ScalogramConfig | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a full-band rate is drawn up to 16.5 kHz (28 bins an octave, as the full preset hears it)
    cfg = cfg or ScalogramConfig(sample_rate=sample_rate, bins_per_octave=28 if sample_rate >= 40000 else 32)
    image = picture_scalogram(audio, cfg)
    seconds = len(audio) / sample_rate
    fig, ax = plt.subplots(figsize=(min(24, 4 + seconds / 3), 4.5))
    image, shown = fit_columns(image, int(fig.get_figwidth() * DPI))
    ax.imshow(image, origin="lower", aspect="auto", cmap="magma",
              extent=(0, shown * cfg.hop / cfg.sample_rate, 0, cfg.n_bins))
    octaves = np.arange(0, cfg.n_bins, cfg.bins_per_octave)
    ax.set_yticks(octaves, [f"{cfg.fmin * 2 ** (b / cfg.bins_per_octave):.0f}" for b in octaves])
    ax.set(xlabel="seconds", ylabel="Hz", title="scalogram (log power)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
