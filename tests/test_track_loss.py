"""The track objective beside CPC (`train --track-loss`): pairs of excerpts of one track, the
CPC loss never contrasting a track with itself, the head picking the partner, an exact resume."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import assert_resumes_exactly, read_log

from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model, load_train_state
from immersions.model.config import preset
from immersions.model.cpc import CPC
from immersions.train.dataset import Corpus, MixedCorpus
from immersions.train.track import TrackHead, pair_groups
from immersions.train.trainer import TrainConfig, train

SPAN = 100_000  # each test signal holds track * SPAN + sample index: every sample says where it came from


def ramps(n_tracks: int, samples: int, first: int = 0) -> list[np.ndarray]:
    return [(track * SPAN + np.arange(samples)).astype(np.float32) for track in range(first, first + n_tracks)]


def test_pairs_are_two_excerpts_of_one_track_at_least_an_excerpt_apart():
    corpus = Corpus(ramps(6, 20_000), 16000, "ramps")
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(200):
        first, second = corpus.pairs(3, 1000, rng)
        track_a, track_b = first[:, 0] // SPAN, second[:, 0] // SPAN
        assert torch.equal(track_a, track_b)  # the same track, row by row
        assert len(set(track_a.tolist())) == 3  # different tracks in different rows
        start_a, start_b = first[:, 0] % SPAN, second[:, 0] % SPAN
        assert torch.all(torch.diff(first, dim=1) == 1) and torch.all(torch.diff(second, dim=1) == 1)  # whole excerpts
        gap = (start_a - start_b).abs()
        assert torch.all(gap >= 1000)  # no shared sample
        gaps.extend(gap.tolist())
    # the second excerpt lands anywhere away from the first: near and far
    assert min(gaps) < 3000 and max(gaps) > 15_000


def test_a_track_too_short_for_two_excerpts_gives_overlapping_ones():
    first, second = Corpus(ramps(2, 1500), 16000, "short").pairs(2, 1000, np.random.default_rng(1))
    assert torch.equal(first[:, 0] // SPAN, second[:, 0] // SPAN)


def test_mixed_sources_keep_the_pairs_in_the_same_order():
    mixed = MixedCorpus([Corpus(ramps(4, 10_000), 16000, "a"), Corpus(ramps(4, 10_000, first=10), 16000, "b")],
                        [1.0, 1.0])
    rng = np.random.default_rng(2)
    sources = set()
    for _ in range(20):
        first, second = mixed.pairs(4, 500, rng)
        assert first.shape == second.shape == (4, 500)
        assert torch.equal(first[:, 0] // SPAN, second[:, 0] // SPAN)
        sources.update((first[:, 0] // SPAN >= 10).tolist())
    assert sources == {False, True}


@pytest.mark.parametrize("negatives", ["times", "batch"])
def test_cpc_never_contrasts_an_excerpt_with_its_own_tracks_other_excerpt(negatives):
    torch.manual_seed(0)
    model = CPC(preset("micro"))
    z = torch.randn(4, model.cfg.encoding_channels, 60)
    z[2:] = z[:2]  # the second excerpts repeat the first: a pair's excerpts look alike
    c = torch.randn(4, model.cfg.context_channels, 60 // model.cfg.ar_time_stride)
    model.eval()
    plain, _ = model.cpc_loss(z, c, negatives=negatives)
    grouped, _ = model.cpc_loss(z, c, negatives=negatives, groups=pair_groups(4))
    everyone_apart, _ = model.cpc_loss(z, c, negatives=negatives, groups=torch.arange(4))
    assert torch.allclose(everyone_apart, plain)  # one group per item is no grouping at all
    # without the groups the partner's encodings (equal to the positive) compete with it
    assert grouped.item() < plain.item() - 0.3
    with pytest.raises(ValueError, match="steps"):
        model.cpc_loss(z, c, negatives="steps", groups=pair_groups(4))


def test_the_track_head_picks_the_other_excerpt_of_the_same_track():
    torch.manual_seed(1)
    cfg = preset("micro")
    head = TrackHead(cfg)
    tracks = torch.randn(3, cfg.context_channels)  # what each track's context vector holds
    with torch.no_grad():
        target = head.project(tracks)  # and its encodings, in the head's image
    z = target.repeat(2, 1)[:, :, None] + 0.01 * torch.randn(6, cfg.encoding_channels, 30)
    c = torch.zeros(6, cfg.context_channels, 8)
    c[..., -1] = tracks.repeat(2, 1)  # only the last context vector counts
    loss, accuracy = head(z, c)
    assert accuracy.item() == 1.0 and loss.item() < 0.1
    c[..., -1] = tracks.roll(1, 0).repeat(2, 1)  # every excerpt now carries another track's vector
    loss_wrong, accuracy_wrong = head(z, c)
    assert accuracy_wrong.item() == 0.0 and loss_wrong.item() > 5
    with pytest.raises(ValueError, match="pairs"):
        head(z[:3], c[:3])


def config(out, **kw):
    return TrainConfig(**{"preset": "micro", "steps": 4, "batch_size": 4, "out": str(out), "synth_tracks": 3,
                          "synth_seconds": 12, "stats_clips": 2, "progress": False, "save_every": 2,
                          "negatives": "times", "track_loss": 1.0, "lr": 1e-3, **kw})


def test_training_with_the_track_loss_logs_it_and_resumes_exactly(tmp_path):
    assert_resumes_exactly(config, tmp_path)
    rows = read_log(tmp_path / "whole")
    assert len(rows) == 4
    assert all(np.isfinite(float(r["track_loss"])) and 0 <= float(r["track_accuracy"]) <= 1 for r in rows)
    assert [r["track_loss"] for r in read_log(tmp_path / "stopped")] == [r["track_loss"] for r in rows]
    # the shipped model is a plain CPC: the head stays with the training state
    model = load_model(tmp_path / "whole")
    assert model.state_dict().keys() == CPC(model.cfg).state_dict().keys()

    heads = []
    for run in ("whole", "stopped"):
        head = TrackHead(model.cfg)
        optimizer = torch.optim.AdamW([*CPC(model.cfg).parameters(), *head.parameters()])
        load_train_state(tmp_path / run, optimizer, {"track_head": head})
        heads.append(head.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_resuming_with_other_options_is_one_clear_error(tmp_path):
    train(config(tmp_path, steps=2))
    with pytest.raises(ImmersionsError, match="trained with track_head"):
        train(config(tmp_path, steps=4, resume=True, track_loss=0.0, batch_size=4))


def test_the_command_line_refuses_an_odd_batch():
    result = subprocess.run([sys.executable, "-m", "immersions", "train", "--preset", "micro", "--steps", "1",
                             "--batch-size", "5", "--track-loss", "1", "--out", "unused"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--track-loss needs an even --batch-size" in result.stderr
    assert "Traceback" not in result.stderr


def test_each_excerpt_is_coloured_on_its_own_and_the_same_generator_colours_alike():
    from immersions.train.colour import recolour

    sr, n = 44100, 44100
    noise = torch.from_numpy(np.random.default_rng(3).standard_normal((64, n)).astype(np.float32))
    out = recolour(noise, sr, np.random.default_rng(4))
    assert torch.equal(out, recolour(noise, sr, np.random.default_rng(4)))
    spectrum = np.abs(np.fft.rfft(out.numpy(), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / sr)
    low = spectrum[:, (freqs > 200) & (freqs < 2000)].mean(-1)
    top = spectrum[:, freqs > 17000].mean(-1)
    level_db = 10 * np.log10(low)
    assert level_db.max() - level_db.min() > 6  # levels differ from excerpt to excerpt
    ratio = top / low
    # nothing left over 17 kHz where a low-pass under 12 kHz was drawn: a third, on average
    # (half are low-passed, two thirds of those under 12 kHz)
    assert 8 <= (ratio < 1e-10).sum() <= 32
    assert (ratio > 1e-2).sum() >= 32  # most keep their top, within the tilt
    assert np.all(np.isfinite(out.numpy())) and out.shape == noise.shape
