"""The real-music probe and the training sources: weighted mixes, --init, tracks from files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from immersions.audio.io import write_wav
from immersions.synth import render_track
from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.train.dataset import Corpus, MixedCorpus, parse_source
from immersions.train.probe import (ProbeConfig, cut_clips, music_probe_data, music_tracks, run_music_probe,
                                    track_bootstrap)
from immersions.train.trainer import TrainConfig, train, training_corpus


@pytest.mark.parametrize("clip, hop, fraction, seconds", [(64, 64, 0.7, 1000), (64, 32, 0.7, 1000),
                                                          (64, 64, 0.5, 333), (100, 40, 0.7, 777)])
def test_no_test_clip_overlaps_a_training_clip(clip, hop, fraction, seconds):
    cuts = cut_clips(seconds, clip, hop, fraction)
    train_ends = [start + clip for start, is_train in cuts if is_train]
    test_starts = [start for start, is_train in cuts if not is_train]
    assert train_ends and test_starts
    assert max(train_ends) <= min(test_starts)
    assert all(start + clip <= seconds for start, _ in cuts)


def _tracks(folder, n, seconds, sample_rate=16000):
    for i in range(n):
        write_wav(folder / f"track{i:02d}.wav", render_track(500 + i, seconds, sample_rate), sample_rate)


def test_music_probe_labels_each_file_and_splits_by_time(tmp_path, caplog):
    _tracks(tmp_path, 3, 40)
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEfmt not really")
    write_wav(tmp_path / "short.wav", np.zeros(16000 * 5, np.float32), 16000)
    data = music_probe_data([tmp_path], 16000, ProbeConfig())
    assert data.track_names == ["track00.wav", "track01.wav", "track02.wav"]
    assert "broken.wav" in caplog.text and "short.wav" in caplog.text
    for label in range(3):
        mine = data.labels == label
        train_end = (data.starts[mine & data.is_train] + 64000).max()
        assert train_end <= data.starts[mine & ~data.is_train].min()
    # the clips are the files' own audio
    first = render_track(500, 40, 16000)
    assert np.allclose(data.clips[0], first[:64000], atol=1e-4)
    longest = music_probe_data([tmp_path], 16000, ProbeConfig(), max_tracks=2)
    assert len(longest.track_names) == 2


def test_music_tracks_by_folder(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _tracks(tmp_path / name, 2, 2)
    tracks = music_tracks([tmp_path], by="folder")
    assert [(name, [p.name for p in files]) for name, files in tracks] == [
        ("a", ["track00.wav", "track01.wav"]), ("b", ["track00.wav", "track01.wav"])]


def test_music_probe_needs_two_tracks(tmp_path):
    _tracks(tmp_path, 1, 40)
    with pytest.raises(ImmersionsError, match="at least 2 tracks"):
        music_probe_data([tmp_path], 16000)


def test_music_probe_reports_trained_against_untrained_per_track(micro_model_dir, tmp_path):
    _tracks(tmp_path, 2, 40)
    out = subprocess.run([sys.executable, "-m", "immersions", "probe", "--model", str(micro_model_dir),
                          "--data", str(tmp_path), "--json"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["n_tracks"] == 2 and set(result["by_track"]) == {"track00.wav", "track01.wav"}
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["untrained_accuracy"] <= 1
    assert result["gain"] == pytest.approx(result["accuracy"] - result["untrained_accuracy"])
    low, high = result["gain_interval"]
    assert low <= result["gain"] <= high and result["interval"].endswith("of the 2 tracks")
    assert result["accuracy_interval"][0] <= result["accuracy"] <= result["accuracy_interval"][1]
    assert sum(row["test_clips"] for row in result["by_track"].values()) == result["test_clips"]
    assert "by_section" not in result


def _clips(per_track: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hits, baseline hits and truth for tracks given as (clips, trained right, baseline right)."""
    hits, base, truth = [], [], []
    for label, (clips, right, base_right) in enumerate(per_track):
        hits += [True] * right + [False] * (clips - right)
        base += [True] * base_right + [False] * (clips - base_right)
        truth += [label] * clips
    return np.array(hits), np.array(base), np.array(truth)


def test_the_gain_interval_redraws_whole_tracks_and_pairs_the_models():
    # tracks of very different difficulty, each 2 clips better trained: the gain is sure, the accuracy is not
    hits, base, truth = _clips([(20, 2 + 9 * i, 9 * i) for i in range(3)] * 4)
    result = track_bootstrap(hits, base, truth)
    assert result["gain"] == pytest.approx(0.1) and result["gain_interval"] == pytest.approx([0.1, 0.1])
    low, high = result["accuracy_interval"]
    assert low < hits.mean() - 0.1 and high > hits.mean() + 0.1
    assert result["interval"] == "95 %, 2000 paired draws of the 12 tracks"
    # one track of ten carries the whole gain: left out of a draw about a third of the time
    hits, base, truth = _clips([(20, 20, 0)] + [(20, 10, 10)] * 9)
    result = track_bootstrap(hits, base, truth)
    assert result["gain"] == pytest.approx(0.1)
    assert result["gain_interval"][0] == 0 and result["gain_interval"][1] > 0.2
    # a clip-by-clip bootstrap would call the same gain sure; drawing again is the same
    assert track_bootstrap(hits, base, truth) == result


def test_parse_source():
    assert parse_source("synth") == ("synth", 1.0)
    assert parse_source("music:3") == ("music", 3.0)
    assert parse_source("/data/a:b") == ("/data/a:b", 1.0)
    with pytest.raises(ImmersionsError, match="positive"):
        parse_source("music:0")


def test_mixed_corpus_draws_sources_by_weight():
    ones = Corpus([np.ones(1000, np.float32) * (i + 1) for i in range(20)], 16000, "ones")
    minus = Corpus([-np.ones(1000, np.float32) for _ in range(20)], 16000, "minus")
    mixed = MixedCorpus([ones, minus], [3.0, 1.0])
    rng = np.random.default_rng(0)
    items = torch.cat([mixed.batch(16, 100, rng) for _ in range(50)])
    share = (items[:, 0] > 0).float().mean().item()
    assert 0.68 < share < 0.82  # 3 : 1
    assert mixed.seconds == pytest.approx(40 * 1000 / 16000)


def test_training_mixes_a_folder_with_the_procedural_corpus_and_starts_from_a_model(micro_model_dir, tmp_path):
    _tracks(tmp_path / "music", 3, 6)
    # no --preset: the weights --init starts from decide the architecture (a --preset of other
    # shapes is refused: tests/test_train.py)
    cfg = TrainConfig(data=[str(tmp_path / "music") + ":2", "synth:1"], init=str(micro_model_dir),
                      steps=2, batch_size=4, out=str(tmp_path / "model"), synth_tracks=2, stats_clips=4, progress=False)
    corpus = training_corpus(cfg, 16000)
    assert isinstance(corpus, MixedCorpus) and len(corpus.sources) == 2
    train(cfg)
    model, start = load_model(tmp_path / "model"), load_model(micro_model_dir)
    assert model.cfg.preset == "micro"  # the weights --init started from decide the architecture
    assert model.meta["train"]["init"] == str(micro_model_dir)
    changed = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), start.state_dict().values())]
    assert any(changed)


def test_the_probe_calls_tracks_held_out_only_when_they_are():
    from immersions.cli import build_parser
    from immersions.cli.ear import probe_headline

    result = {"n_tracks": 15, "train_clips": 300, "test_clips": 120, "accuracy": 0.5, "untrained_accuracy": 0.25,
              "seconds": 12.0}
    assert probe_headline(result, ["music/train"]).startswith("linear probe on 15 tracks in music/train (300 train")
    assert probe_headline(result, ["music/probe"], held_out=True).startswith(
        "linear probe on 15 tracks in music/probe, held out from training (300 train")
    assert probe_headline(result, None).startswith("linear probe on 15 held-out procedural tracks")
    result |= {"gain": 0.25, "gain_interval": [0.125, 0.375]}
    assert "untrained 25.0 %, gain +25.0 points (95 %: +12.5 to +37.5)  (12 s)" in probe_headline(result, None)
    assert build_parser().parse_args(["probe", "--data", "x", "--held-out"]).held_out
    done = subprocess.run([sys.executable, "-m", "immersions", "probe", "--held-out"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "immersions: error: --held-out says that the --data folders were never trained on: give --data DIR"]
