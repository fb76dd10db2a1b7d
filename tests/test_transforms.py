import numpy as np
import pytest
import torch

from immersions.audio.scalogram import Scalogram, ScalogramConfig
from immersions.dream.transforms import (
    compose, denoise, gradient_noise, jitter, mask_pitch, mask_time, pitch_shift,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_jitter_copies_really_are_circular_shifts_and_copy_0_is_untouched():
    loop = torch.randn(1000)
    copies = jitter(8, 300)(loop, gen())
    assert copies.shape == (8, 1000)
    assert torch.equal(copies[0], loop)
    shifts = set()
    for c in copies[1:]:
        matches = [s for s in range(-300, 301) if torch.equal(c, torch.roll(loop, s))]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 3  # shifts differ between copies


def test_jitter_is_deterministic_for_a_seed():
    loop = torch.randn(500)
    assert torch.equal(jitter(4, 100)(loop, gen(3)), jitter(4, 100)(loop, gen(3)))
    assert not torch.equal(jitter(4, 100)(loop, gen(3)), jitter(4, 100)(loop, gen(4)))


def test_pitch_shift_moves_a_tone_by_whole_bins():
    cfg = ScalogramConfig()
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * np.pi * float(cfg.frequencies()[100]) * t)
    spec = Scalogram(cfg)(tone.expand(6, -1).contiguous())
    shifted = pitch_shift(4)(spec, gen())
    assert torch.equal(shifted[0], spec[0])
    peaks = shifted[:, :, 60].argmax(dim=1) - 100
    assert peaks.abs().max() <= 4 and (peaks != 0).any()
    for c, shift in enumerate(peaks.tolist()):  # bins shifted in from outside are silent
        if shift > 0:
            assert shifted[c, :shift].abs().max() == 0
        elif shift < 0:
            assert shifted[c, shift:].abs().max() == 0


@pytest.mark.parametrize("axis", ["time", "pitch"])
def test_masks_are_silent_bands_of_the_asked_width(axis):
    spec = torch.rand(5, 64, 100) + 0.5  # nowhere silent
    if axis == "time":
        out = mask_time(0.2)(spec, gen())
        silent = (out == 0).all(dim=1)  # [copies, frames]
        assert (silent.sum(dim=1) == 20).all()
    else:
        out = mask_pitch(0.25)(spec, gen())
        silent = (out == 0).all(dim=2)
        assert (silent.sum(dim=1) == 16).all()
    # everywhere else untouched
    assert torch.equal(out[out != 0], spec[out != 0])
    assert torch.equal(mask_time(0.0)(spec, gen()), spec)


def test_compose_chains_in_order():
    loop = torch.randn(16000)
    chain = compose(jitter(3, 100), lambda x, g: x * 2)
    out = chain(loop, gen())
    assert out.shape == (3, 16000) and torch.equal(out[0], 2 * loop)


def test_gradient_noise_scales_with_the_gradient_and_moves_silence():
    grad = torch.randn(10000) * 3.0
    noisy = gradient_noise(grad, 0.5, gen())
    assert (noisy - grad).std().item() == pytest.approx(1.5, rel=0.1)
    zero = torch.zeros(100)
    assert gradient_noise(zero, 0.5, gen()).abs().max() > 0  # a silent start can move
    assert torch.equal(gradient_noise(grad, 0.0, gen()), grad)


def test_denoise_removes_a_steady_noise_floor_but_keeps_a_tone():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(64000) / 16000
    tone = 0.5 * torch.sin(2 * np.pi * 440 * t) * (torch.sin(2 * np.pi * 1 * t) > 0)  # gated tone
    noise = 0.05 * torch.randn(64000, generator=g)
    cleaned = denoise(tone + noise, 1.5)
    assert cleaned.shape == tone.shape
    residual_before = (tone + noise - tone).pow(2).mean()
    residual_after = (cleaned - tone).pow(2).mean()
    assert residual_after < 0.5 * residual_before
    assert torch.equal(denoise(tone, 0.0), tone)
