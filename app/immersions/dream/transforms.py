"""Transforms: the five regularizers of the paper, each a small function with its own knobs.

Two kinds, applied at different places of a dream step:
- before the network (make the objective robust): `jitter` turns the loop into B copies
  circularly shifted in time; `pitch_shift`, `mask_time` and `mask_pitch` act on the
  copies' scalograms. Compose them with `compose(...)`; each takes (tensor, generator).
- around the update: `gradient_noise` perturbs the normalized gradient, `denoise` cleans
  the loop after the step.

Copy 0 is never shifted, so one copy always sees the loop as it will be heard.
Scalogram masks fill with 0, which is what silence looks like in our log-power scale.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def compose(*transforms: Transform) -> Transform:
    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for t in transforms:
            x = t(x, gen)
        return x

    return apply


def _randint(high: int, size: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, max(1, high), (size,), generator=gen).to(device)


def jitter(copies: int, max_shift: int, grid: int = 1, record: dict | None = None) -> Transform:
    """Loop [samples] -> [copies, samples], copy c rolled circularly by a random shift in
    [-max_shift, max_shift] (copy 0 unshifted). Large shifts smear the result into pads.

    With `grid` > 1 (samples per beat or sixteenth) the shifts are whole multiples of the
    grid, at least one step either way: a sound must do its work on every beat, not at one
    offset, so what rises repeats at the loop's tempo instead of smearing.

    With `record`, each call leaves its shifts and the loop's length there, for a transform
    further down the chain that must know where the loop's parts lie in each copy."""
    steps = max(1, max_shift // grid) if grid > 1 else max_shift

    def apply(loop: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        shifts = (_randint(2 * steps + 1, copies, gen, "cpu") - steps) * max(1, grid)
        shifts[0] = 0
        if record is not None:
            record["shifts"], record["samples"] = shifts, loop.shape[-1]
        # rolls, not a gather: the gradient of a roll is a roll, so the copies' gradients
        # add up in a fixed order and a seeded dream is reproducible bit for bit on CPU
        return torch.stack([torch.roll(loop, int(s), dims=-1) for s in shifts])

    return apply


def pitch_shift(max_bins: int) -> Transform:
    """Scalograms [copies, bins, frames]: shift each copy (but copy 0) up or down by up to
    `max_bins` bins, filling the bins that come free with silence."""

    def apply(spec: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if max_bins <= 0:
            return spec
        copies, bins, _ = spec.shape
        shifts = _randint(2 * max_bins + 1, copies, gen, "cpu") - max_bins
        shifts[0] = 0
        source = torch.arange(bins)[None, :] - shifts[:, None]  # output bin b reads bin b - shift
        valid = ((source >= 0) & (source < bins)).to(spec.device)
        source = source.clamp(0, bins - 1).to(spec.device)
        shifted = torch.gather(spec, 1, source[:, :, None].expand_as(spec))
        return shifted * valid[:, :, None]

    return apply


def transpose_parts(semitones: Sequence[float], bins_per_octave: int, hop: int, record: dict) -> Transform:
    """Scalograms [copies, bins, frames] of `jitter`ed copies of a loop cut into
    len(semitones) equal parts: the frames that show part k move down by semitones[k]
    (linear between bins; bins that come free are silence), so the network hears every part
    at one root. A dream then plays what the selection wants on each part transposed up by
    its interval: a chord progression. The intervals are centred on the ear's own register
    (their mean, rounded, is taken off), so no part loses more than a few semitones of the
    scalogram's top or bottom. `record` is the jitter's (where each copy's parts lie)."""
    parts = len(semitones)
    centre = round(sum(semitones) / parts)
    offsets = torch.tensor([float(k - centre) * bins_per_octave / 12.0 for k in semitones])

    def apply(spec: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        copies, bins, frames = spec.shape
        device = spec.device  # the index arithmetic runs where the scalogram is: no copies across
        shifts = record.get("shifts", torch.zeros(copies, dtype=torch.long)).to(device)
        samples = record.get("samples", frames * hop)
        # frame t of copy c shows the loop's sample t * hop - shift (a roll by s delays by s)
        where = (torch.arange(frames, device=device)[None, :] * hop - shifts[:, None]) % samples
        shift = offsets.to(device)[(where * parts // samples).clamp(0, parts - 1)]  # [copies, frames], bins
        source = torch.arange(bins, device=device)[None, :, None] + shift[:, None, :]  # output bin b reads b + shift
        low = source.floor()
        frac = (source - low).to(spec.dtype)
        out = 0.0
        for index, w in ((low, 1.0 - frac), (low + 1, frac)):
            valid = (index >= 0) & (index < bins)
            out = out + torch.gather(spec, 1, index.clamp(0, bins - 1).long()) * w * valid
        return out

    return apply


def _band_mask(copies: int, length: int, width: int, gen: torch.Generator, device) -> torch.Tensor:
    """[copies, length] of ones with one band of `width` zeros per copy (circular)."""
    if width <= 0:
        return torch.ones(copies, length, device=device)
    starts = _randint(length, copies, gen, "cpu")
    offset = (torch.arange(length)[None, :] - starts[:, None]) % length
    return (offset >= width).float().to(device)


def mask_time(fraction: float) -> Transform:
    """One random band of time frames per copy set to silence; its width a fraction of the loop."""

    def apply(spec: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        copies, _, frames = spec.shape
        return spec * _band_mask(copies, frames, int(round(fraction * frames)), gen, spec.device)[:, None, :]

    return apply


def mask_pitch(fraction: float) -> Transform:
    """One random band of pitch bins per copy set to silence."""

    def apply(spec: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        copies, bins, _ = spec.shape
        return spec * _band_mask(copies, bins, int(round(fraction * bins)), gen, spec.device)[:, :, None]

    return apply


def gradient_noise(grad: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of `amount` times the gradient's own std (at least a tiny floor, so
    a dream that starts from exact silence, whose gradient is zero, can still move)."""
    if amount <= 0:
        return grad
    scale = amount * grad.std().clamp_min(1e-6)
    return grad + scale * torch.randn(grad.shape, generator=gen).to(grad.device)


def denoise(loop: torch.Tensor, amount: float, n_fft: int = 1024) -> torch.Tensor:
    """Spectral gating of a loop: subtract `amount` x each frequency's noise floor (the level
    it exceeds 90 % of the time) and keep the phase. The loop is treated as circular."""
    if amount <= 0:
        return loop
    hop = n_fft // 4
    n = loop.shape[-1]
    pad = min(n_fft, n)  # circular context on each side; the crop is far from the STFT's edges
    wrapped = torch.cat([loop[..., -pad:], loop, loop[..., :pad]], dim=-1)
    window = torch.hann_window(n_fft, device=loop.device)
    spec = torch.stft(wrapped, n_fft, hop, window=window, return_complex=True)
    magnitude = spec.abs()
    floor = torch.quantile(magnitude, 0.1, dim=-1, keepdim=True)
    gain = (magnitude - amount * floor).clamp_min(0) / magnitude.clamp_min(1e-12)
    cleaned = torch.istft(spec * gain, n_fft, hop, window=window, length=wrapped.shape[-1])
    return cleaned[..., pad:pad + n]
