import json
import shutil
import statistics
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
    for row in rows.values():  # the musical dream step beside the plain one, in the same run
        assert row["share_of_plain_steps_per_s"] == pytest.approx(row["plain_step_ms"] / row["ms_per_step"])
        assert {"priors", "update"} <= set(row["split_ms"])
    fast = doc["presets"]["micro"]["precisions"]["bf16"]  # the faster path beside float32, at the baseline batch
    assert fast["resolved"] == "bf16"
    assert fast["speed_over_fp32"] == pytest.approx(rows["2"]["ms_per_step"] / fast["ms_per_step"])
    assert isinstance(doc["bf16_native"], bool)


def test_bench_train_without_data_compares_the_presets_and_precisions_side_by_side():
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "train", "--presets", "micro,micro-full",
                             "--precisions", "fp32,bf16", "--steps", "2", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    choices = json.loads(result.stdout)["choices"]
    assert set(choices["presets"]) == {"micro", "micro-full"}
    full = choices["presets"]["micro-full"]
    assert full["sample_rate"] == 44100 and full["top_hz"] > 16000
    for name, row in choices["presets"].items():
        for precision in ("fp32", "bf16"):
            r = row[precision]
            assert r["steps"] == 2 and r["items_per_s"] == pytest.approx(16 / r["median_s"])
    base = choices["presets"]["micro"]["fp32"]["median_s"]
    assert full["bf16"]["speed_over_micro_fp32"] == pytest.approx(base / full["bf16"]["median_s"])
    doc = json.loads(result.stdout)  # the machine at the top, as in every benchmark
    assert doc["cpu_cores"] and doc["torch"] and doc["device"] == "cpu" and "environment" not in doc


def test_every_benchmark_puts_the_machine_at_the_top_of_its_json():
    """One shape for all: `{"benchmark": NAME, **environment(...), ...}` (as model, dream and
    sound always had, which test_bench and scripts/gpu_check.py read), never an "environment"
    block beside it. Read from the source, so that no benchmark need run."""
    import ast
    from pathlib import Path

    from immersions import bench

    folder = Path(bench.__file__).parent
    found = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
            if "benchmark" not in keys:
                continue
            name = node.values[keys.index("benchmark")].value
            spread = [v for k, v in zip(node.keys, node.values)
                      if k is None and isinstance(v, ast.Call) and getattr(v.func, "id", None) == "environment"]
            assert spread and "environment" not in keys, f"{path.name}:{node.lineno} ({name})"
            found[name] = path.name
    assert set(found) == set(bench.BENCHMARKS)  # every benchmark's JSON was seen


def test_bench_sound_dreams_the_grid_and_writes_what_it_heard(micro_model_dir, tmp_path):
    out = tmp_path / "sound"
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "sound", "--model", str(micro_model_dir),
                             "--starts", "silence,kick", "--groups", "early,context", "--channels", "0.2",
                             "--variants", "before,default", "--steps", "2", "--copies", "1", "--set", "bars=1",
                             "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert len(doc["dreams"]) == 2 * 2 * 2
    assert doc["variants"]["before"] == {"settings": {"space": "waveform", "beat_repeat": 0.0, "balance": 0.0,
                                                       "sparsity": 0.0, "harmonics": 0.0, "contrast": 0.0},
                                         "reach": False}
    for row in doc["dreams"]:
        assert row["peak"] <= 1.0 + 1e-6 and row["nan_resets"] == 0
        assert row["silence_loving"] is None or 0.0 <= row["silence_loving"] <= 1.0
        assert (out / row["variant"] / f"{row['start']}-{row['group']}-0.2.wav").is_file()
        assert {"spectral_flatness", "peak_energy_share", "onset_repetition_beat", "balance_distance_db"} <= set(row["measures"])
        # seven controls round the channel axis; the fourth is the grid's own control
        assert len(row["controls_rise"]) == 7 and row["controls_rise"][3] == pytest.approx(row["control_rise"])
    summary = doc["summary"]["default"]
    for name, g in summary["tap_groups"].items():
        spread = [statistics.median(abs(c) for c in r["controls_rise"])
                  for r in doc["dreams"] if r["variant"] == "default" and r["group"] == name]
        assert g["controls_rise_abs_median"] == pytest.approx(statistics.median(spread))
        assert g["rise_over_controls"] == pytest.approx(g["rise_median"] / g["controls_rise_abs_median"])
    assert set(summary["tap_groups"]) == {"early", "context"}
    assert set(summary["targets"]) == {"rise_3x_control_every_group", "flatness_within_3x_of_music",
                                       "onset_repetition_at_least_music_median", "nothing_silent"}
    assert summary["silent_dreams"] == 0  # from silence every dream of the default leaves silence
    # the notes' movement beside the starter clips' (no --reference: they stand in for music)
    grooves = [doc["starter_clips"][n]["harmonic_change"] for n in ("kick", "groove")]
    assert doc["summary"]["music_harmonic_change_median"] == pytest.approx(sum(grooves) / 2)
    assert "harmonic_change_over_music" in summary
    assert (out / "starters" / "groove.wav").is_file()


def test_bench_sound_on_a_full_band_ear_measures_the_balance_up_to_the_top_octave(micro_full_model_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "sound", "--model", str(micro_full_model_dir),
                             "--starts", "noise", "--groups", "early", "--channels", "0.2", "--steps", "2",
                             "--copies", "1", "--out", str(tmp_path), "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["octaves_hz"][-1] == [8000.0, 16000.0]  # 44.1 kHz: the top whole octave is 8-16 kHz
    assert len(doc["reference_octave_profile_db"]) == len(doc["octaves_hz"])
    (row,) = doc["dreams"]
    excess = doc["summary"]["default"]["octave_excess_db_median"]
    assert excess == pytest.approx([d - r for d, r in zip(row["octave_profile_db"], doc["reference_octave_profile_db"])])
    import soundfile

    assert soundfile.info(row["wav"]).samplerate == 44100


def test_bench_compound_puts_excite_alone_beside_excite_and_quiet(micro_model_dir):
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "compound", "--model", str(micro_model_dir),
                             "--starts", "noise", "--steps", "2", "--copies", "1", "--quiet-weights", "1,2",
                             "--set", "bars=1", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["benchmark"] == "compound" and doc["steps"] == 2
    assert [d["variant"] for d in doc["dreams"]] == ["excite", "quiet_w1", "quiet_w2"] * 3  # three pairs
    for d in doc["dreams"]:
        assert d["met"] == (d["a_end"] >= 3 * max(d["a_start"], 0.1) and d["b_end"] < d["b_start"])
        assert d["a_rise"] == pytest.approx(d["a_end"] - d["a_start"])
    # the same start and seed: A and B start where they start, whatever is selected
    first = doc["dreams"][:3]
    assert len({d["a_start"] for d in first}) == 1 and len({d["b_start"] for d in first}) == 1
    assert set(doc["summary"]) == {"excite", "quiet_w1", "quiet_w2"}


def test_every_benchmark_name_leads_to_a_function_of_the_arguments():
    import importlib
    import inspect

    from immersions.bench import BENCHMARKS, run
    from immersions.errors import ImmersionsError

    for name, target in BENCHMARKS.items():
        module, function = target.split(":")
        fn = getattr(importlib.import_module(f"immersions.bench.{module}"), function)
        assert list(inspect.signature(fn).parameters) == ["args"], name
    with pytest.raises(ImmersionsError, match="unknown benchmark 'nope'"):
        run("nope", None)


def test_bench_train_measures_training_from_the_cache_and_both_memory_settings(tmp_path):
    from immersions.audio.io import write_wav
    from immersions.synth import render_track

    data = tmp_path / "music"
    for i in range(2):
        write_wav(data / f"track{i}.wav", render_track(i, 12, 16000), 16000)
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "train", "--data", str(data),
                             "--cache", str(tmp_path / "cache"), "--presets", "micro", "--steps", "3",
                             "--repeats", "1", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["benchmark"] == "train" and doc["corpus"]["files"] == 2
    rows = doc["training"]
    assert doc["cache_vs_in_memory"] == pytest.approx(rows["cache"]["items_per_s"] / rows["in_memory"]["items_per_s"])
    runs = doc["train_process"]
    assert (runs["default"]["recompute"], runs["low_memory"]["recompute"]) == (0, 3)
    for run in (runs["default"], runs["low_memory"]):
        assert run["peak_rss_mib"] > 100 and run["items_per_s"] > 0 and f"--recompute {run['recompute']}" in run["command"]
    assert runs["low_memory_speed"] == pytest.approx(runs["low_memory"]["items_per_s"] / runs["default"]["items_per_s"])


def test_the_controls_are_the_selections_size_spread_round_the_channel_axis():
    from immersions.bench.sound import control_regions
    from immersions.dream.run import control_region
    from immersions.selection import Region

    region = Region(3, (0.2, 0.1), (0.5, 0.25))
    controls = control_regions(region)
    assert [round(c.channel[0], 6) for c in controls] == [round((0.2 + k / 8) % 1.0, 6) for k in range(1, 8)]
    assert all(c.tap == 3 and c.channel[1] == 0.1 and c.pitch == region.pitch and c.time == region.time
               for c in controls)
    assert controls[3] == control_region(region)



def test_on_a_tap_of_one_channel_the_grid_selects_one_pitch_and_its_controls_move_round_the_pitches():
    """CREPE's pitch output is one channel of 360 pitch bins: the grid's selection there is one
    bin, and its controls are other bins, never the selection itself (they were, when the
    grid moved round the channels: the control rose exactly as much as the selection)."""
    from types import SimpleNamespace

    from immersions.bench.sound import control_regions, grid_region
    from immersions.dream.run import control_region
    from immersions.model.ear import Tap

    taps = [Tap(0, "conv1", "conv 1", 64, 1, 4), Tap(1, "pitch", "pitch", 1, 360, 4, pitch_label="note")]
    ear = SimpleNamespace(taps=taps)
    assert grid_region(ear, 0, 0.6).channel == (0.6, 0.0) and grid_region(ear, 0, 0.6).pitch == (0.5, 1.0)
    region = grid_region(ear, 1, 0.6)
    shape = taps[1].shape(100)
    assert region.mask(shape).sum() == shape[2] == 25  # one pitch bin, every time step
    controls = control_regions(region, channels=1)
    assert len({c.pitch for c in controls}) == len(controls) and all(c.channel == region.channel for c in controls)
    for c in controls:
        assert not (c.mask(shape) & region.mask(shape)).any()
    assert control_region(region, channels=1) == controls[3]
    # a tap of many channels keeps moving round its channels
    assert control_region(grid_region(ear, 0, 0.6), channels=64).channel == pytest.approx((0.1, 0.0))

def test_bench_cue_measures_one_deck_against_the_cue_deck(micro_model_dir, tmp_path):
    model = tmp_path / "micro"  # a copy: the map it draws is laid out and saved beside the model
    shutil.copytree(micro_model_dir, model)
    result = subprocess.run([sys.executable, "-m", "immersions", "bench", "cue", "--model", str(model),
                             "--seconds", "6", "--fade-bars", "1", "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["benchmark"] == "cue" and doc["fade_bars"] == 1 and doc["frame_cap"] >= 0
    one, two = doc["one_deck"], doc["cue_deck"]
    assert one["dream_steps_per_s"] > 0 and two["dream_steps_per_s_deck_b_while_a_holds"] > 0
    assert two["fade_seconds"] == pytest.approx(2.0)
    # the prepared deck is on air (80 % of its rise, counted by the fader's power) within the fade
    if two["rise"] > 0:
        assert two["seconds_from_fade_start_to_80_percent"] is not None
        assert 0.0 <= two["seconds_from_fade_start_to_80_percent"] <= two["fade_seconds"]


def test_the_sound_grids_rise_target_counts_a_rise_over_a_control_that_never_moved():
    """A context tap's control channel that its ReLU keeps off never moves: there is no ratio,
    but a selection that rose over it has met the 3x target; no rise, or a small one, has not."""
    from immersions.bench.sound import rises_3x

    assert rises_3x({"rise_median": 0.5, "control_rise_abs_median": 0.0})
    assert rises_3x({"rise_median": 0.9, "control_rise_abs_median": 0.3})
    assert not rises_3x({"rise_median": 0.8, "control_rise_abs_median": 0.3})
    assert not rises_3x({"rise_median": 0.0, "control_rise_abs_median": 0.0})
    assert not rises_3x({"rise_median": -0.2, "control_rise_abs_median": 0.0})
