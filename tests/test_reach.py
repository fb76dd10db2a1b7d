"""Every neuron is reachable from silence: the dream's gradient reaches every tap, and every
channel of the deepest taps, although the network's ReLUs are off on a silent loop."""

import numpy as np
import pytest
import torch

from immersions.dream.dreamer import DITHER_RMS, Dreamer, default_params
from immersions.selection import Region
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats

SR = 16000


def _gradient(d: Dreamer, region: Region, params) -> torch.Tensor:
    d.select(region)
    loop = d.loop.detach().requires_grad_()
    recipe = d.recipe(params)
    (grad,) = torch.autograd.grad(recipe.objective(d.read(loop, recipe)), loop)
    return grad


def test_from_silence_the_gradient_reaches_every_tap_and_every_channel_of_the_last():
    model = load_model("blend")  # a 16-kHz ear (SR)
    params = default_params().replace(gradient_noise=0.0, mask_time=0.0, mask_pitch=0.0, pitch_jitter=0.0)
    d = Dreamer(model, load_stats(model), np.zeros(SR, np.float32), copies=1)
    for tap in model.taps:
        assert _gradient(d, Region(tap.index, (0.5, 1.0)), params).abs().max() > 0, tap.name
    # the channels of the deepest tap that are off at silence: a plain ReLU gives them no
    # gradient at all (the ones that are on get theirs the ordinary way)
    last = model.taps[-1]
    with torch.no_grad():
        acts = model.loop_activations(model.scalogram(d.loop[None] + d.dither, circular=True))[last.index]
    off = torch.nonzero((acts[0].flatten(1) <= 0).all(dim=1)).flatten().tolist()
    assert len(off) > 10, "the shipped model has channels that are off at silence"
    dead = [c for c in off if _gradient(d, Region(last.index, ((c + 0.5) / last.channels, 0.0)), params).abs().max() == 0]
    assert dead == []


def test_the_dither_is_never_heard_and_pausing_holds_the_loop_exactly():
    model = load_model("blend")  # a 16-kHz ear (SR)
    d = Dreamer(model, load_stats(model), np.zeros(SR, np.float32), seed=3)
    assert 0 < float(d.dither.std()) < 2 * DITHER_RMS
    assert np.array_equal(d.clip(default_params()), np.zeros(SR, np.float32))
    d.select(Region(len(model.taps) - 1, (0.2, 0.0)))
    for _ in range(2):
        d.step(default_params())
    assert d.loop.abs().max() > 0  # moved out of silence: the last ar tap is no dead end
    held = d.loop.clone()
    for _ in range(3):
        assert d.step(default_params().replace(learning_rate=-4.95)).paused
    assert torch.equal(d.loop, held)


def test_a_selection_at_its_optimum_is_not_driven_by_noise():
    """Near a dead point the gradient is numerical noise; its normalization is floored, so
    a step there is smaller than a real one instead of a full-sized random push."""
    model = load_model("blend")  # a 16-kHz ear (SR)
    d = Dreamer(model, load_stats(model), np.zeros(SR, np.float32), seed=0)
    params = default_params().replace(gradient_noise=0.0)
    d.select(Region(1, (0.4, 0.0)))
    d._largest_grad_std = 1.0  # as after a real gradient of std 1
    before = d.loop.clone()
    d.step(params)
    moved = float((d.loop - before).abs().max())
    assert moved < 10 ** params["learning_rate"] * 0.5


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sequence", "large", "large_none_dead"])
def test_the_redirected_relu_gradient_is_lucids_rule(layout):
    """The fast backward equals the rule written out: a channel of an item whose true ReLU
    gradient is zero everywhere passes the gradient where it asks to rise; other channels get
    plain ReLU's gradient. Forward values are plain ReLU's. "large": a map tall enough for the
    backward to look at every 8th pitch row first, with a channel alive only in a row it
    skips (with dead channels beside it, and with none)."""
    from immersions.model.cpc import RedirectedReLU

    g = torch.Generator().manual_seed(3)
    shape = {"sequence": (3, 5, 40), "large": (3, 5, 40, 7), "large_none_dead": (3, 5, 40, 7)}.get(layout, (3, 5, 6, 7))
    x = torch.randn(shape, generator=g)
    seed = torch.randn(shape, generator=g)
    if layout != "large_none_dead":
        x[0, 1] = -x[0, 1].abs() - 0.1  # a channel that is off everywhere
        x[2, 4] = -x[2, 4].abs() - 0.1
        seed[1, 2][x[1, 2] > 0] = 0.0  # on somewhere, but the gradient only asks where it is off
    if layout.startswith("large"):
        x[1, 3] = -x[1, 3].abs() - 0.1
        x[1, 3, 3, 2] = 1.0  # on in one unit, in a pitch row the first look skips
    if layout != "contiguous" and layout != "sequence":
        x, seed = x.to(memory_format=torch.channels_last), seed.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = RedirectedReLU.apply(x)
    assert torch.equal(y, torch.relu(x))
    (got,) = torch.autograd.grad(y, x, seed)

    on = x.detach() > 0
    true = seed * on
    through = true.flatten(2).abs().amax(dim=2) > 0
    expected = torch.where(through.view(*through.shape, *([1] * (x.dim() - 2))), true, seed * (on | (seed > 0)))
    assert torch.equal(got, expected)
    if layout.startswith("large"):
        assert through[1, 3] and got[1, 3].count_nonzero() == 1  # alive: plain ReLU's gradient
    if layout == "large_none_dead":
        assert through.all()
        return
    assert not through[0, 1] and not through[2, 4] and not through[1, 2]
    assert got[0, 1].gt(0).any() and got[1, 2].gt(0).any()  # the dead channels hear the objective


def test_the_dreaming_copy_folds_batch_norm_and_hears_what_the_model_hears():
    """`for_dreaming`: BatchNorms folded into the convolutions of a copy; every tap's
    activations equal the model's, and the model itself is untouched."""
    from immersions.model import CPC, preset
    from immersions.model.cpc import for_dreaming

    torch.manual_seed(0)
    model = CPC(preset("micro"))
    g = torch.Generator().manual_seed(2)
    for m in model.modules():  # statistics and affine maps far from the identity
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
            m.running_var.copy_(0.2 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(n, generator=g))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dreaming = for_dreaming(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in dreaming.modules())
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    loop = 0.3 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        spec = model.scalogram(loop, circular=True)
        ours, theirs = dreaming.loop_activations(spec), model.loop_activations(spec)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-6)
