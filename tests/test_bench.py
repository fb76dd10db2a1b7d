import json
import subprocess
import sys

import pytest


def test_bench_model_prints_json_with_side_by_side_ratio():
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "model", "--presets", "micro",
                             "--repeats", "1", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["benchmark"] == "model" and doc["torch"] and doc["device"] == "cpu"
    micro = doc["presets"]["micro"]
    scal = micro["scalogram_forward_backward"]
    assert scal["speedup"] == scal["nnaudio_cqt1992v2"]["median_s"] / scal["ours"]["median_s"]
    for part in ("ours", "nnaudio_cqt1992v2"):
        assert scal[part]["min_s"] <= scal[part]["median_s"] <= scal[part]["max_s"]
    assert micro["dream_step"]["steps_per_s"] > 0 and micro["dream_step"]["batch"] == 4
    assert micro["training"]["items_per_s"] > 0


def test_bench_dream_reports_steps_split_and_baseline_ratio():
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "dream", "--presets", "micro",
                             "--batches", "1,2", "--baseline-batch", "2", "--repeats", "1", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    rows = doc["presets"]["micro"]["batches"]
    assert set(rows) == {"1", "2"}
    assert {"scalogram", "network", "backward", "transforms"} <= set(rows["2"]["split_ms"])
    assert rows["2"]["speedup_vs_baseline"] == pytest.approx(rows["2"]["baseline_ms_per_step"] / rows["2"]["ms_per_step"])
    assert "speedup_vs_baseline" not in rows["1"]
