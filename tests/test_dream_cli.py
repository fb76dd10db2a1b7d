import json
import wave
from pathlib import Path

import helpers
import pytest

from immersions.errors import ImmersionsError


def run_cli(*args):
    return helpers.run_cli(*args, timeout=600)


def wav_seconds(path):
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_dream_writes_a_clip_and_reports_json(micro_model_dir, tmp_path):
    out = tmp_path / "d.wav"
    result = run_cli("dream", "--model", str(micro_model_dir), "--layer", "enc 4 conv 1", "--channel", "0.2:0.5",
                     "--pitch", "0.5:0.5", "--start", "noise", "--steps", "3", "--seed", "1", "--out", str(out),
                     "--set", "learning_rate=-1.5", "--set", "eq_high=-6", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"objective_start", "objective_end", "control_start", "control_end", "steps",
                        "steps_per_second", "nan_resets", "peak"}
    assert doc["steps"] == 3 and doc["nan_resets"] == 0 and 0 < doc["peak"] <= 1.0
    assert wav_seconds(out) == 4.0


def test_dream_one_line_errors(micro_model_dir, tmp_path):
    base = ["dream", "--model", str(micro_model_dir), "--out", str(tmp_path / "x.wav")]
    cases = [
        (["--layer", "enc 99"], "unknown layer 'enc 99'; valid layers: enc 1 conv 1"),
        (["--layer", "3", "--channel", "0.5:1.5"], "--channel span 1.5 is outside 0 .. 1"),
        (["--layer", "3", "--steps", "-2"], "--steps must be zero or more"),
        (["--layer", "3", "--start", str(tmp_path / "missing.wav")], "neither silence, noise"),
        (["--layer", "3", "--set", "learning_rate=9"], "learning_rate: 9 is outside -5 .. 2"),
        (["--layer", "3", "--set", "warp_drive=1"], "unknown parameter 'warp_drive'"),
    ]
    for extra, message in cases:
        result = run_cli(*base, *extra)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, result.stderr)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    result = run_cli(*base, "--layer", "3", "--start", str(bad))
    assert result.returncode == 2 and "bad.wav" in result.stderr


def test_journey_writes_one_wav_per_stage_each_from_the_previous(micro_model_dir, tmp_path):
    plan = tmp_path / "j.toml"
    plan.write_text(
        'start = "silence"\nsteps = 2\n[params]\ngradient_noise = 0.3\n'
        '[[stage]]\nlayer = "enc 2 conv 2"\nchannel = "0.5:0.5"\n'
        '[[stage]]\nlayer = "ar 2"\nkeep = true\nparams = { time_jitter = 0.5 }\n'
    )
    result = run_cli("dream", "--model", str(micro_model_dir), "--journey", str(plan), "--out", str(tmp_path / "j"),
                     "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    stages = doc["stages"]
    assert [s["layer"] for s in stages] == ["enc 2 conv 2", "ar 2"]
    assert (doc["start"], doc["seed"], [s["steps"] for s in stages]) == ("silence", 0, [2, 2])  # the file's
    assert stages[1]["params"] == {"gradient_noise": 0.3, "time_jitter": 0.5}
    assert all(Path(s["wav"]).is_file() for s in stages)
    assert (tmp_path / "j" / "stage02.wav").is_file()
    (tmp_path / "empty.toml").write_text("steps = 1\n")
    result = run_cli("dream", "--model", str(micro_model_dir), "--journey", str(tmp_path / "empty.toml"))
    assert result.returncode == 2 and "no [[stage]]" in result.stderr


def test_the_command_line_wins_over_the_journey_file(micro_model_dir, tmp_path):
    plan = tmp_path / "j.toml"
    plan.write_text(
        'start = "silence"\nsteps = 40\nseed = 0\n[params]\ngradient_noise = 0.3\n'
        '[[stage]]\nlayer = "enc 2 conv 2"\n'
        '[[stage]]\nlayer = "ar 2"\nsteps = 30\nparams = { time_jitter = 0.5 }\n'
    )
    base = ["dream", "--model", str(micro_model_dir), "--journey", str(plan), "--out", str(tmp_path / "j")]
    result = run_cli(*base, "--steps", "1", "--seed", "4", "--start", "noise", "--set", "gradient_noise=0.1",
                     "--set", "time_jitter=0.2", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["start"], doc["seed"]) == ("noise", 4)
    assert [s["steps"] for s in doc["stages"]] == [1, 1]  # over the file's 40 and the second stage's own 30
    assert [s["params"] for s in doc["stages"]] == [{"gradient_noise": 0.1, "time_jitter": 0.2}] * 2
    # what makes no sense beside a journey is refused in one line, before anything loads
    for extra, message in ((["--layer", "3", "--keep"], "--layer, --keep pick one selection"),
                           (["--set", "learning_rate=9"], "learning_rate: 9 is outside -5 .. 2"),
                           (["--steps", "-1"], "--steps must be zero or more")):
        result = run_cli(*base, *extra)
        assert result.returncode == 2, (extra, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert message in line, (extra, line)


def test_shipped_example_journey_parses():
    import tomllib

    plan = tomllib.loads((helpers.REPO / "assets" / "journeys" / "example.toml").read_text())
    assert len(plan["stage"]) == 4
    from immersions.dream.run import stage_weight

    assert [stage_weight(s, i) for i, s in enumerate(plan["stage"], 1)] == [1.0, 1.0, 1.0, -2.0]
    assert stage_weight({"weight": -1.5}, 1) == -1.5 and stage_weight({"quiet": True, "weight": 3}, 1) == -3.0
    assert stage_weight({"quiet": True}, 1, quiet_weight=0.5) == -0.5
    with pytest.raises(ImmersionsError, match="stage 2: quiet must be true or false"):
        stage_weight({"quiet": "yes"}, 2)
    with pytest.raises(ImmersionsError, match="stage 3: weight must be a number"):
        stage_weight({"weight": "-1"}, 3)
