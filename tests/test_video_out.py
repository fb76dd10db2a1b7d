"""Video out: the rendered frame read back through pixel buffer objects and sent off the
render thread; NDI end to end inside a private network namespace.

The NDI test runs sender and receiver in `unshare -rn` (a network namespace with only a
loopback device) so that NDI's discovery traffic cannot leave it; the receiver connects by
URL address, since discovery needs more than loopback. It skips only when such a namespace
cannot be made here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from immersions.errors import ImmersionsError
from immersions.visual.video_out import (FrameMailbox, PixelReader, Sender, VideoOut, VideoTarget,
                                         bottom_up_to_top_down, open_sender, parse_video_out)

APP = str(Path(__file__).resolve().parents[1] / "app")


@pytest.fixture(scope="module")
def ctx():
    moderngl = pytest.importorskip("moderngl")
    try:
        context = moderngl.create_standalone_context(backend="egl", require=330)
    except Exception as err:  # no libEGL / no driver: nothing to draw with here
        pytest.skip(f"no EGL OpenGL 3.3 context on this machine: {err}")
    yield context
    context.release()


def test_targets_parse_and_bad_ones_are_one_line():
    assert parse_video_out("ndi") == VideoTarget("ndi", "Immersions")
    assert parse_video_out("ndi:Stage left") == VideoTarget("ndi", "Stage left")
    assert parse_video_out("v4l2") == VideoTarget("v4l2", "/dev/video0")
    assert parse_video_out("V4L2:/dev/video7") == VideoTarget("v4l2", "/dev/video7")
    for bad in ("hdmi", "v4l2:video7", ""):
        with pytest.raises(ImmersionsError) as err:
            parse_video_out(bad)
        assert "\n" not in str(err.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the refusals checked are Linux's")
def test_other_platforms_backends_and_a_missing_loopback_are_refused_in_one_line():
    for target, words in ((VideoTarget("syphon", "x"), "macOS"), (VideoTarget("spout", "x"), "Windows"),
                          (VideoTarget("v4l2", "/dev/video63"), "modprobe v4l2loopback")):
        if target.kind == "v4l2" and os.path.exists(target.name):
            continue
        with pytest.raises(ImmersionsError) as err:
            open_sender(target)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_mailbox_keeps_the_newest_frame_and_counts_the_dropped():
    box = FrameMailbox()
    assert box.put("a") is None
    assert box.put("b") == "a"  # the sender was slow: "a" is dropped, not queued
    assert box.take(0.01) == "b"
    assert box.take(0.01) is None
    assert box.dropped == 1
    got = []
    taker = threading.Thread(target=lambda: got.append(box.take(2.0)))
    taker.start()
    box.put("c")
    taker.join(2.0)
    assert got == ["c"]


def _draw_pattern(ctx, size, seed):
    """A framebuffer with a picture whose every row differs (so a flip would show)."""
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    texture = ctx.texture(size, 4, picture.tobytes())  # rows bottom first, as OpenGL stores them
    return ctx.framebuffer(color_attachments=[texture]), picture


def test_pixel_reader_returns_the_previous_frame_exactly(ctx):
    size = (64, 48)
    reader = PixelReader(ctx, depth=2)
    out = np.zeros((size[1], size[0], 4), np.uint8)
    first, first_pixels = _draw_pattern(ctx, size, 1)
    second, _ = _draw_pattern(ctx, size, 2)
    assert not reader.read(first, size, out)  # nothing is in flight yet
    assert reader.read(second, size, out)  # the first frame comes out while the second is read
    np.testing.assert_array_equal(out, first_pixels)
    top_down = bottom_up_to_top_down(out)
    np.testing.assert_array_equal(top_down[0], first_pixels[-1])
    assert not reader.read(first, (32, 24), out[:24, :32])  # a new size starts the ring again
    reader.release()
    first.release()
    second.release()


class SlowSender(Sender):
    """Takes 50 ms a frame, like a sender on a congested link."""

    description = "slow test sender"

    def __init__(self):
        self.frames: list[np.ndarray] = []

    def send(self, frame, fps):
        time.sleep(0.05)
        self.frames.append(frame.copy())


def test_a_slow_sender_loses_frames_and_never_holds_up_the_render_loop(ctx):
    size = (32, 16)
    sender = SlowSender()
    out = VideoOut(ctx, sender, fps=30)
    fbos = [_draw_pattern(ctx, size, seed) for seed in range(5)]
    began = time.perf_counter()
    for i in range(40):
        out.capture(fbos[i % 5][0], size)
    capture_seconds = time.perf_counter() - began
    assert out.wait_sent(1, 2.0)
    out.close()
    assert out.stats.captured == 39  # one frame behind
    assert out.stats.dropped > 0
    assert out.stats.sent + out.stats.dropped <= out.stats.captured
    # 40 frames to a 50 ms sender would take 2 s if they queued
    assert capture_seconds < 40 * 0.05
    # what arrives is a whole frame, top row first
    assert any(np.array_equal(frame, fbo_pixels[::-1]) for frame in sender.frames for _, fbo_pixels in fbos)
    for fbo, _ in fbos:
        fbo.release()


def test_disabled_video_out_reads_nothing(ctx):
    size = (16, 16)
    out = VideoOut(ctx, SlowSender(), fps=30)
    out.enabled = False
    fbo, _ = _draw_pattern(ctx, size, 0)
    for _ in range(3):
        out.capture(fbo, size)
    out.close()
    assert out.stats.captured == 0 and out.stats.sent == 0
    fbo.release()


def test_cli_rejects_a_missing_loopback_camera_in_one_line(tmp_path):
    if os.path.exists("/dev/video63"):
        pytest.skip("this machine has /dev/video63")
    code = subprocess.run([sys.executable, "-m", "immersions", "render", "--frames", "1", "--size", "64x36",
                           "--out", str(tmp_path), "--video-out", "v4l2:/dev/video63"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": APP}, timeout=120)
    assert code.returncode == 2
    lines = [line for line in code.stderr.splitlines() if line.startswith("immersions: error")]
    assert len(lines) == 1 and "v4l2loopback" in lines[0]
    code = subprocess.run([sys.executable, "-m", "immersions", "perform", "--headless", "--seconds", "1",
                           "--video-out", "spout"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": APP}, timeout=120)
    assert code.returncode == 2 and "Spout exists only on Windows" in code.stderr


def test_install_passes_video_out_to_its_window_child_and_refuses_it_headless():
    import argparse

    from immersions.cli.install import add_install_parser, child_command, options_from_args

    parser = argparse.ArgumentParser()
    add_install_parser(parser.add_subparsers())
    args = parser.parse_args(["install", "--video-out", "ndi:Foyer", "--video-out-overlay"])
    command = child_command(args)
    assert command[command.index("--video-out") + 1] == "ndi:Foyer" and "--video-out-overlay" in command
    options = options_from_args(args)
    assert options.video_out == "ndi:Foyer" and options.video_out_overlay
    for argv, words in ((["install", "--headless", "--video-out", "ndi"], "drop --headless"),
                        (["install", "--video-out", "hdmi"], "choose ndi")):
        with pytest.raises(ImmersionsError) as err:
            options_from_args(parser.parse_args(argv))
        assert words in str(err.value) and "\n" not in str(err.value)


# -- NDI, for real, in a private network namespace ------------------------------------------

NDI_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import moderngl
    import NDIlib as ndi
    from immersions.registry import REGISTRY
    from immersions.visual.renderer import Renderer
    from immersions.visual.scene import Scene, synthetic_activations
    from immersions.visual.video_out import VideoOut

    size = (320, 180)
    ctx = moderngl.create_standalone_context(backend="egl", require=330)
    scene = Scene.synthetic(nodes=2000, edges=8000, taps=4, seed=5)
    renderer = Renderer(ctx, scene, size)
    renderer.set_clip(synthetic_activations(scene, seed=5, active_fraction=0.3))
    target = ctx.simple_framebuffer(size, components=4)
    params = REGISTRY.defaults().replace(camera_follow=False, brightness=3.0)
    renderer.render(0.25, 1 / 30, params, target)
    ctx.finish()
    expected = renderer.read_image()

    out = VideoOut.open(ctx, "ndi:immersions-test", fps=30)
    receiver = ndi.recv_create_v3(ndi.RecvCreateV3(color_format=ndi.RECV_COLOR_FORMAT_RGBX_RGBA))
    ndi.recv_connect(receiver, ndi.Source(p_url_address="127.0.0.1:5961"))
    got, began = None, time.time()
    while got is None and time.time() - began < 20:
        out.capture(target, size)  # the same picture each frame, as a still map would be
        kind, video, _, _ = ndi.recv_capture_v2(receiver, 50)
        if kind == ndi.FRAME_TYPE_VIDEO:
            got = np.array(video.data, copy=True)
            info = {"xres": video.xres, "yres": video.yres, "fourcc": str(video.FourCC)}
            ndi.recv_free_video_v2(receiver, video)
    ndi.recv_destroy(receiver)
    out.close()
    renderer.release()
    if got is None:
        print(json.dumps({"received": False, "sent": out.stats.sent}))
        sys.exit(0)
    diff = np.abs(got[..., :3].astype(int) - expected.astype(int))
    lit = expected.max(axis=2) > 64
    print(json.dumps({"received": True, **info, "sent": out.stats.sent, "shape": list(got.shape),
                      "mean_abs_diff": float(diff.mean()), "p99_abs_diff": float(np.percentile(diff, 99)),
                      "lit_pixels": int(lit.sum()),
                      "lit_still_lit": float((got[..., :3].max(axis=2)[lit] > 32).mean()) if lit.any() else 0.0,
                      "dark_still_dark": float((got[..., :3].max(axis=2)[~lit & (expected.max(axis=2) < 8)] < 40).mean())}))
""")


def _namespace_works() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command"
    done = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && echo ok"], capture_output=True,
                          text=True, timeout=30)
    return None if done.stdout.strip() == "ok" else f"cannot make a private network namespace: {done.stderr.strip()}"


def test_a_rendered_frame_arrives_over_ndi_with_its_pixels():
    pytest.importorskip("NDIlib")
    why = _namespace_works()
    if why:
        pytest.skip(why)
    child = [sys.executable, "-c", NDI_CHILD]
    # NDI's discovery never leaves this namespace: it has nothing but its own loopback
    done = subprocess.run(["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *child],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": APP}, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["received"], doc
    assert (doc["xres"], doc["yres"]) == (320, 180)
    assert doc["shape"] == [180, 320, 4]
    assert doc["lit_pixels"] > 200  # the map drew something worth checking
    assert doc["mean_abs_diff"] < 4.0, doc  # NDI's codec is lossy, but only just
    assert doc["lit_still_lit"] > 0.95 and doc["dark_still_dark"] > 0.95, doc


WINDOW_CHILD = textwrap.dedent("""
    import json, subprocess, sys, time
    import numpy as np
    import NDIlib as ndi

    model, size = sys.argv[1], sys.argv[2]
    perform = subprocess.Popen(["xvfb-run", "-a", "-s", "-screen 0 800x600x24", sys.executable, "-m", "immersions",
                                "perform", "--model", model, "--windowed", "--size", size, "--seconds", "20",
                                "--device", "cpu", "--no-midi", "--video-out", "ndi:window"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ndi.initialize()
    receiver = ndi.recv_create_v3(ndi.RecvCreateV3(color_format=ndi.RECV_COLOR_FORMAT_RGBX_RGBA))
    ndi.recv_connect(receiver, ndi.Source(p_url_address="127.0.0.1:5961"))
    frames, sizes, brightest = 0, set(), 0
    while perform.poll() is None:
        kind, video, _, _ = ndi.recv_capture_v2(receiver, 100)
        if kind == ndi.FRAME_TYPE_VIDEO:
            frames += 1
            sizes.add(f"{video.xres}x{video.yres}")
            brightest = max(brightest, int(np.asarray(video.data)[..., :3].max()))
            ndi.recv_free_video_v2(receiver, video)
    ndi.recv_destroy(receiver)
    err = perform.stderr.read()
    print(json.dumps({"returncode": perform.returncode, "frames": frames, "sizes": sorted(sizes),
                      "brightest": brightest, "closed": "performance closed after" in err, "tail": err[-1500:]}))
""")


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (apt-get install xvfb xauth)")
def test_the_performance_window_sends_its_frames_over_ndi(micro_model_dir, tmp_path):
    pytest.importorskip("NDIlib")
    why = _namespace_works()
    if why:
        pytest.skip(why)
    model = tmp_path / "micro"
    shutil.copytree(micro_model_dir, model)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run(["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, "-c",
                           WINDOW_CHILD, str(model), "320x180"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": APP}, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["returncode"] == 0 and doc["closed"], doc["tail"]
    assert doc["frames"] >= 3, doc
    assert doc["sizes"] == ["320x180"]  # the window's own size
    assert doc["brightest"] > 32  # the map, not a black frame
