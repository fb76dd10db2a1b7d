import json
import subprocess
import sys


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
