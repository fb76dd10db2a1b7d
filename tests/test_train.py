import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import read_log

from immersions.audio.io import write_wav
from immersions.synth import render_track
from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats
from immersions.train.dataset import Corpus, SynthCorpus
from immersions.train.trainer import TrainConfig, learning_rate, train, training_corpus


def test_warmup_then_cosine():
    cfg = TrainConfig(steps=1000, warmup=50, lr=1e-3)
    lrs = [learning_rate(s, cfg) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-3 / 50)
    assert lrs[49] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:50], lrs[1:50]))
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))
    assert lrs[-1] < 1e-5
    assert learning_rate(0, TrainConfig(steps=100, warmup=1000)) == pytest.approx(3e-4 / 10)  # capped at 10 %


def test_synth_corpus_is_unlimited_and_deterministic():
    a = SynthCorpus(16000, n_tracks=2, track_seconds=8, seed=5, progress=False)
    b = SynthCorpus(16000, n_tracks=2, track_seconds=8, seed=5, progress=False)
    assert torch.equal(a.batch(3, 16000, np.random.default_rng(1)), b.batch(3, 16000, np.random.default_rng(1)))
    first = a.signals[0]
    a.refresh()
    assert len(a.signals) == 2 and not any(s is first for s in a.signals)
    assert np.array_equal(a.signals[-1], render_track(7, 8, 16000))


def test_training_writes_a_complete_model(micro_model_dir):
    rows = read_log(micro_model_dir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"loss", "lr", "accuracy", "acc_1", "acc_16", "items_per_s"} <= set(rows[0])
    assert (micro_model_dir / "train_plot.png").stat().st_size > 1000
    model = load_model(micro_model_dir)
    assert not model.training and model.meta["step"] == 3
    stats = load_stats(model)
    for tap in model.taps:
        s = stats[tap.key]
        assert s.data_std.shape == (tap.channels, tap.pitches)
        assert torch.isfinite(s.silence_mean).all() and (s.data_std >= 0).all()
    assert (stats["enc1.conv1"].data_std > 0).float().mean() > 0.5


def test_resume_continues_where_it_stopped(tmp_path):
    cfg = TrainConfig(preset="micro", steps=2, batch_size=2, out=str(tmp_path), synth_tracks=2, stats_clips=2,
                      progress=False, save_every=1)
    train(cfg)
    before = load_model(tmp_path).state_dict()
    cfg.steps, cfg.resume = 4, True
    train(cfg)
    assert [int(r["step"]) for r in read_log(tmp_path)] == [1, 2, 3, 4]
    assert load_model(tmp_path).meta["step"] == 4
    after = load_model(tmp_path).state_dict()
    assert not torch.equal(before["encoder.0.conv1.weight"], after["encoder.0.conv1.weight"])
    assert json.loads((tmp_path / "train_state.json").read_text())["meta"]["step"] == 4
    with pytest.raises(ImmersionsError, match="already trained"):
        train(cfg)


def test_a_resumed_run_hears_the_tracks_the_uninterrupted_run_would_hear_next():
    cfg = TrainConfig(preset="micro", synth_tracks=2, synth_seconds=4, refresh_every=3, progress=False)
    running = training_corpus(cfg, 8000)
    for step in range(7):  # the trainer refreshes after steps 2 and 5
        if step % cfg.refresh_every == cfg.refresh_every - 1:
            running.refresh()
    resumed = training_corpus(cfg, 8000, step=7)
    assert len(resumed.signals) == 2
    assert all(np.array_equal(a, b) for a, b in zip(running.signals, resumed.signals))
    assert not np.array_equal(training_corpus(cfg, 8000).signals[0], resumed.signals[0])
    other_rank = training_corpus(cfg, 8000, rank=1, step=7)
    assert not any(np.array_equal(a, b) for a in other_rank.signals for b in resumed.signals)


def test_batch_items_come_from_different_signals_where_there_are_enough():
    signals = [np.full(4000, i, dtype=np.float32) for i in range(6)]  # each signal holds its own index
    corpus = Corpus(signals, 16000, "constant")
    rng = np.random.default_rng(0)
    for _ in range(50):
        sources = corpus.batch(6, 1000, rng)[:, 0]
        assert sorted(sources.tolist()) == list(range(6))
    assert corpus.batch(9, 1000, rng).shape == (9, 1000)  # fewer signals than items: they repeat


def test_procedural_tracks_have_the_asked_length(tmp_path, monkeypatch):
    import immersions.train.trainer as trainer

    made, make_corpus = [], trainer.make_corpus

    def keep(*args, **kwargs):  # the real corpus, kept to look at
        made.append(make_corpus(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(trainer, "make_corpus", keep)
    train(TrainConfig(preset="micro", steps=1, batch_size=2, out=str(tmp_path), synth_tracks=3, synth_seconds=7.5,
                      stats_clips=2, progress=False))
    assert len(made[0].signals) == 3 and all(len(s) == 7.5 * 16000 for s in made[0].signals)
    assert load_model(tmp_path).meta["train"]["synth_seconds"] == 7.5


def test_skip_steps_shift_the_predicted_steps(tmp_path):
    train(TrainConfig(preset="micro", steps=1, batch_size=2, out=str(tmp_path), synth_tracks=2, skip_steps=3,
                      stats_clips=2, progress=False))
    model = load_model(tmp_path)
    assert model.cfg.skip_steps == 3
    header = next(csv.reader(open(tmp_path / "train_log.csv")))
    accuracy_columns = [c for c in header if c.startswith("acc_")]
    assert accuracy_columns[0] == "acc_4" and len(accuracy_columns) == model.cfg.prediction_steps


def test_a_fine_tune_can_predict_further_ahead(tmp_path):
    base = tmp_path / "base"
    train(TrainConfig(preset="micro", steps=1, batch_size=2, out=str(base), synth_tracks=2, stats_clips=2,
                      progress=False))
    assert load_model(base).cfg.skip_steps == 0
    tuned = tmp_path / "tuned"
    train(TrainConfig(init=str(base), steps=1, batch_size=2, out=str(tuned), synth_tracks=2, skip_steps=2,
                      stats_clips=2, progress=False))
    model = load_model(tuned)
    assert model.cfg.skip_steps == 2 and model.meta["train"]["init"] == str(base)
    header = next(csv.reader(open(tuned / "train_log.csv")))
    assert [c for c in header if c.startswith("acc_")][0] == "acc_3"
    # everything but the horizon is the base model's
    assert {**model.cfg.to_dict(), "skip_steps": 0} == load_model(base).cfg.to_dict()


def test_times_negatives_train(tmp_path):
    train(TrainConfig(preset="micro", steps=2, batch_size=3, out=str(tmp_path), synth_tracks=2,
                      negatives="times", stats_clips=2, progress=False))
    assert load_model(tmp_path).meta["train"]["negatives"] == "times"
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)


def test_trains_on_a_folder_of_audio(tmp_path, caplog):
    data = tmp_path / "data"
    for i in range(2):
        write_wav(data / f"track{i}.wav", render_track(i, 10, 22050), 22050)
    (data / "bad.ogg").write_bytes(b"OggS not really")
    train(TrainConfig(preset="micro", data=str(data), steps=2, batch_size=2, out=str(tmp_path / "m"),
                      stats_clips=2, progress=False, cache=str(tmp_path / "cache")))
    assert load_model(tmp_path / "m").meta["step"] == 2
    assert "bad.ogg" in caplog.text and "2 files" in caplog.text
    assert len(list((tmp_path / "cache").glob("*/shards/*.i16"))) == 2  # decoded once into the corpus cache


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImmersionsError, match="no decodable audio"):
        train(TrainConfig(preset="micro", data=str(tmp_path), steps=1, out=str(tmp_path / "m"), progress=False,
                          cache=str(tmp_path / "cache")))


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    """The same script under torchrun: two CPU processes, gloo backend, one checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29512",
           "-m", "immersions", "train", "--preset", "micro", "--steps", "3", "--batch-size", "2",
           "--synth-tracks", "2", "--out", str(tmp_path / "ddp")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_model(tmp_path / "ddp")
    assert model.meta["world_size"] == 2 and model.meta["step"] == 3
    assert len(read_log(tmp_path / "ddp")) == 3  # only rank 0 writes


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, monkeypatch):
    """Weights, batch-norm statistics, the log's losses: a run stopped at its step-2 checkpoint
    and resumed with the same command makes exactly what the run that never stopped made."""
    import immersions.train.trainer as trainer

    def cfg(out, resume=False):
        return TrainConfig(preset="micro", steps=4, batch_size=2, out=str(out), synth_tracks=2, synth_seconds=6,
                           stats_clips=2, progress=False, save_every=2, refresh_every=3, lr=1e-3, resume=resume)

    train(cfg(tmp_path / "whole"))
    real_save = trainer.save_train_state

    def save_then_stop(*args, **kwargs):  # a Ctrl-C right after the step-2 checkpoint
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_train_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "stopped"))
    monkeypatch.setattr(trainer, "save_train_state", real_save)
    assert json.loads((tmp_path / "stopped" / "train_state.json").read_text())["meta"]["step"] == 2
    # a run killed later logged a step past its checkpoint: the resumption makes that step again
    with open(tmp_path / "stopped" / "train_log.csv", "a") as f:
        f.write("3,9.99999,1e-3,0.5\n")
    train(cfg(tmp_path / "stopped", resume=True))
    whole, resumed = load_model(tmp_path / "whole").state_dict(), load_model(tmp_path / "stopped").state_dict()
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    losses = lambda folder: [r["loss"] for r in read_log(folder)]  # noqa: E731
    assert losses(tmp_path / "whole") == losses(tmp_path / "stopped")


def test_init_starts_another_preset_of_the_same_shapes_and_refuses_one_that_does_not_fit(tmp_path, micro_model_dir):
    from immersions.model.checkpoint import save_model
    from immersions.model.cpc import CPC
    from immersions.model.config import preset

    cfg = TrainConfig(preset="micro-full", init=str(micro_model_dir), steps=1, batch_size=2, out=str(tmp_path / "full"),
                      synth_tracks=2, synth_seconds=6, stats_clips=2, progress=False, lr=1e-12)
    train(cfg)
    full, base = load_model(tmp_path / "full"), load_model(micro_model_dir)
    assert full.cfg.preset == "micro-full" and full.cfg.scalogram.sample_rate == 44100
    w = "encoder.3.conv1.weight"
    assert torch.allclose(full.state_dict()[w], base.state_dict()[w], atol=1e-6)  # started from its weights
    save_model(CPC(preset("tiny")), tmp_path / "tiny")
    bad = TrainConfig(preset="micro-full", init=str(tmp_path / "tiny"), steps=1, out=str(tmp_path / "x"), progress=False)
    with pytest.raises(ImmersionsError, match="do not fit preset micro-full"):
        train(bad)


def test_ctrl_c_saves_a_checkpoint_at_the_step_reached_and_resume_goes_on(tmp_path):
    """A long run stopped by Ctrl-C (SIGINT) finishes its step, saves a checkpoint there and
    exits cleanly; the same command with --resume goes on from that step."""
    import signal
    import time

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "immersions", "--quiet", "train", "--preset", "micro", "--steps", "400",
            "--batch-size", "2", "--synth-tracks", "2", "--synth-seconds", "6", "--save-every", "1000",
            "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_path = out / "train_log.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log_path.is_file() and len(log_path.read_text().splitlines()) >= 3:  # header + 2 steps
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    saved = json.loads((out / "train_state.json").read_text())["meta"]["step"]
    assert 2 <= saved < 400 and load_model(out).meta["step"] == saved
    assert [int(r["step"]) for r in read_log(out)] == list(range(1, saved + 1))
    assert not (out / "stats.safetensors").exists()  # statistics come when the run ends
    resumed = subprocess.run([*argv[:argv.index("--steps") + 1], str(saved + 2), *argv[argv.index("--steps") + 2:],
                              "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_model(out).meta["step"] == saved + 2 and (out / "stats.safetensors").is_file()


def test_stats_command_measures_on_mixed_sources_as_train_does(micro_model_dir, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(micro_model_dir, model)
    (model / "stats.safetensors").unlink()
    music = tmp_path / "music"
    for i in range(2):
        write_wav(music / f"t{i}.wav", render_track(50 + i, 10, 16000), 16000)
    done = subprocess.run([sys.executable, "-m", "immersions", "stats", "--model", str(model), "--data", f"{music}:3",
                           "--data", "synth:1", "--clips", "4", "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = load_stats(load_model(model))
    assert stats and all(torch.isfinite(s.data_mean).all() for s in stats.values())


def test_a_time_budget_ends_the_run_with_a_checkpoint_and_statistics(tmp_path):
    cfg = TrainConfig(preset="micro", steps=10_000, batch_size=2, out=str(tmp_path), synth_tracks=2, synth_seconds=6,
                      stats_clips=2, progress=False, save_every=10_000, minutes=1e-6)
    train(cfg)
    assert [int(r["step"]) for r in read_log(tmp_path)] == [1]  # the first step is past a microsecond
    assert load_model(tmp_path).meta["step"] == 1 and (tmp_path / "stats.safetensors").is_file()
    assert json.loads((tmp_path / "train_state.json").read_text())["meta"]["step"] == 1
