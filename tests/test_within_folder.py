"""Batches from one package (`train --within-folder`): every batch's excerpts of a folder come
from one subfolder with a file for each, so the negatives share a package; the default draw
is unchanged; a resume must keep the choice."""

from collections import Counter

import numpy as np
import pytest

from immersions.audio.io import write_wav
from immersions.errors import ImmersionsError
from immersions.train.dataset import Corpus
from immersions.train.trainer import TrainConfig, batch_stream, train, training_corpus

SR = 16000


def labelled(counts: dict[str, int]) -> Corpus:
    """A corpus whose signal i holds the value i everywhere, labelled by group."""
    signals, groups = [], []
    for name, n in counts.items():
        for _ in range(n):
            signals.append(np.full(2000, len(signals), np.float32))
            groups.append(name)
    corpus = Corpus(signals, SR, "labelled")
    corpus.group(groups)
    return corpus


def test_every_batch_comes_from_one_group_with_a_signal_for_each_excerpt():
    corpus = labelled({"big": 6, "mid": 4, "small": 2})
    rng = np.random.default_rng(0)
    groups = Counter()
    for _ in range(300):
        picks = corpus.batch(4, 500, rng)[:, 0].long().tolist()
        names = {corpus.group_of[p] for p in picks}
        assert len(names) == 1, names
        assert len(set(picks)) == 4  # different signals: no excerpt is its own track's negative
        groups[names.pop()] += 1
    # the groups with four signals or more, drawn alike; "small" has too few for a batch of 4
    assert set(groups) == {"big", "mid"} and 100 < groups["mid"] < 200


def test_with_no_group_large_enough_the_batch_draws_from_every_signal():
    corpus = labelled({"a": 2, "b": 2})
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(50):
        picks = corpus.batch(3, 500, rng)[:, 0].long().tolist()
        assert len(set(picks)) == 3
        seen.update(corpus.group_of[p] for p in picks)
    assert seen == {"a", "b"}


def test_without_groups_the_draw_is_what_it_was():
    signals = [np.full(2000, i, np.float32) for i in range(5)]
    rng, reference = np.random.default_rng(2), np.random.default_rng(2)
    for _ in range(20):
        picks = Corpus(signals, SR, "plain").batch(3, 500, rng)[:, 0].long().tolist()
        expected = reference.choice(5, 3, replace=False)
        for _ in expected:
            reference.integers(2000 - 500 + 1)  # each excerpt's start, as batch draws it
        assert picks == expected.tolist()


def library(root):
    """Two packages of three tracks and one loose file; each file's level names it."""
    names = ["a/1.wav", "a/2.wav", "a/sub/3.wav", "b/1.wav", "b/2.wav", "b/3.wav", "loose.wav"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_wav(root / name, np.full(5 * SR, 0.01 * (i + 1), np.float32), SR)
    return names


def test_training_reads_a_folders_subfolders_as_groups(tmp_path):
    names = library(tmp_path / "lib")
    cfg = TrainConfig(preset="micro", data=[str(tmp_path / "lib")], cache=str(tmp_path / "cache"), batch_size=3,
                      progress=False, within_folder=True)
    corpus = training_corpus(cfg, SR, min_seconds=4.0)
    assert dict(zip(corpus.files, corpus.group_of)) == {
        "a/1.wav": "a", "a/2.wav": "a", "a/sub/3.wav": "a", "b/1.wav": "b", "b/2.wav": "b", "b/3.wav": "b",
        "loose.wav": ""}
    stream = batch_stream(cfg, corpus, SR, 0)
    try:
        for _ in range(10):
            files = {names[int(round(level / 0.01)) - 1] for level in next(stream)[:, 0].tolist()}
            assert len(files) == 3 and len({name.split("/")[0] for name in files}) == 1
    finally:
        stream.close()
    assert training_corpus(TrainConfig(preset="micro", data=[str(tmp_path / "lib")], cache=str(tmp_path / "cache"),
                                       progress=False), SR, min_seconds=4.0).group_of is None


def test_resuming_with_another_choice_is_one_clear_error(tmp_path):
    library(tmp_path / "lib")

    def config(**kw):
        return TrainConfig(**{"preset": "micro", "data": [str(tmp_path / "lib")], "cache": str(tmp_path / "cache"),
                              "steps": 2, "batch_size": 3, "out": str(tmp_path / "run"), "stats_clips": 2,
                              "progress": False, "save_every": 2, "within_folder": True, **kw})

    train(config())
    with pytest.raises(ImmersionsError, match="trained with --within-folder"):
        train(config(steps=4, resume=True, within_folder=False))
    train(config(steps=3, resume=True))
