import json
import shutil
import subprocess
import sys
from pathlib import Path

from immersions.cli import main

from helpers import run_cli


def test_info_json_contract(micro_model_dir):
    result = run_cli("info", "--model", str(micro_model_dir), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    for key in ("preset", "sample_rate", "n_bins", "frames_per_second", "loop_seconds", "parameters", "taps",
                "graph_nodes"):
        assert key in doc
    assert doc["preset"] == "micro" and doc["frames_per_second"] == 125
    assert doc["ear"] == "cpc"
    assert doc["taps"][0] == {"name": "enc 1 conv 1", "key": "enc1.conv1", "shape": [4, 256, 500],
                              "layout": "4 channels x 256 pitch bins x time"}
    assert doc["taps"][-1]["layout"] == "16 channels x time; no pitch axis"  # a context layer
    assert doc["graph_nodes"] == sum(t["shape"][0] * t["shape"][1] for t in doc["taps"])


def test_info_text(micro_model_dir, capsys):
    assert main(["info", "--model", str(micro_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "enc 1 conv 1" in out and "\ntraining   3 steps on synth\n" in out


def test_info_says_what_a_blend_is_made_of(capsys):
    """The shipped default is a blend: its own meta has no steps, its parents' have."""
    from immersions.cli.ear import describe_training, training_of

    house = {"train": {"data": "synth", "init": None}, "step": 3600}
    real = {"train": {"data": ["music/train:3", "synth:1"], "init": "models/default"}, "step": 1600}
    meta = {"blend": {"weight": 0.75, "base": "house", "tuned": "real"}, "parents": {"base": house, "tuned": real}}
    assert describe_training(training_of(meta)) == (
        "a blend: 0.25 x house (3600 steps on synth) + 0.75 x real (1600 steps on music/train:3, synth:1, "
        "from models/default)")
    twice = {"blend": {"weight": 0.5, "base": "old", "tuned": "blend"}, "parents": {"base": house, "tuned": meta}}
    assert describe_training(training_of(twice)).startswith("a blend: 0.5 x old (3600 steps on synth) + 0.5 x blend "
                                                            "(a blend: 0.25 x house")
    assert describe_training(training_of({})) == "not recorded (no steps in its config)"
    # the model that ships: never "0 training steps"
    assert main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["training"] is not None
    if "blend" in doc["training"]:
        parents = doc["training"]["blend"]
        assert all(parents[role]["training"]["steps"] > 0 for role in ("base", "tuned"))


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = run_cli("info", "--model", str(tmp_path / "nope"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("immersions: error: no model at")
    assert "Traceback" not in result.stderr
    debug = run_cli("--debug", "info", "--model", str(tmp_path / "nope"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_bad_arguments_are_rejected(tmp_path):
    result = run_cli("train", "--preset", "huge", "--steps", "1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "unknown preset 'huge'" in result.stderr
    result = run_cli("train", "--steps", "0", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--steps" in result.stderr
    result = run_cli("train", "--synth-seconds", "0", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--synth-seconds" in result.stderr
    result = run_cli("train", "--skip-steps", "-1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--skip-steps" in result.stderr
    result = run_cli("train", "--recompute", "-1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--recompute" in result.stderr and "Traceback" not in result.stderr


def test_train_offers_exactly_the_models_kinds_of_negatives():
    # the CLI names them itself so that `--help` does not import torch: they must stay equal
    from immersions.cli import build_parser
    from immersions.model.cpc import NEGATIVES

    for kind in NEGATIVES:
        assert build_parser().parse_args(["train", "--out", "x", "--negatives", kind]).negatives == kind
    assert build_parser().parse_args(["train", "--out", "x", "--across-steps"]).negatives == "steps"
    result = run_cli("train", "--negatives", "everything", "--out", "x")
    assert result.returncode == 2 and "--negatives" in result.stderr


def test_probe_json_contract(micro_model_dir):
    result = run_cli("probe", "--model", str(micro_model_dir), "--tracks", "3", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["n_tracks"] == 3 and 0 <= doc["accuracy"] <= 1 and 0 <= doc["untrained_accuracy"] <= 1
    assert doc["test_clips"] > 0 and doc["seconds"] > 0
    sections = doc["by_section"]
    assert set(sections) <= {"intro", "build", "groove", "breakdown", "drop"}
    assert sum(row["test_clips"] for row in sections.values()) == doc["test_clips"]
    assert all(0 <= row["accuracy"] <= 1 for row in sections.values())


def test_synth_command_writes_wav_and_png(tmp_path):
    result = run_cli("synth", "--seed", "3", "--seconds", "4", "--out", str(tmp_path / "t.wav"),
                     "--png", str(tmp_path / "t.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t.wav").stat().st_size == 44 + 4 * 16000 * 2
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_console_script_and_module_entry_points():
    script = shutil.which("immersions", path=str(Path(sys.executable).parent))
    assert script, "console script `immersions` is not installed"
    assert subprocess.run([script, "--help"], capture_output=True).returncode == 0
    assert run_cli("--help").returncode == 0


def test_output_into_a_pipe_closed_early_ends_quietly():
    """`immersions info --json | head`: the reader leaves before the output is written. Every
    command ends as a shell expects (141, 128 + SIGPIPE), with nothing on stderr."""
    from immersions.cli.parser import SIGPIPE_STATUS

    for args in (["info", "--json"], ["midi", "check", "generic8"]):
        proc = subprocess.Popen([sys.executable, "-m", "immersions", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
        proc.stdout.close()  # the reader is gone before anything was written
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == SIGPIPE_STATUS == 141, stderr
        assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr
