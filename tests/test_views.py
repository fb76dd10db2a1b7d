"""Two colourings of every excerpt (`train --views`): the views are the same music coloured
apart, each view's context is scored against the other view's encodings, and a run resumes
exactly."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import assert_resumes_exactly, read_log

from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.model.config import preset
from immersions.model.cpc import CPC
from immersions.train.colour import two_views
from immersions.train.trainer import TrainConfig, train, view_loss


def test_the_two_views_are_one_excerpt_through_two_colourings():
    sr, n = 44100, 22050
    items = torch.from_numpy(np.random.default_rng(0).standard_normal((8, n)).astype(np.float32))
    views = two_views(items, sr, np.random.default_rng(1))
    assert views.shape == (16, n)
    assert torch.equal(views, two_views(items, sr, np.random.default_rng(1)))
    one, other = np.fft.rfft(views[:8].numpy(), axis=-1), np.fft.rfft(views[8:].numpy(), axis=-1)
    source = np.fft.rfft(items.numpy(), axis=-1)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = (freqs > 100) & (freqs < 3000)  # kept by every colouring (the low-passes start at 4 kHz)
    # each view is its own excerpt, filtered without a phase shift: same music, row by row
    for view in (one, other):
        gain = view[:, band] / source[:, band]
        assert np.abs(gain.imag).max() < 1e-3 * np.abs(gain.real).max()
        assert np.all(gain.real > 0)
    level = lambda spectrum: 10 * np.log10((np.abs(spectrum[:, band]) ** 2).mean(-1))  # noqa: E731
    # the two colourings of one excerpt differ: its level between views moves by decibels
    assert np.abs(level(one) - level(other)).max() > 2


def test_each_views_context_is_scored_against_the_other_views_encodings():
    torch.manual_seed(0)
    model = CPC(preset("micro")).eval()
    z = torch.randn(8, model.cfg.encoding_channels, 60)
    c = torch.randn(8, model.cfg.context_channels, 60 // model.cfg.ar_time_stride)
    loss, accuracy = view_loss(model, z, c, "times")
    a_to_b = model.cpc_loss(z[4:], c[:4], negatives="times")
    b_to_a = model.cpc_loss(z[:4], c[4:], negatives="times")
    assert torch.allclose(loss, (a_to_b[0] + b_to_a[0]) / 2)
    assert torch.allclose(accuracy, (a_to_b[1] + b_to_a[1]) / 2)
    # not the same view's encodings: with the second view's encodings replaced, the loss moves
    assert not torch.allclose(loss, view_loss(model, torch.cat([z[:4], torch.randn_like(z[4:])]), c, "times")[0])
    # identical views give plain CPC on one of them
    twice_z, twice_c = torch.cat([z[:4], z[:4]]), torch.cat([c[:4], c[:4]])
    plain = model.cpc_loss(z[:4], c[:4], negatives="times")
    assert torch.allclose(view_loss(model, twice_z, twice_c, "times")[0], plain[0])


def config(out, **kw):
    return TrainConfig(**{"preset": "micro", "steps": 4, "batch_size": 3, "out": str(out), "synth_tracks": 3,
                          "synth_seconds": 12, "stats_clips": 2, "progress": False, "save_every": 2,
                          "negatives": "times", "views": True, "lr": 1e-3, **kw})


def test_training_on_two_views_resumes_exactly(tmp_path):
    whole_run, stopped_run = assert_resumes_exactly(config, tmp_path)
    rows = read_log(whole_run)
    assert len(rows) == 4 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert [r["loss"] for r in read_log(stopped_run)] == [r["loss"] for r in rows]
    # the views change what is learned: the same run on one view ends elsewhere
    train(config(tmp_path / "plain", views=False))
    whole, plain = load_model(whole_run).state_dict(), load_model(tmp_path / "plain").state_dict()
    assert any(not torch.equal(whole[k], plain[k]) for k in whole)


def test_resuming_with_or_without_views_against_the_run_is_one_clear_error(tmp_path):
    train(config(tmp_path, steps=2))
    with pytest.raises(ImmersionsError, match="trained with --views"):
        train(config(tmp_path, steps=4, resume=True, views=False))


def test_the_command_line_refuses_views_with_the_track_loss():
    result = subprocess.run([sys.executable, "-m", "immersions", "train", "--preset", "micro", "--steps", "1",
                             "--batch-size", "4", "--views", "--track-loss", "1", "--out", "unused"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--views and --track-loss do not go together" in result.stderr
    assert "Traceback" not in result.stderr
