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


def test_beat_quantized_jitter_shifts_by_whole_beats_at_the_tempo():
    from immersions.dream.dreamer import default_params
    from immersions.dream.recipe import jitter_grid

    sr, bpm = 1000, 120.0  # a beat is 500 samples
    params = default_params().replace(bpm=bpm, jitter_grid="beat")
    grid = jitter_grid(params, sr)
    assert grid == 500 and jitter_grid(params.replace(jitter_grid="sixteenth"), sr) == 125
    assert jitter_grid(params.replace(jitter_grid="free"), sr) == 1
    loop = torch.zeros(4000)
    loop[7] = 1.0  # one click: where it lands in a copy is that copy's shift
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        copies = jitter(8, 100, grid)(loop, gen)  # 0.1 s of jitter still moves by a whole beat
        for copy in copies:
            shift = (int(torch.argmax(copy)) - 7) % 4000
            assert shift % 500 == 0
            seen.add(shift)
    assert seen == {0, 500, 3500}  # -1, 0, +1 beat
    wide = {(int(torch.argmax(c)) - 7) % 4000 for c in jitter(64, 1000, grid)(loop, gen)}
    assert wide == {0, 500, 1000, 3000, 3500}  # up to two beats either way
