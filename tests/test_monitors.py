"""The right monitor: `--monitor N` fills monitor N, the cursor is hidden in full screen,
`immersions monitors` lists them. Run under Xvfb with two screens joined by Xinerama (Xvfb
puts both heads at 0,0, so the monitors are told apart by their sizes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from immersions.visual.pacing import FramePacer, FrameRate, frame_cap, frame_delay, is_software_renderer

APP = str(Path(__file__).resolve().parents[1] / "app")
TWO_SCREENS = "-screen 0 1280x720x24 -screen 1 1024x768x24 +xinerama"
needs_xvfb = pytest.mark.skipif(shutil.which("xvfb-run") is None,
                                reason="xvfb-run not installed (apt-get install xvfb xauth)")


def _under_xvfb(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = APP
    return subprocess.run(["xvfb-run", "-a", "-s", TWO_SCREENS, sys.executable, *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@needs_xvfb
def test_monitors_lists_both_screens_one_line_each_and_as_json():
    done = _under_xvfb(["-m", "immersions", "monitors"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["0: monitor 0  1280x720 at 0,0", "1: monitor 1  1024x768 at 0,0"]
    done = _under_xvfb(["-m", "immersions", "monitors", "--json"])
    doc = json.loads(done.stdout)
    assert [(m["index"], m["width"], m["height"], m["x"], m["y"]) for m in doc["monitors"]] == [
        (0, 1280, 720, 0, 0), (1, 1024, 768, 0, 0)]


def test_monitors_without_a_display_is_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-m", "immersions", "monitors"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": APP}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "display" in done.stderr


WINDOW_CHILD = textwrap.dedent("""
    import json, sys, time
    from immersions.errors import ImmersionsError
    from immersions.performance import window as w

    monitor = int(sys.argv[1])
    try:
        win = w.open_window((640, 360), windowed=False, monitor=monitor)
    except ImmersionsError as err:
        print(json.dumps({"error": str(err)}))
        sys.exit(0)
    pw = win._window
    for _ in range(10):
        pw.dispatch_events()
        win.swap_buffers()
        time.sleep(0.02)
    screens = w._screens()
    doc = {"size": list(pw.get_size()), "location": list(pw.get_location()), "fullscreen": pw.fullscreen,
           "screen": screens.index(pw.screen), "cursor_visible": pw._mouse_visible,
           "framebuffer": list(win.buffer_size)}
    w._leave_fullscreen(win)
    doc["cursor_visible_windowed"] = pw._mouse_visible
    print(json.dumps(doc))
    win.close()
""")


@needs_xvfb
@pytest.mark.parametrize("monitor, size", [(1, [1024, 768]), (0, [1280, 720])])
def test_fullscreen_lands_on_the_asked_monitor_with_the_cursor_hidden(monitor, size):
    done = _under_xvfb(["-c", WINDOW_CHILD, str(monitor)])
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["fullscreen"] and doc["screen"] == monitor
    assert doc["size"] == size and doc["framebuffer"] == size  # that monitor's size, not the first one's
    assert doc["location"] == [0, 0]  # the monitor's origin (Xvfb's heads both start at 0,0)
    assert doc["cursor_visible"] is False and doc["cursor_visible_windowed"] is True


@needs_xvfb
def test_a_monitor_that_is_not_there_is_one_line_naming_the_choices():
    done = _under_xvfb(["-c", WINDOW_CHILD, "5"])
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["error"].startswith("no monitor 5: this display has 2 (0 .. 1)") and "\n" not in doc["error"]


# -- the frame-rate cap ------------------------------------------------------------------------

def test_software_renderers_are_capped_by_default_and_max_fps_wins():
    assert is_software_renderer("llvmpipe (LLVM 15.0.6, 256 bits)")
    assert is_software_renderer("softpipe")
    assert not is_software_renderer("NVIDIA H200/PCIe/SSE2")
    assert frame_cap(0, "llvmpipe (LLVM 15.0.6, 256 bits)") == 8.0
    assert frame_cap(0, "NVIDIA H200/PCIe/SSE2") is None
    assert frame_cap(30, "llvmpipe") == 30.0 and frame_cap(90, "NVIDIA") == 90.0


def test_the_pacer_sleeps_to_the_cap_and_does_not_burst_after_a_late_frame():
    assert frame_delay(None, 5.0, 10.0) == 0.0
    assert frame_delay(5.0, 5.02, 10.0) == pytest.approx(0.08)
    assert frame_delay(5.0, 5.02, None) == 0.0
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    pacer = FramePacer(10.0, clock=lambda: now[0], sleep=sleep)
    starts = []
    for work in (0.01, 0.01, 0.35, 0.01, 0.01):  # one frame takes 350 ms
        pacer.wait()
        starts.append(now[0])
        now[0] += work
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == pytest.approx([0.1, 0.1, 0.35, 0.1])  # after the late frame, no catching up


def test_the_frame_rate_counts_frames_drawn_a_second_of_wall_time():
    now = [100.0]
    rate = FrameRate(clock=lambda: now[0])
    assert rate.fps == 0.0
    rate.tick()
    now[0] += 1e-5  # the window's first frametime is near zero: 1/frametime read 100 000 fps
    rate.tick()
    for _ in range(40):  # then 8 frames a second
        now[0] += 0.125
        rate.tick()
    assert rate.fps == pytest.approx(8.0)
    for _ in range(3):  # a slow stretch: 2 frames a second reads 2, not an average with the past
        now[0] += 0.5
        rate.tick()
    assert rate.fps == pytest.approx(2.0)
    now[0] += 5.0  # one frame after a long stall: the rate between the last two
    rate.tick()
    assert rate.fps == pytest.approx(0.2)


def test_frames_stamped_when_the_pacer_lets_them_start_never_read_above_the_cap():
    """A slow first frame (its shaders built) then a quick one: stamped after the work they
    landed 40 ms apart and read 25 fps at a cap of 8; stamped at the pacer's release they do not."""
    now = [0.0]

    def sleep(s):
        now[0] += s

    pacer = FramePacer(8.0, clock=lambda: now[0], sleep=sleep)
    by_release, after_work = FrameRate(clock=lambda: now[0]), FrameRate(clock=lambda: now[0])
    read_release, read_after = [], []
    for work in (0.3, 0.01, 0.2, 0.01, 0.05, 0.01, 0.4, 0.01, 0.01, 0.01):
        pacer.wait()
        by_release.tick(pacer.released)
        now[0] += work
        after_work.tick()
        read_release.append(by_release.fps)
        read_after.append(after_work.fps)
    assert max(read_release) <= 8.0 + 1e-9
    assert max(read_after) > 8.0 * 1.5  # the stamping this replaces: the test can tell them apart


def test_max_fps_is_a_registry_parameter_the_overlay_and_controllers_reach():
    from immersions.registry import REGISTRY, VISUALS

    p = REGISTRY["max_fps"]
    assert p.group == VISUALS and p.default == 0 and p.unit == "fps"
    assert REGISTRY.defaults().replace(max_fps=24)["max_fps"] == 24
