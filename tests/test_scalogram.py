import numpy as np
import pytest
import torch
from nnAudio.features import CQT1992v2

from immersions.audio.scalogram import Scalogram, ScalogramConfig
from immersions.model import preset

FRONT_ENDS = {name: preset(name).scalogram for name in ("seed", "hifi")}


def reference_magnitude(cfg: ScalogramConfig, signal: np.ndarray) -> np.ndarray:
    """nnAudio's CQT of the same configuration, on the loop tiled three times (middle copy)."""
    ref = CQT1992v2(sr=cfg.sample_rate, hop_length=cfg.hop, fmin=cfg.fmin, n_bins=cfg.n_bins,
                    bins_per_octave=cfg.bins_per_octave, filter_scale=cfg.filter_scale, norm=1,
                    window="hann", center=True, pad_mode="constant", output_format="Magnitude", verbose=False)
    frames = len(signal) // cfg.hop
    out = ref(torch.from_numpy(np.tile(signal, 3))[None], normalization_type="convolutional")[0]
    return out[:, frames:2 * frames].numpy()


@pytest.mark.parametrize("name", list(FRONT_ENDS))
def test_magnitude_matches_nnaudio(name):
    cfg = FRONT_ENDS[name]
    rng = np.random.default_rng(0)
    n = 2 * cfg.sample_rate  # 2 s, a whole number of hops for both front ends
    t = np.arange(n) / cfg.sample_rate
    chirp = 0.3 * np.sin(2 * np.pi * 200 * t * (1 + 2 * t))
    clicks = np.zeros(n)
    clicks[:: cfg.sample_rate // 4] = 0.8
    signal = (chirp + clicks + 0.05 * rng.standard_normal(n)).astype(np.float32)
    ours = Scalogram(cfg).magnitude(torch.from_numpy(signal))[0].numpy()
    ref = reference_magnitude(cfg, signal)
    assert ours.shape == ref.shape
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.99


@pytest.mark.parametrize("bin_index", [0, 37, 128, 255])
def test_pure_tone_peaks_at_its_bin(sine, bin_index):
    cfg = FRONT_ENDS["seed"]
    freq = cfg.frequencies()[bin_index]
    mag = Scalogram(cfg).magnitude(torch.from_numpy(sine(freq, 2.0, cfg.sample_rate)))[0]
    assert int(mag[:, 100].argmax()) == bin_index
    # L1-normalized kernels: a sine of amplitude A reads A / 2 at its own bin
    assert mag[bin_index, 100].item() == pytest.approx(0.25, rel=0.02)


def test_silence_is_zero_with_finite_gradients():
    s = Scalogram(FRONT_ENDS["seed"])
    silence = torch.zeros(2, 16000, requires_grad=True)
    out = s(silence)
    assert out.abs().max().item() == 0.0
    (out.sum() + s(silence + 1e-3 * torch.randn(2, 16000)).sum()).backward()
    assert torch.isfinite(silence.grad).all()


def test_log_power_scale(sine):
    cfg = FRONT_ENDS["seed"]
    s = Scalogram(cfg)
    loud = s(torch.from_numpy(sine(440, 1.0, amplitude=1.0)))[0].max().item()
    quiet = s(torch.from_numpy(sine(440, 1.0, amplitude=0.01)))[0].max().item()
    assert 0.8 < loud < 1.1  # full scale is about 1
    assert 0.0 < quiet < loud


def test_circular_loop_has_no_seam(sine):
    """A loop whose end meets its start: the first frame equals the steady state."""
    cfg = FRONT_ENDS["seed"]
    loop = sine(cfg.sample_rate / 160, 1.0)  # 100 Hz: a whole number of periods per second
    out = Scalogram(cfg)(torch.from_numpy(loop))[0]
    assert torch.allclose(out[:, 0], out[:, 60], atol=1e-4)


def test_non_circular_pads_instead_of_wrapping():
    cfg = FRONT_ENDS["seed"]
    s = Scalogram(cfg)
    burst = torch.zeros(32000)
    burst[-4000:] = torch.randn(4000)  # energy only at the end
    circular = s(burst, circular=True)[0]
    padded = s(burst, circular=False)[0]
    assert circular.shape == padded.shape == (256, 250)
    assert circular[:, 0].sum() > 1.0  # wraps around into the start
    assert padded[:, 0].sum() < 1e-3 * circular[:, 0].sum()  # only -60 dB band-edge leakage


def test_odd_lengths_round_up_to_whole_frames():
    s = Scalogram(FRONT_ENDS["seed"])
    assert s(torch.randn(1, 1000)).shape == (1, 256, 8)


@pytest.mark.parametrize("name", FRONT_ENDS)
def test_the_bands_are_joined_in_order_and_the_placing_path_agrees(name):
    """The band groups cover every bin in order, so they are concatenated in one copy; the
    slower path that places each group by its bins (kept for a plan out of order) gives the
    same scalogram and the same gradient."""
    scalogram = Scalogram(FRONT_ENDS[name])
    audio = (0.1 * torch.randn(2, 4 * scalogram.cfg.hop * 16, generator=torch.Generator().manual_seed(0))).requires_grad_()
    weights = torch.rand(scalogram(audio).shape, generator=torch.Generator().manual_seed(1))
    plan = next(iter(scalogram._plans.values()))
    assert plan.in_order and len(plan.groups) > 1
    joined = scalogram(audio)
    (joined_grad,) = torch.autograd.grad((joined * weights).sum(), audio)
    plan.in_order = False
    placed = scalogram(audio)
    (placed_grad,) = torch.autograd.grad((placed * weights).sum(), audio)
    assert torch.equal(joined, placed) and torch.equal(joined_grad, placed_grad)


def test_the_picture_is_drawn_in_pieces_with_one_plan_for_any_length():
    """`synth --png` of a minute built a plan for a million samples (a minute of FFTs): the
    picture is the same non-circular scalogram, computed in pieces that share one small plan."""
    from immersions.audio.plot import picture_scalogram

    cfg = ScalogramConfig()
    rng = np.random.default_rng(1)
    n = 5 * cfg.sample_rate + 77  # not a whole number of hops, nor of pieces
    t = np.arange(n) / cfg.sample_rate
    signal = (0.3 * np.sin(2 * np.pi * 110 * t * (1 + t)) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    signal[:: cfg.sample_rate // 2] = 0.9  # clicks, some right at the pieces' joins
    whole = Scalogram(cfg)
    with torch.no_grad():
        expected = whole(torch.from_numpy(signal), circular=False)[0].numpy()
    pieces = Scalogram(cfg)
    chunk = 1 << 14
    image = picture_scalogram(signal, cfg, chunk=chunk, scalogram=pieces)
    assert image.shape == expected.shape == (cfg.n_bins, -(-n // cfg.hop))
    # log power (1 = a full-scale sine): the pieces differ from the whole by less than a step of the colour map
    assert np.abs(image - expected).max() < 1 / 256
    # the work: one plan, of the piece's length, whatever the signal's length
    picture_scalogram(np.tile(signal, 3), cfg, chunk=chunk, scalogram=pieces)
    assert [length for length, _ in pieces._plans] == [chunk + 2 * pieces.pad]
    # and matplotlib is handed about as many columns as the picture has pixels, frames averaged
    from immersions.audio.plot import fit_columns

    shown, spans = fit_columns(image, 100)
    assert shown.shape == (cfg.n_bins, 104) and spans == 624  # 626 frames: 6 to a column, the last 2 left out
    assert np.allclose(shown[:, 0], image[:, :6].mean(axis=1))
