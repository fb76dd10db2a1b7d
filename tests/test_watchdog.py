"""The watchdog with real processes: a small child script that writes real heartbeats (and,
on command, freezes its picture, goes black, crashes at once, dies of a signal or exits with
a configuration error) is killed, stopped, frozen and crash-looped; the supervisor must
bring a new one back within 5 s, back off, and log, and stop (exit status 2, the reason in
the heartbeat file) for a configuration error instead of restarting it for ever."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from immersions.errors import ImmersionsError
from immersions.install.watchdog import Heartbeat, Watchdog, picture_summary, read_heartbeat

CHILD = """
import os, sys, time
from pathlib import Path
from immersions.install.watchdog import HEARTBEAT_ENV, Heartbeat

orders = Path(sys.argv[1])
beat = Heartbeat(os.environ[HEARTBEAT_ENV], interval=0.1)
frame = 0
while True:
    order = orders.read_text().strip() if orders.exists() else ""
    if order == "crash":
        sys.exit(3)
    if order == "config":  # as `immersions install --child` does with a bad setting
        beat.beat(error="no monitor 9: this display has 1 (0 .. 0); see `immersions monitors`")
        sys.exit(2)
    if order == "exit2":
        sys.exit(2)
    if order == "die":
        os.kill(os.getpid(), 9)
    frame += 1
    beat.beat(frames=frame, picture="same" if order in ("freeze", "still") else f"{frame:016x}",
              peak=0 if order == "black" else 200, should_play=True, audio_callbacks=frame,
              audio_serial=7 if order == "still" else frame // 5)
    time.sleep(0.1)
"""


@pytest.fixture
def child(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    orders = tmp_path / "orders"
    return [sys.executable, str(script), str(orders)], orders


class Running:
    """A Watchdog running on a thread for one test; stopped (and its child gone) at the end."""

    def __init__(self, watchdog: Watchdog):
        self.watchdog = watchdog
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.code = self.watchdog.run()

    def stop(self):
        self.watchdog.stop()
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def supervise(tmp_path):
    running = []

    def start(command, **settings) -> Watchdog:
        settings.setdefault("log_dir", tmp_path / "logs")
        wd = Watchdog(command, tmp_path / "state" / "heartbeat.json", **settings)
        running.append(Running(wd))
        return wd

    yield start
    for r in running:
        r.stop()
        child = r.watchdog.child
        assert child is None or child.poll() is not None, "the child is gone after the watchdog stops"


def beating(path, other_than=None, timeout=10.0) -> int:
    """The pid of a child heartbeating at `path` (not `other_than`), waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = read_heartbeat(path)
        if beat is not None and beat["pid"] != other_than and time.time() - beat["time"] < 0.5:
            return beat["pid"]
        time.sleep(0.02)
    raise AssertionError(f"no new heartbeat within {timeout} s")


def restarted(wd, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(wd.restarts) < count:
        assert time.monotonic() < deadline, f"only {len(wd.restarts)} restarts"
        time.sleep(0.02)
    return wd.restarts


def test_a_killed_child_plays_again_within_5_seconds(child, supervise, tmp_path):
    command, _ = child
    wd = supervise(command)
    first = beating(wd.heartbeat_path)
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    second = beating(wd.heartbeat_path, other_than=first)
    assert time.monotonic() - killed < 5.0
    assert wd.restarts[0].reason == "killed by SIGKILL" and wd.restarts[0].delay == 0.0
    assert not psutil.pid_exists(first) and psutil.Process(second).is_running()
    text = (tmp_path / "logs" / "watchdog.log").read_text()
    assert f"child {first} killed by SIGKILL" in text


def test_a_stopped_child_is_hung_killed_and_replaced_within_5_seconds(child, supervise):
    command, _ = child
    wd = supervise(command, hang_after=2.5)
    first = beating(wd.heartbeat_path)
    os.kill(first, signal.SIGSTOP)
    stopped = time.monotonic()
    beating(wd.heartbeat_path, other_than=first)
    assert 2.5 <= time.monotonic() - stopped < 5.0
    assert wd.restarts[0].reason.startswith("hung (no heartbeat for")
    assert not psutil.pid_exists(first)  # killed (SIGKILL reaches a stopped process) and reaped


def test_a_still_picture_over_a_still_sound_is_left_alone(child, supervise):
    command, orders = child
    orders.write_text("still")
    wd = supervise(command, frozen_after=1.0)
    beating(wd.heartbeat_path)
    time.sleep(2.5)
    assert wd.restarts == []


@pytest.mark.parametrize("order, reason", [("freeze", "frozen picture"), ("black", "black picture")])
def test_a_frozen_or_black_picture_is_restarted(child, supervise, order, reason):
    command, orders = child
    wd = supervise(command, frozen_after=1.0, black_after=1.0)
    first = beating(wd.heartbeat_path)
    time.sleep(1.5)
    assert wd.restarts == []  # a picture that changes and glows is left alone
    orders.write_text(order)
    restarted(wd, timeout=5.0)
    orders.write_text("")
    assert wd.restarts[0].reason.startswith(reason) and wd.restarts[0].pid == first
    beating(wd.heartbeat_path, other_than=first, timeout=5.0)


def test_a_crash_loop_backs_off_and_keeps_trying(child, supervise, tmp_path):
    command, orders = child
    wd = supervise(command, stable_after=30.0, backoff_start=0.2, max_backoff=0.8)
    beating(wd.heartbeat_path)  # it has played: from now on every failure is a crash, however it looks
    orders.write_text("crash")
    restarts = restarted(wd, count=5, timeout=15.0)
    assert [r.delay for r in restarts[:5]] == [0.0, 0.2, 0.4, 0.8, 0.8]
    assert all(r.reason == "exited with code 3" for r in restarts)
    orders.write_text("")  # the fault goes away: it plays again
    beating(wd.heartbeat_path, timeout=5.0)
    lines = [line for line in (tmp_path / "logs" / "watchdog.log").read_text().splitlines() if "restart" in line]
    assert len(lines) >= 5 and "exited with code 3" in lines[0]
    assert "starting again in 0.0 s" in lines[0] and "starting again in 0.4 s" in lines[2]


def test_sigterm_stops_the_watchdog_and_its_child(child, tmp_path):
    command, _ = child
    heartbeat = tmp_path / "heartbeat.json"
    wd = subprocess.Popen([sys.executable, "-m", "immersions.install.watchdog", "--heartbeat", str(heartbeat),
                           "--log-dir", str(tmp_path / "logs"), "--", *command])
    try:
        pid = beating(heartbeat, timeout=15.0)
        wd.send_signal(signal.SIGTERM)
        assert wd.wait(15) == 0
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert "watchdog stopped after 0 restarts" in (tmp_path / "logs" / "watchdog.log").read_text()
    finally:
        if wd.poll() is None:
            wd.kill()


def test_heartbeats_are_atomic_and_pictures_summarized(tmp_path):
    beat = Heartbeat(tmp_path / "hb.json", interval=0.5)
    assert beat.due()
    beat.beat(frames=1)
    assert not beat.due() and read_heartbeat(tmp_path / "hb.json")["frames"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["hb.json"]  # no temporary file left behind
    black = np.zeros((180, 320, 3), np.uint8)
    lit = black.copy()
    lit[88:92, 158:162] = 255  # one glowing neuron sprite
    a, b = picture_summary(black), picture_summary(lit)
    assert a["peak"] == 0 and b["peak"] == 255 and a["picture"] != b["picture"]
    assert picture_summary(lit.copy())["picture"] == b["picture"]


def test_settings_that_cannot_restart_in_time_are_refused(tmp_path):
    with pytest.raises(ImmersionsError, match="hang_after 6"):
        Watchdog(["true"], tmp_path / "hb", hang_after=6.0)
    with pytest.raises(ImmersionsError, match="needs a command"):
        Watchdog([], tmp_path / "hb")


def test_a_child_exiting_2_at_start_is_not_restarted_and_the_reason_is_left_in_the_heartbeat(child, tmp_path):
    command, orders = child
    orders.write_text("config")
    heartbeat, logs = tmp_path / "state" / "heartbeat.json", tmp_path / "logs"
    wd = Watchdog(command, heartbeat, log_dir=logs)
    running = Running(wd)
    running.thread.join(15)
    assert not running.thread.is_alive() and running.code == 2
    assert wd.starts == 1 and wd.restarts == [] and not wd.played
    assert "exited with code 2 before it played, a configuration error: no monitor 9" in wd.error
    assert "\n" not in wd.error
    status = read_heartbeat(heartbeat)  # what `cat STATE/heartbeat.json` or a health check reads
    assert status["stopped"] is True and status["error"] == wd.error and status["exit_code"] == 2
    assert status["pid"] == os.getpid()  # written by the watchdog (here: this process), not the child
    text = (logs / "watchdog.log").read_text()
    assert f"watchdog stopped: {wd.error}" in text and "restart 1" not in text


def test_a_first_start_that_fails_the_same_way_twice_stops(child, tmp_path):
    command, orders = child
    orders.write_text("crash")
    wd = Watchdog(command, tmp_path / "hb.json", backoff_start=0.1)
    running = Running(wd)
    running.thread.join(15)
    assert not running.thread.is_alive() and running.code == 2
    assert wd.starts == 2 and len(wd.restarts) == 1  # tried once more, then stopped
    assert wd.error.endswith("exited with code 3 at its first two starts, before it played; not restarted: "
                             "correct the setting and start again")
    assert read_heartbeat(tmp_path / "hb.json")["error"] == wd.error


def test_a_child_killed_by_a_signal_at_start_is_restarted(child, supervise):
    command, orders = child
    orders.write_text("die")
    wd = supervise(command, stable_after=30.0, backoff_start=0.1, max_backoff=0.2)
    restarts = restarted(wd, count=3, timeout=15.0)
    assert all(r.reason == "killed by SIGKILL" for r in restarts) and wd.error is None
    orders.write_text("")
    beating(wd.heartbeat_path, timeout=5.0)  # it plays again: a crash is never given up on


def test_an_exit_2_after_it_has_played_is_a_crash_and_restarted(child, supervise):
    command, orders = child
    wd = supervise(command)
    first = beating(wd.heartbeat_path)
    orders.write_text("exit2")
    restarted(wd, timeout=5.0)
    assert wd.restarts[0].reason == "exited with code 2" and wd.error is None
    orders.write_text("")
    beating(wd.heartbeat_path, other_than=first, timeout=10.0)


def test_seconds_stops_the_watchdog_and_its_child(child, tmp_path):
    command, _ = child
    wd = Watchdog(command, tmp_path / "hb.json", seconds=1.0)
    running = Running(wd)
    beating(wd.heartbeat_path)
    running.thread.join(20)
    assert not running.thread.is_alive() and running.code == 0
    assert wd.restarts == [] and wd.child.poll() is not None
