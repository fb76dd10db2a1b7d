"""scripts/gpu-check.sh: the prepared check a GPU lease runs first. Here it runs with tiny
settings on the CPU, so that it still works on the day a GPU is lent."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
STEPS = ("dream", "layout", "render", "train")


def load_runner():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_check_writes_each_step_and_a_summary(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_SCALE": "tiny", "GPU_CHECK_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=2700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["environment.json", "summary.json", *(f"{s}.json" for s in STEPS)])

    environment = json.loads((out / "environment.json").read_text())
    assert environment["ok"] and environment["scale"] == "tiny" and environment["torch"]
    assert environment["packages"]["moderngl"] and environment["packages"]["nnAudio"]

    docs = {s: json.loads((out / f"{s}.json").read_text()) for s in STEPS}
    for name, doc in docs.items():
        assert doc["step"] == name and doc["ok"] is True and doc["error"] is None and not doc["timed_out"]
        assert 0 < doc["seconds"] <= doc["limit_s"]
        assert doc["torch"] == environment["torch"] and doc["device_name"] == environment["device_name"]
        assert doc["command"].startswith("immersions ")

    dream = docs["dream"]["figures"]
    assert dream["preset"] == "micro" and dream["batch"] == 2 and dream["device"] == "cpu"
    assert dream["steps_per_s"] == pytest.approx(1000 / dream["ms_per_step"])
    assert dream["speedup_vs_baseline"] > 0 and {"scalogram", "network", "backward"} <= set(dream["split_ms"])

    layout = docs["layout"]["figures"]
    assert layout["nodes"] > 1000 and layout["edges"] > layout["nodes"] and layout["levels"] >= 2
    assert 0 < layout["edge_length_ratio"] < 1 and len(layout["seconds_per_level"]) == layout["levels"]

    render = docs["render"]["figures"]
    assert (render["width"], render["height"], render["edges_drawn"], render["bloom"]) == (320, 180, 1000, True)
    assert render["fps"] > 0 and render["gl_renderer"] and render["nodes"] == layout["nodes"]

    train = docs["train"]["figures"]
    assert train["preset"] == "micro" and train["steps"] == 3 and train["batch_size"] == 2
    assert train["items_per_s"] > 0 and train["items_per_s_overall"] > 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["scale"] == "tiny"
    assert summary["failed_steps"] == summary["timed_out_steps"] == summary["skipped_steps"] == []
    assert list(summary["steps"]) == list(STEPS)
    assert all(row["ok"] and row["headline"] for row in summary["steps"].values())
    assert summary["seconds"] < summary["budget_s"]
    for name in STEPS:
        assert f"{name}: ok in" in done.stdout


def test_a_hung_step_is_ended_with_everything_it_started(tmp_path):
    runner = load_runner()
    child_pid = tmp_path / "child.pid"
    # the step starts a child of its own and then hangs, as a bench spawning a layout process might
    script = f"sleep 300 & echo $! > {child_pid}; echo 'working' >&2; sleep 300"
    start = time.perf_counter()
    outcome = runner.run_limited(["bash", "-c", script], 2.0, dict(os.environ))
    assert outcome.timed_out and time.perf_counter() - start < 200  # not the 300 s the step asked for
    assert gone(int(child_pid.read_text())), "the step's own child outlived the step's limit"
    error = runner.one_line_error(outcome, 2.0)
    assert error == "timed out after 2 s (the step's limit); last output: working"


def gone(pid: int) -> bool:
    """True once the process has ended (a zombie waiting for init to reap it counts as ended)."""
    for _ in range(100):
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_ending_the_check_ends_the_step_it_runs(tmp_path):
    child_pid = tmp_path / "child.pid"
    check = subprocess.Popen([sys.executable, "-c", f"""
import os, sys
sys.path.insert(0, {str(ROOT / "scripts")!r})
import gpu_check
gpu_check.leave_no_step_running()
gpu_check.run_limited(["bash", "-c", "sleep 300 & echo $! > {child_pid}; sleep 300"], 600, dict(os.environ))
"""])
    for _ in range(600):
        if child_pid.is_file() and child_pid.read_text().strip():
            break
        time.sleep(0.1)
    else:
        check.kill()
        pytest.fail("the step never started")
    check.terminate()  # as a lease's time limit would
    assert check.wait(timeout=60) == 128 + 15
    assert gone(int(child_pid.read_text())), "the step's child outlived the check"


def test_a_failed_command_gives_its_one_line_error(tmp_path):
    runner = load_runner()
    outcome = runner.run_limited([sys.executable, "-m", "immersions", "bench", "render", "--sizes", "wide"], 600,
                                 {**os.environ, "PYTHONPATH": str(ROOT / "app")})
    assert outcome.rc == 2 and not outcome.timed_out
    assert runner.one_line_error(outcome, 600) == (
        "exit status 2: immersions: error: size 'wide' is not WIDTHxHEIGHT, e.g. 1920x1080")
    outcome = runner.run_limited([sys.executable, "-m", "immersions", "bench", "render", "--maps", "seed,huge"], 600,
                                 {**os.environ, "PYTHONPATH": str(ROOT / "app")})
    assert outcome.rc == 2 and runner.one_line_error(outcome, 600).startswith(
        "exit status 2: immersions: error: unknown preset 'huge'")


def test_steps_after_the_budget_are_skipped_and_say_so(tmp_path):
    runner = load_runner()
    run = runner.Run("tiny", tmp_path, tmp_path, sys.executable, budget_s=60.0,
                     started=time.perf_counter() - 58.0, environment={"torch": "x", "device_name": "y"})
    doc = runner.run_step(run, runner.steps_for("tiny", tmp_path)[0])
    assert not doc["ok"] and doc["skipped"] and not doc["timed_out"]
    assert doc["error"].startswith("skipped: the check's budget of 60 s was spent")
    assert doc["seconds"] == 0.0 and 0.0 <= doc["limit_s"] < 5


def test_gpu_settings_are_the_issue_s(tmp_path):
    runner = load_runner()
    steps = {s.name: s for s in runner.steps_for("gpu", tmp_path)}
    assert list(steps) == list(STEPS)
    dream = steps["dream"].argv
    assert dream[dream.index("--presets") + 1] == "seed" and "8" in dream[dream.index("--batches") + 1].split(",")
    assert dream[dream.index("--device") + 1] == "cuda"
    render = steps["render"].argv
    assert render[render.index("--sizes") + 1] == "1920x1080" and render[render.index("--bloom") + 1] == "on"
    assert "1000000" in render[render.index("--edge-counts") + 1].split(",")
    train = steps["train"].argv
    assert train[train.index("--preset") + 1] == "seed" and train[train.index("--steps") + 1] == "50"
    # each step under its own limit; the check's budget (420 s) keeps all of them inside 8 minutes
    assert all(s.limit_s <= 150 for s in steps.values())
