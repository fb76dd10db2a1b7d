"""scripts/gpu-train.sh: the GPU training run of the full-band ear, here at its CPU scale, so
that it works on the day a GPU is lent: the compact music is made (Opus, within its budget),
the `full` preset trains from models/full, both probes run, and train.json and the model come
back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from immersions.audio.io import write_wav
from immersions.synth import render_track

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_prepare_then_run_at_the_cpu_scale(tmp_path):
    music, probe = tmp_path / "music" / "pkg", tmp_path / "probe" / "held"
    for i in range(2):
        write_wav(music / f"t{i}.wav", render_track(70 + i, 20, 44100), 44100)
    (music / "copyright").write_text("pkg: GPL-2+\n")
    for i in range(3):
        write_wav(probe / f"p{i}.wav", render_track(80 + i, 50, 44100), 44100)
    compact = tmp_path / ".music"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_train.py"), "prepare", "--music",
                           str(music.parent), "--probe", str(probe.parent), "--out", str(compact), "--budget-mb", "1.0"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((compact / "manifest.json").read_text())
    assert manifest["train_files"] == 2 and manifest["probe_tracks"] == 3
    assert manifest["bytes"] <= 1.0e6  # the budget holds
    assert sorted(p.name for p in (compact / "train" / "pkg").iterdir()) == ["copyright", "t0.opus", "t1.opus"]

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GPU_TRAIN_SCALE": "tiny", "GPU_TRAIN_MUSIC": str(compact),
           "GPU_TRAIN_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-train.sh")], env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "train.json").read_text())
    assert doc["ok"] and doc["scale"] == "tiny" and doc["device"] == "cpu"
    assert doc["training"]["steps"] >= 1 and doc["training"]["items_per_s"] > 0
    for probe_name in ("probe_procedural", "probe_real"):
        assert 0.0 <= doc[probe_name]["accuracy"] <= 1.0 and "untrained_accuracy" in doc[probe_name]
    assert sorted(p.name for p in (out / "model").iterdir()) == sorted(
        ["config.json", "model.safetensors", "stats.safetensors", "train_log.csv", "train_plot.png"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model"]["preset"] == "full" and config["meta"]["train"]["init"] == "models/full"
