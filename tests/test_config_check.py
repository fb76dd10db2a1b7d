"""A configuration error stops `perform`, `install` and `render` at once: one line, exit
status 2, before a window opens, a model loads or the installation's watchdog starts; and a
watchdog whose child meets one stops too instead of restarting it for ever (issue 31).

Real processes, run as a technician runs them, without --quiet: anything that started (the
watchdog, an audio device, a window, a model's map) would log a line, so a stderr of exactly
one line says nothing did. No display here unless under Xvfb (two screens, as in
test_monitors.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immersions.install.watchdog import read_heartbeat

APP = str(Path(__file__).resolve().parents[1] / "app")
NO_DISPLAY = {**{k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}, "PYTHONPATH": APP}
TWO_SCREENS = "-screen 0 1280x720x24 -screen 1 1024x768x24 +xinerama"
SOON = 30.0  # seconds: the target is 10 on a gallery PC; generous for a loaded test machine
needs_xvfb = pytest.mark.skipif(shutil.which("xvfb-run") is None,
                                reason="xvfb-run not installed (apt-get install xvfb xauth)")


def immersions(*args: str, xvfb: bool = False, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m immersions ARGS` (under Xvfb with two monitors if asked); the result and its seconds."""
    command = [sys.executable, "-m", "immersions", *args]
    if xvfb:
        command = ["xvfb-run", "-a", "-s", TWO_SCREENS, *command]
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=NO_DISPLAY, timeout=timeout)
    return done, time.monotonic() - began


def one_line(done: subprocess.CompletedProcess, words: str) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]  # nothing started, nothing else said
    assert lines[0].startswith("immersions: error: ") and words in lines[0], lines[0]
    return lines[0]


def test_install_stops_at_a_bad_setting_before_its_watchdog_starts(tmp_path):
    state, logs = tmp_path / "state", tmp_path / "logs"
    base = ["install", "--state-dir", str(state), "--log-dir", str(logs)]
    cases = [
        (["--open", "10:00", "--close", "18:00", "--audio-device", "no such card"], "no audio output 'no such card'"),
        (["--audio-backend", "nope"], "unknown audio backend 'nope'"),
        (["--input", str(tmp_path / "room.wav")], "no such file"),
        (["--model", str(tmp_path / "nope")], "no model at"),
        (["--monitor", "9", "--headless"], "--monitor 9 chooses the window's screen"),
        (["--headless", "--seconds", "0"], "--seconds must be positive"),
        ([], "cannot open a window"),  # no display: said here, not by a child the watchdog restarts
    ]
    if not os.path.exists("/dev/video63"):
        cases.append((["--video-out", "v4l2:/dev/video63"], "no video device /dev/video63"))
    for argv, words in cases:
        done, seconds = immersions(*base, *argv)
        one_line(done, words)
        assert seconds < SOON
    assert not (logs / "watchdog.log").exists() and not (state / "heartbeat.json").exists()


@needs_xvfb
def test_a_monitor_that_is_not_there_stops_install_and_perform_before_a_window_opens(tmp_path):
    logs = tmp_path / "logs"
    done, seconds = immersions("install", "--monitor", "9", "--open", "10:00", "--close", "18:00",
                               "--state-dir", str(tmp_path / "state"), "--log-dir", str(logs), xvfb=True)
    one_line(done, "no monitor 9: this display has 2 (0 .. 1)")
    assert seconds < SOON and not (logs / "watchdog.log").exists()
    done, seconds = immersions("perform", "--monitor", "9", "--device", "cpu", xvfb=True)
    one_line(done, "no monitor 9: this display has 2 (0 .. 1)")  # before the window and the model
    assert seconds < SOON


def test_perform_and_render_stop_at_a_bad_setting_before_a_model_loads(tmp_path):
    missing = str(tmp_path / "nope")
    for args, words in ((["perform", "--model", "default", "--model", missing], f"no model at '{missing}'"),
                        (["perform", "--headless", "--seconds", "1", "--model", "default", "--model", missing],
                         f"no model at '{missing}'"),
                        (["perform", "--audio-device", "no such card"], "no audio output 'no such card'"),
                        (["perform", "--cue-device", "headphones", "--audio-backend", "null"],
                         "no audio output 'headphones'"),
                        (["perform", "--headless", "--seconds", "1", "--cue-device", "0"], "--cue-device 0"),
                        (["perform", "--headless", "--seconds", "1", "--monitor", "1"], "--monitor 1"),
                        (["perform", "--seconds", "-1"], "--seconds must be positive"),
                        (["render", "--model", missing, "--out", str(tmp_path / "r")], "no model at")):
        done, seconds = immersions(*args)
        one_line(done, words)
        assert seconds < SOON
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_child_that_cannot_start_stops_its_watchdog_and_says_why_in_the_heartbeat(tmp_path):
    """What the checks above cannot see (here: the child has no display, the parent is not
    asked) the child says in its heartbeat; the watchdog stops with exit status 2, once."""
    heartbeat, logs = tmp_path / "heartbeat.json", tmp_path / "logs"
    child = [sys.executable, "-m", "immersions", "install", "--child", "--state-dir", str(tmp_path / "state"),
             "--log-dir", str(logs)]
    done = subprocess.run([sys.executable, "-m", "immersions.install.watchdog", "--heartbeat", str(heartbeat),
                           "--log-dir", str(logs), "--", *child], capture_output=True, text=True, env=NO_DISPLAY,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    status = read_heartbeat(heartbeat)
    assert status["stopped"] is True and status["exit_code"] == 2 and status["starts"] == 1
    assert "exited with code 2 before it played, a configuration error: cannot open a window" in status["error"]
    text = (logs / "watchdog.log").read_text()
    assert "restart 1" not in text and "watchdog stopped: child" in text
    assert done.stderr.count("started child") == 1
