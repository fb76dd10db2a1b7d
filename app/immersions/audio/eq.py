"""A 3-band EQ for loops: low shelf, mid band, high shelf, as one smooth gain curve.

A loop is periodic, so the EQ is applied exactly in the frequency domain of the whole
loop (zero phase, no filter ring-in at the loop boundary). Band edges cross over smoothly
across about an octave in log frequency.
"""

from __future__ import annotations

import numpy as np
import torch

LOW_EDGE_HZ = 250.0
HIGH_EDGE_HZ = 4000.0
_CROSSOVER_OCTAVES = 0.5  # logistic width of each transition


def gain_curve(freqs: np.ndarray, low_db: float, mid_db: float, high_db: float) -> np.ndarray:
    """Linear gain per frequency."""
    octaves = np.log2(np.maximum(freqs, 1.0))
    to_mid = 1.0 / (1.0 + np.exp(-(octaves - np.log2(LOW_EDGE_HZ)) / (_CROSSOVER_OCTAVES / 4)))
    to_high = 1.0 / (1.0 + np.exp(-(octaves - np.log2(HIGH_EDGE_HZ)) / (_CROSSOVER_OCTAVES / 4)))
    db = low_db * (1 - to_mid) + mid_db * (to_mid - to_high) + high_db * to_high
    return 10.0 ** (db / 20.0)


def equalize(loop: torch.Tensor, sample_rate: int, low_db: float, mid_db: float, high_db: float) -> torch.Tensor:
    if low_db == mid_db == high_db == 0.0:
        return loop
    n = loop.shape[-1]
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    gain = torch.as_tensor(gain_curve(freqs, low_db, mid_db, high_db), dtype=torch.float32, device=loop.device)
    return torch.fft.irfft(torch.fft.rfft(loop) * gain, n=n)
