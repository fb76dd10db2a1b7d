import logging
import shutil

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def sine():
    """A pure tone: sine(freq, seconds, sample_rate, amplitude) -> float32 array."""

    def make(freq: float, seconds: float = 1.0, sample_rate: int = 16000, amplitude: float = 0.5):
        t = np.arange(int(round(seconds * sample_rate))) / sample_rate
        return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)

    return make


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO)


@pytest.fixture(scope="module")
def micro():
    """An untrained `micro` CPC (seed 0), in eval mode."""
    from immersions.model import CPC, preset

    torch.manual_seed(0)
    return CPC(preset("micro")).eval()


@pytest.fixture(scope="module")
def model_dir(micro_model_dir, tmp_path_factory, request):
    """The trained micro model in a folder of this test module's own (its layout gets cached there)."""
    folder = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_")) / "micro"
    shutil.copytree(micro_model_dir, folder)
    return folder


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """A `micro` model trained for a few steps on the procedural corpus, with statistics."""
    from immersions.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("micro")
    train(TrainConfig(preset="micro", steps=3, batch_size=4, out=str(out), synth_tracks=2,
                      stats_clips=4, progress=False))
    return out


@pytest.fixture(scope="session")
def micro_full_model_dir(tmp_path_factory):
    """A `micro-full` model (micro's widths on the 44.1-kHz full-band front end), trained for a
    few steps on the procedural corpus, with statistics."""
    from immersions.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("micro-full")
    train(TrainConfig(preset="micro-full", steps=2, batch_size=2, out=str(out), synth_tracks=2, synth_seconds=8,
                      stats_clips=2, progress=False))
    return out
