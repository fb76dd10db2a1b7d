"""The `components` dream space (dream/components.py): the loop as a mix of the start clip's
NMF components."""

import logging

import numpy as np
import pytest
import torch

from immersions.dream import spaces as S
from immersions.dream.components import Components, update_activations
from immersions.dream.dreamer import Dreamer, default_params
from immersions.dream.loop import start_clip
from immersions.selection import Region
from immersions.dream.recipe import make_space

SR = 16000
SAMPLES = 32000  # one bar at 120 BPM


def _relative_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).square().sum().sqrt() / y.square().sum().sqrt())


@pytest.mark.parametrize("name, tolerance", [("groove", 0.05), ("kick", 0.02)])
def test_the_start_clip_resynthesizes_faithfully(name, tolerance):
    clip = torch.as_tensor(start_clip(name, SAMPLES, SR))
    space = make_space("components", SAMPLES, SR, -3.0, start=clip)
    assert space.name == "components"
    back = space.synthesize(space.analyze(clip))
    assert back.shape == clip.shape and torch.isfinite(back).all()
    assert _relative_error(back, clip) < tolerance  # groove: 0.036 at K = 32 (-29 dB)


def test_a_unit_step_is_a_unit_step_on_the_waveform():
    clip = torch.as_tensor(start_clip("groove", SAMPLES, SR))
    space = make_space("components", SAMPLES, SR, 0.0, start=clip)
    coefficients = space.analyze(clip)
    step = torch.randn(coefficients.shape, generator=torch.Generator().manual_seed(5))
    moved = space.synthesize(coefficients + 1e-3 * step) - space.synthesize(coefficients)
    assert 0.7 < float(moved.square().mean().sqrt()) / 1e-3 < 1.4


def test_a_silent_start_falls_back_to_the_stft_space(caplog):
    with caplog.at_level(logging.INFO, logger="immersions.dream.components"):
        space = make_space("components", SAMPLES, SR, -3.0, start=torch.zeros(SAMPLES))
    assert space.name == "stft"
    assert "silent" in caplog.text


@pytest.mark.parametrize("start", ["groove", "noise", "silence"])
def test_a_huge_step_gives_a_finite_loop_within_full_scale(micro, start):
    params = default_params().replace(space="components", learning_rate=0.5, bars=1, beat_repeat=0.1)
    d = Dreamer(micro, None, start_clip(start, SAMPLES, SR, 0), copies=2, seed=3)
    d.select(Region(len(micro.taps) - 1, (0.3, 0.0)))
    for _ in range(3):
        report = d.step(params)
    assert torch.isfinite(d.loop).all() and report.nan_resets == 0
    assert d.peak <= 1.0 + 1e-6
    assert float(d.loop.square().mean().sqrt()) > 1e-3  # from silence too (via the stft space)


def test_a_new_start_clip_brings_its_own_components(micro):
    params = default_params().replace(space="components", bars=1)
    d = Dreamer(micro, None, start_clip("kick", SAMPLES, SR, 0), copies=2, seed=0)
    d.select(Region(2, (0.5, 0.0)))
    d.step(params)
    kick_templates = d._space_cache.templates
    d.set_start(start_clip("groove", SAMPLES, SR, 0))
    d.step(params)
    assert not torch.equal(d._space_cache.templates, kick_templates)


def _fit_by_templates(loop: torch.Tensor, templates: torch.Tensor) -> tuple[float, float]:
    """Share of the loop's STFT energy that a non-negative mix of `templates` explains, and
    share of it above 4 kHz."""
    magnitude = S.stft(loop, S.N_FFT, torch.hann_window(S.N_FFT)).abs()
    h = torch.full((templates.shape[1], magnitude.shape[1]), float(magnitude.mean()))
    for _ in range(200):
        h = update_activations(magnitude, templates, h)
    energy = magnitude.square().sum()
    explained = 1.0 - float((magnitude - templates @ h).square().sum() / energy)
    above_4k = float(magnitude[S.N_FFT * 4000 // SR:].square().sum() / energy)
    return explained, above_4k


def test_a_dream_from_the_kick_stays_made_of_the_kicks_components(micro):
    """The kick's templates hold nothing above 4 kHz (below -45 dB there): a dream in the
    components space stays inside what they span, one on the samples does not."""
    kick = start_clip("kick", SAMPLES, SR, 0)
    templates = Components(torch.as_tensor(kick)).templates
    fits = {}
    for space in ("components", "waveform"):
        params = default_params().replace(space=space, learning_rate=0.0, bars=1)
        d = Dreamer(micro, None, kick, copies=2, seed=1)
        d.select(Region(2, (0.5, 0.0)))
        for _ in range(3):
            d.step(params)
        assert not np.allclose(d.loop.numpy(), kick, atol=1e-3)  # the dream did move
        fits[space] = _fit_by_templates(d.loop, templates)
    explained, above_4k = fits["components"]
    assert explained > 0.95 and above_4k < 1e-3
    assert fits["waveform"][0] < 0.8 and fits["waveform"][1] > 0.01
