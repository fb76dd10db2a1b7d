"""`immersions bench video` and `immersions bench cap`: what sending the picture costs the
render loop, and what the frame-rate cap gives back to dreaming.

bench video: the default model's map drawn offscreen (EGL) at 1280x720 and 1920x1080, in
three ways side by side, in alternating blocks so that a change in the machine's load
falls on all of them alike: drawing only; drawing and reading back through the PBOs (the
pixels thrown away); drawing and sending over NDI to a receiver in another process (a
mixer, on the same cores here). The whole run happens inside a private network namespace
(`unshare -rn`) so that NDI's discovery traffic stays in it; the receiver connects by URL.

bench cap: the performance (model, dream engine, map) on the offline clock, in phases:
dreaming alone, dreaming while the loop draws as fast as it can, and while it draws at
the cap (`max_fps`, default 8 on llvmpipe). Dream steps/s and frames/s of each phase.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

NDI_PORT = 5961  # the first NDI sender on a machine listens here
SIZES = ((1280, 720), (1920, 1080))
BLOCK = 10  # frames per block; the modes take turns block by block

RECEIVER = """
import sys, threading, json, NDIlib as ndi
ndi.initialize()
recv = ndi.recv_create_v3(ndi.RecvCreateV3(color_format=ndi.RECV_COLOR_FORMAT_RGBX_RGBA))
ndi.recv_connect(recv, ndi.Source(p_url_address=sys.argv[1]))
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
got = {}
while not stop.is_set():
    kind, video, _, _ = ndi.recv_capture_v2(recv, 100)
    if kind == ndi.FRAME_TYPE_VIDEO:
        key = f"{video.xres}x{video.yres}"
        got[key] = got.get(key, 0) + 1
        ndi.recv_free_video_v2(recv, video)
ndi.recv_destroy(recv)
print(json.dumps(got))
"""


class DiscardSender:
    """Takes the read-back pixels and does nothing: the read-back's own cost, for comparison."""

    on_render_thread = False
    description = "read-back only (pixels discarded)"

    def send(self, frame, fps):
        pass

    def close(self):
        pass


def _default_scene():
    from immersions.layout.cache import model_layout
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats
    from immersions.performance.performance import scene_from_layout

    model = load_model(None)
    return scene_from_layout(model_layout(model, load_stats(model)))


def measure_video_out(frames: int = 60, sizes=SIZES, warmup: int = 5) -> dict:
    """(inside a private network namespace) fps of drawing, drawing + read-back, drawing + NDI."""
    import moderngl  # noqa: F401

    from immersions.registry import REGISTRY
    from immersions.visual.gl import finish, offscreen_context
    from immersions.visual.renderer import Renderer
    from immersions.visual.scene import synthetic_activations
    from immersions.visual.video_out import NdiSender, VideoOut

    ctx = offscreen_context()
    scene = _default_scene()
    renderer = Renderer(ctx, scene, sizes[0])
    renderer.set_clip(synthetic_activations(scene, seed=0))
    params = REGISTRY.defaults().replace(camera_follow=False)
    ndi_out = VideoOut(ctx, NdiSender("immersions-bench"), fps=30)
    readback = VideoOut(ctx, DiscardSender(), fps=30)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, f"127.0.0.1:{NDI_PORT}"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the receiver connects before the clock starts
    results = []
    try:
        for size in sizes:
            renderer.resize(*size)
            target = ctx.simple_framebuffer(size, components=4)
            modes = {"render": None, "render_readback": readback, "render_ndi": ndi_out}
            times = {m: [] for m in modes}
            sent_before, dropped_before = ndi_out.stats.sent, ndi_out.stats.dropped
            cpu = {m: 0.0 for m in modes}
            i = 0
            for block in range(-1, frames // BLOCK):
                for mode, out in modes.items():
                    count = warmup if block < 0 else BLOCK
                    cpu_start = time.process_time()
                    for _ in range(count):
                        began = time.perf_counter()
                        renderer.render((i % 240) / 240.0, 1 / 30, params, target)
                        if out is not None:
                            out.capture(target, size)
                        finish(ctx)
                        if block >= 0:
                            times[mode].append(time.perf_counter() - began)
                        i += 1
                    if block >= 0:
                        cpu[mode] += time.process_time() - cpu_start
            row = {"width": size[0], "height": size[1], "frames_per_mode": len(times["render"])}
            for mode, t in times.items():
                median = statistics.median(t)
                row[mode] = {"fps": 1.0 / median, "ms_per_frame": {"median": 1e3 * median, "min": 1e3 * min(t),
                                                                    "max": 1e3 * max(t)},
                             # CPU of every thread of this process (llvmpipe, the NDI encoder) per frame
                             "cpu_ms_per_frame": 1e3 * cpu[mode] / len(t)}
            base = row["render"]["fps"]
            row["readback_cost_percent"] = 100.0 * (1 - row["render_readback"]["fps"] / base)
            row["ndi_cost_percent"] = 100.0 * (1 - row["render_ndi"]["fps"] / base)
            ndi_out.wait_sent(ndi_out.stats.captured, 2.0)
            row["ndi_frames_sent"] = ndi_out.stats.sent - sent_before
            row["ndi_frames_dropped"] = ndi_out.stats.dropped - dropped_before
            results.append(row)
            target.release()
            log.info("video out %dx%d: %.1f fps drawing, %.1f with read-back, %.1f with NDI", *size, base,
                     row["render_readback"]["fps"], row["render_ndi"]["fps"])
    finally:
        ndi_out.close()
        readback.close()
        renderer.release()
        out_text, _ = receiver.communicate("", timeout=30)
    received = json.loads(out_text.strip().splitlines()[-1]) if out_text.strip() else {}
    for row in results:
        row["ndi_frames_received"] = received.get(f"{row['width']}x{row['height']}", 0)
    return {"gl_renderer": ctx.info["GL_RENDERER"], "scene": {"nodes": scene.nodes, "edges": scene.edges},
            "load_average": list(os.getloadavg()), "receiver": "ndi-python in another process, same machine",
            "results": results}


def bench_video(args) -> dict:
    """`immersions bench video`: measure_video_out in a private network namespace."""
    from immersions.bench.kit import environment
    import torch

    if shutil.which("unshare") is None:
        raise ImmersionsError("bench video needs `unshare` (util-linux) for a private network namespace, "
                              "so that NDI's discovery stays on this machine")
    frames = max(BLOCK, int(getattr(args, "frames", 60) or 60))
    cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "immersions.bench.video", "--frames", str(frames)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ImmersionsError(f"bench video failed in its network namespace: {last}")
    doc = json.loads(done.stdout)
    return {"benchmark": "video", **environment(torch.device("cpu")),
            "namespace": "unshare -rn (loopback only)", **doc}


# -- the frame-rate cap ----------------------------------------------------------------------

class StepTimes:
    """When each dream step was taken (polled every 5 ms from its own thread: the dreamer's
    count for a local engine, else the published frames'), so that a phase's rate counts
    whole steps between their real times, not steps per phase length."""

    def __init__(self, engine):
        import threading

        self.engine = engine
        self.times: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="step-times", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = None
        dreamer = getattr(self.engine, "dreamer", None)  # a local engine: its own count, every step
        while not self._stop.wait(0.005):
            frame = self.engine.latest()
            if frame is None:
                continue
            step = dreamer.steps if dreamer is not None else frame.step
            if step != last:
                last = step
                self.times.append((time.perf_counter(), step))

    def rate(self, began: float, ended: float) -> tuple[float, int]:
        """Steps per second between `began` and `ended`, and the steps counted."""
        inside = [(t, n) for t, n in self.times if began <= t <= ended]
        if len(inside) < 2:
            return len(inside) / max(ended - began, 1e-9), len(inside)
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0), n1 - n0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


def thread_cpu() -> tuple[float, float]:
    """CPU seconds so far of this process's drawing (the main thread and Mesa's llvmpipe
    threads) and of everything else (the dream thread and torch's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    drawing = other = 0.0
    main = os.getpid()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if int(tid) == main or name.startswith("llvmpipe"):
            drawing += seconds
        else:
            other += seconds
    return drawing, other


def _phase(perf, clock, target, steps: StepTimes, seconds: float, draw: bool, cap: float | None) -> dict:
    from immersions.visual.gl import finish
    from immersions.visual.pacing import FramePacer

    pacer = FramePacer(cap)
    cpu_began = thread_cpu()
    began = last = time.perf_counter()
    frames = 0
    while time.perf_counter() - began < seconds:
        if draw:
            now = time.perf_counter()
            dt, last = now - last, now
            clock.advance(dt)
            target.use()
            perf.frame(dt, target=target)
            finish(perf.ctx)  # a window's buffer swap waits for the frame too
            frames += 1
            pacer.wait()
        else:
            time.sleep(0.05)
    ended = time.perf_counter()
    cpu_ended = thread_cpu()
    rate, counted = steps.rate(began, ended)
    return {"seconds": ended - began, "dream_steps": counted, "dream_steps_per_s": rate,
            "frames": frames, "fps": frames / (ended - began),
            "drawing_cpu_s": cpu_ended[0] - cpu_began[0], "dreaming_cpu_s": cpu_ended[1] - cpu_began[1]}


def _estimate(runs: dict, cap: float, cores: int) -> dict:
    """What this machine would give with nobody else on it, from CPU seconds (which a busy
    machine does not inflate the way it inflates wall time): dreaming's CPU per step alone,
    drawing's CPU per frame, and the cores left to dreaming while drawing at `cap` fps.
    A model, not a measurement: it assumes dreaming scales to every core it is left."""
    idle = runs["idle"]
    steps = sum(r["dream_steps"] for r in idle)
    dream_cpu_per_step = sum(r["dreaming_cpu_s"] for r in idle) / steps if steps else None
    drawn = [r for k in ("drawing_uncapped", "drawing_at_24fps", "drawing_at_cap") for r in runs[k]]
    frames = sum(r["frames"] for r in drawn)
    draw_cpu_per_frame = sum(r["drawing_cpu_s"] for r in drawn) / frames if frames else None
    if not dream_cpu_per_step or draw_cpu_per_frame is None:
        return {"note": "too few steps or frames to estimate"}
    threads = min(cores, torch_threads())

    def rate(fps: float) -> float:
        return max(0.0, min(threads, cores - fps * draw_cpu_per_frame)) / dream_cpu_per_step

    return {"cores": cores, "dream_cpu_s_per_step": dream_cpu_per_step,
            "drawing_cpu_ms_per_frame": 1e3 * draw_cpu_per_frame,
            "dream_steps_per_s_idle": rate(0.0), "dream_steps_per_s_at_24fps": rate(24.0),
            f"dream_steps_per_s_at_cap_{cap:g}fps": rate(cap), "share_of_idle_at_cap": rate(cap) / rate(0.0)}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_cap(args) -> dict:
    """`immersions bench cap`: dream steps/s alone, while drawing flat out, while drawing at the cap.

    The phases take turns (idle, flat out, 24 fps, the cap; twice) so that a change in the
    machine's load falls on all of them; each kind reports the mean of its rounds."""
    import torch

    from immersions.bench.kit import environment
    from immersions.visual.pacing import frame_cap
    from immersions.performance.performance import OfflineClock, Performance
    from immersions.visual.gl import offscreen_context

    seconds = float(args.seconds) if getattr(args, "seconds", None) else 10.0
    rounds = 2
    size = (1280, 720)
    ctx = offscreen_context()
    gl_renderer = ctx.info["GL_RENDERER"]
    cap = frame_cap(0, gl_renderer)
    kinds = {"idle": (False, None), "drawing_uncapped": (True, None), "drawing_at_24fps": (True, 24.0),
             "drawing_at_cap": (True, cap or 60.0)}
    clock = OfflineClock()
    perf = Performance(ctx, size, clock, model=getattr(args, "model", None), device="cpu")
    target = ctx.simple_framebuffer(size, components=4)
    load_before = list(os.getloadavg())
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    steps = None
    try:
        perf.start()
        waited = time.perf_counter()
        while perf.engine.latest() is None:
            if perf.engine.error or time.perf_counter() - waited > 120:
                raise ImmersionsError(f"no dreamed clip ({perf.engine.error or 'too slow'})")
            time.sleep(0.05)
        steps = StepTimes(perf.engine)
        for _ in range(rounds):
            for kind, (draw, kind_cap) in kinds.items():
                runs[kind].append(_phase(perf, clock, target, steps, seconds, draw, kind_cap))
    finally:
        if steps is not None:
            steps.close()
        perf.close()
        target.release()
    phases = {kind: {"dream_steps_per_s": statistics.mean(r["dream_steps_per_s"] for r in rs),
                     "fps": statistics.mean(r["fps"] for r in rs), "cap": kinds[kind][1], "rounds": rs}
              for kind, rs in runs.items()}
    idle = phases["idle"]["dream_steps_per_s"]
    return {"estimate_for_an_idle_machine": _estimate(runs, cap or 60.0, os.cpu_count() or 1), "benchmark": "cap", **environment(torch.device("cpu")), "gl_renderer": gl_renderer,
            "size": list(size), "default_cap_fps": cap, "seconds_per_phase": seconds, "rounds": rounds,
            "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "phases": phases, "idle_dream_steps_per_s": idle,
            "capped_share_of_idle": phases["drawing_at_cap"]["dream_steps_per_s"] / idle if idle else None,
            "uncapped_share_of_idle": phases["drawing_uncapped"]["dream_steps_per_s"] / idle if idle else None}


def alone_on_loopback() -> bool:
    """True inside a network namespace that has nothing but its loopback device."""
    import socket

    try:  # asks the kernel about this process's namespace (/sys/class/net may show the host's)
        return {name for _, name in socket.if_nameindex()} == {"lo"}
    except OSError:
        return False


def main(argv=None) -> int:
    """The part of `bench video` that runs inside the namespace; prints one JSON object."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not alone_on_loopback():
        print("immersions: error: run this through `immersions bench video` (it starts NDI only in a private "
              "network namespace)", file=sys.stderr)
        return 2
    print(json.dumps(measure_video_out(args.frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
