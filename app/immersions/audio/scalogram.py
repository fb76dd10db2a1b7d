"""A differentiable constant-Q scalogram, computed in the frequency domain.

The original built the CQT as 1-D convolutions with filters up to 65 536 samples long;
half of all optimization compute went there. Here each bin's filter (a Hann-windowed
complex exponential, L1-normalized, as in nnAudio and librosa) is applied where it is
cheap: in the spectrum of the whole signal. Its frequency response is nonzero only in a
narrow band around the bin's centre, so per bin we

1. take that band of the signal's FFT (a gather of W_k bins) and multiply by the
   filter's response,
2. fold the band onto M = n_samples / hop bins (sum of the aliases), and
3. take an M-point inverse FFT.

Folding before the inverse FFT is exactly sampling the filtered signal every `hop`
samples, so the result equals a strided convolution, at the cost of one FFT per item
and a few small inverse FFTs. The signal is treated as periodic (circular), which is
what a loop is; `circular=False` zero-pads instead, for training on excerpts.

Output: log power `log(1 + |X|^2 / eps) / log(1 / eps)`: silence is exactly 0, a
full-scale sine is about 1, and nothing takes a square root, so silence gives finite
gradients (nnAudio's magnitude output takes sqrt without epsilon: NaN at silence).
The complex output is in baseband (each bin demodulated to 0 Hz); its magnitude is the
usual CQT magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Half-width of the band kept per bin, in units of the bin's bandwidth f_k / Q. A Hann
# window's main lobe spans +-2 f_k/Q; at +-6 the response is below -60 dB.
_BAND_HALF_WIDTH = 6.0
# Plans are cached per signal length; a few lengths are in use at a time (loop, excerpt).
_MAX_PLANS = 8


@dataclass(frozen=True)
class ScalogramConfig:
    sample_rate: int = 16000
    fmin: float = 30.0
    n_bins: int = 256
    bins_per_octave: int = 32
    hop: int = 128
    filter_scale: float = 1.0
    eps: float = 1e-8  # power floor, about -80 dB re a full-scale sine

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop

    @property
    def q(self) -> float:
        return self.filter_scale / (2.0 ** (1.0 / self.bins_per_octave) - 1.0)

    def frequencies(self) -> np.ndarray:
        return self.fmin * 2.0 ** (np.arange(self.n_bins) / self.bins_per_octave)

    def kernel_lengths(self) -> np.ndarray:
        return np.ceil(self.q * self.sample_rate / self.frequencies()).astype(np.int64)

    def validate(self) -> None:
        top = self.frequencies()[-1]
        if top >= self.sample_rate / 2:
            raise ValueError(
                f"top CQT bin {top:.0f} Hz is above Nyquist ({self.sample_rate / 2:.0f} Hz): "
                "lower n_bins or fmin"
            )


class _BandPlan:
    """Precomputed gather indices and filter responses for one signal length."""

    def __init__(self, cfg: ScalogramConfig, n_samples: int, device: torch.device):
        n_frames = n_samples // cfg.hop
        freqs = cfg.frequencies()
        lengths = cfg.kernel_lengths()
        resolution = cfg.sample_rate / n_samples  # Hz per FFT bin
        half_bins = np.ceil(_BAND_HALF_WIDTH * freqs / cfg.q / resolution).astype(np.int64) + 1
        folds = np.maximum(1, np.ceil(2 * half_bins / n_frames)).astype(np.int64)
        self.n_frames = n_frames
        self.groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
        for fold in np.unique(folds):
            bins = np.flatnonzero(folds == fold)
            width = int(fold * n_frames)
            centres = np.round(freqs[bins] / resolution).astype(np.int64)
            starts = centres - width // 2
            offsets = np.arange(width)
            index = (starts[:, None] + offsets[None, :]) % n_samples  # circular frequency index
            response = _kernel_responses(freqs[bins], lengths[bins], cfg.sample_rate, n_samples, index)
            self.groups.append((
                torch.as_tensor(bins, device=device),
                torch.as_tensor(index, device=device),
                torch.as_tensor(response, dtype=torch.complex64, device=device),
                int(fold),
            ))
        # the groups follow the kernels' widths, which grow with frequency: their bins, in
        # order, are every bin in order (kept as a check, with a slower path if not)
        self.in_order = bool(np.array_equal(np.concatenate([np.flatnonzero(folds == f) for f in np.unique(folds)]),
                                            np.arange(len(freqs))))


def _kernel_responses(freqs: np.ndarray, lengths: np.ndarray, sample_rate: int, n_samples: int,
                      index: np.ndarray, chunk: int = 16) -> np.ndarray:
    """DFT (length n_samples) of each bin's centred, L1-normalized Hann-windowed complex
    exponential, kept at the FFT bins `index` [bins, width]; divided by n_samples so that
    the inverse FFT's bookkeeping is folded in."""
    out = np.empty(index.shape, dtype=np.complex128)
    for lo in range(0, len(freqs), chunk):
        hi = min(lo + chunk, len(freqs))
        kernels = np.zeros((hi - lo, n_samples), dtype=np.complex128)
        for row, (freq, length) in enumerate(zip(freqs[lo:hi], lengths[lo:hi])):
            t = np.arange(-(length // 2), length - length // 2)
            window = np.hanning(length + 2)[1:-1]
            kernel = window * np.exp(2j * np.pi * freq * t / sample_rate)
            kernels[row, t % n_samples] = kernel / np.abs(kernel).sum()
        spectra = np.fft.fft(kernels, axis=1)
        out[lo:hi] = np.take_along_axis(spectra, index[lo:hi], axis=1) / n_samples
    return out


class Scalogram(nn.Module):
    """Waveform [batch, samples] -> log-power scalogram [batch, n_bins, frames]."""

    def __init__(self, cfg: ScalogramConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self._plans: dict[tuple[int, str], _BandPlan] = {}
        self._log_eps = math.log(1.0 / cfg.eps)

    @property
    def pad(self) -> int:
        """Zero padding per side for non-circular use: half the longest kernel, in whole hops."""
        half = int(self.cfg.kernel_lengths().max()) // 2
        return int(math.ceil(half / self.cfg.hop)) * self.cfg.hop

    def _plan(self, n_samples: int, device: torch.device) -> _BandPlan:
        key = (n_samples, str(device))
        plan = self._plans.pop(key, None) or _BandPlan(self.cfg, n_samples, device)
        self._plans[key] = plan  # most recently used last
        while len(self._plans) > _MAX_PLANS:
            self._plans.pop(next(iter(self._plans)))
        return plan

    def complex(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        """Complex CQT in baseband, [batch, n_bins, frames]; frames = ceil(samples / hop)."""
        if audio.dim() == 1:
            audio = audio[None]
        hop = self.cfg.hop
        n = audio.shape[-1]
        n_frames = -(-n // hop)
        pad_left = 0 if circular else self.pad
        pad_right = n_frames * hop - n + (0 if circular else self.pad)
        if pad_left or pad_right:
            audio = nn.functional.pad(audio, (pad_left, pad_right))
        n_padded = audio.shape[-1]
        plan = self._plan(n_padded, audio.device)
        spectrum = torch.fft.fft(audio.float(), dim=-1)
        parts = []
        for bins, index, response, fold in plan.groups:
            # index_select rather than advanced indexing: its backward (index_add) sums the
            # overlapping bands' gradients in index order
            band = spectrum.index_select(1, index.reshape(-1)).view(-1, *index.shape) * response
            band = band.reshape(audio.shape[0], len(bins), fold, plan.n_frames).sum(dim=2)
            parts.append(torch.fft.ifft(band, dim=-1) * plan.n_frames)
        if plan.in_order:  # one concatenation: placing each group in a full copy cost a copy a group, both ways
            out = torch.cat(parts, dim=1)
        else:
            out = audio.new_zeros((audio.shape[0], self.cfg.n_bins, plan.n_frames), dtype=torch.complex64)
            for (bins, *_), part in zip(plan.groups, parts):
                out = out.index_copy(1, bins, part)
        first = pad_left // hop
        return out[..., first:first + n_frames]

    def forward(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        z = self.complex(audio, circular=circular)
        power = z.real.square() + z.imag.square()
        return torch.log1p(power / self.cfg.eps) / self._log_eps

    def magnitude(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        return self.complex(audio, circular=circular).abs()
