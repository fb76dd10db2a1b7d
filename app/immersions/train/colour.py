"""Random colourings of training excerpts, so that what a file carries is no cue to its music.

Two excerpts of one file share its mastering level and the band its codec kept (a Vorbis file
at low quality has nothing over 14 kHz, a 22-kHz file nothing over 11), and a package's files
share both. An objective that asks "is this the same excerpt, the same track?" can be met by
those alone. `recolour` gives every excerpt its own level, tilt and top end.

`two_views` is CPC's answer (`train --views`): every excerpt heard twice, through two
independent colourings. The context hears one and must pick out its future among the other
excerpts' encodings as the other colouring gives them (and the other way round), so a
prediction cannot lean on the level, balance or band the context heard: only the music is
the same in both. The two views of an item are aligned sample for sample.
"""

from __future__ import annotations

import numpy as np
import torch


def recolour(items: torch.Tensor, sample_rate: int, rng: np.random.Generator) -> torch.Tensor:
    """Each excerpt through its own random colouring: a gain of +-6 dB, a tilt of +-3 dB an
    octave round 1 kHz, and half of them a low-pass between 4 and 16 kHz (a half-octave
    cosine roll-off). One FFT per excerpt, on the batch thread; the generator decides
    everything, so a resumed run colours as the uninterrupted one did."""
    n = items.shape[-1]
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    out = np.empty(items.shape, dtype=np.float32)
    for row, item in enumerate(items.numpy()):
        gain_db = rng.uniform(-6.0, 6.0) + rng.uniform(-3.0, 3.0) * octaves
        response = 10.0 ** (gain_db / 20.0)
        if rng.random() < 0.5:
            cutoff = np.log2(rng.uniform(4000.0, 16000.0) / 1000.0)
            fall = np.clip((octaves - cutoff) / 0.5, 0.0, 1.0)  # 0 below the cutoff, 1 half an octave over it
            response = response * 0.5 * (1.0 + np.cos(np.pi * fall))
        out[row] = np.fft.irfft(np.fft.rfft(item) * response, n)
    return torch.from_numpy(out)


def two_views(items: torch.Tensor, sample_rate: int, rng: np.random.Generator) -> torch.Tensor:
    """[2B, samples]: every excerpt through one colouring (rows 0..B-1), then through another
    (rows B..2B-1, the same order)."""
    return torch.cat([recolour(items, sample_rate, rng), recolour(items, sample_rate, rng)])
