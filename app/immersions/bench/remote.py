"""`immersions bench remote --json`: remote dreaming against local dreaming, side by side.

On this machine (127.0.0.1), with the same model, start clip, parameters and selection:
Dreaming runs on `--device` (auto: the first GPU if there is one), locally and in the server.
1. bytes per frame: the default model's frames as they arrive, and the `seed` preset's
   computed from its node count (a frame of its shape, encoded; nothing trained);
2. frames/s: a local DreamEngine, then a server in a subprocess (`python -m
   immersions serve`) and a RemoteEngine, each for `seconds` after its first
   frame; both feed a LoopPlayer on the NULL backend, as a performance would; the ratio;
3. recovery: the server is SIGKILLed mid-session, left dead for `outage` seconds, restarted;
   the time from the restarted server saying it is ready (and from its spawn) to the next
   frame; the player's underruns over the outage (the loop keeps playing: target 0), and
   whether `latest()` kept the last frame throughout.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

import immersions
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m immersions serve ...` as a child process that can be killed;
    `ready` is set when it logs that it listens."""

    def __init__(self, args: list[str]):
        from immersions.remote.server import READY

        env = dict(os.environ)
        package_root = str(Path(immersions.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "immersions", "serve", *args],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self.lines: list[str] = []

        def read():
            for line in self.process.stderr:
                self.lines.append(line.rstrip())
                if READY in line and not self.ready.is_set():
                    self.ready_at = time.perf_counter()
                    self.ready.set()

        threading.Thread(target=read, daemon=True).start()

    def wait_ready(self, timeout: float = 120.0) -> float:
        if not self.ready.wait(timeout):
            self.kill()
            tail = " | ".join(self.lines[-3:]) or "no output"
            raise ImmersionsError(f"the dream server did not start within {timeout:.0f} s ({tail})")
        return self.ready_at

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def frame_bytes_for(nodes: int, clip_samples: int) -> dict:
    """The encoded size of a frame with `nodes` neurons and a clip of `clip_samples`."""
    from immersions.frames import FRAMES_PER_LOOP, HUD_BINS, HUD_FRAMES, DreamFrame
    from immersions.remote.protocol import encode, frame_message, message_bytes

    rng = np.random.default_rng(0)
    frame = DreamFrame(1, rng.uniform(-1, 1, clip_samples).astype(np.float32), 16000,
                       rng.standard_normal((nodes, FRAMES_PER_LOOP)).astype(np.float16), rng.random(nodes) < 0.1,
                       1.0, 1, 1.0, 0, rng.integers(0, 256, (HUD_BINS, HUD_FRAMES), dtype=np.uint8), "seed")
    parts = encode(frame_message(frame))
    return {"nodes": nodes, "clip_samples": clip_samples, "bytes": message_bytes(parts),
            "parts_bytes": [int(np.asarray(p).nbytes) if not isinstance(p, bytes) else len(p) for p in parts]}


def _wait(predicate, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def bench_remote(args) -> dict:
    from immersions.devices.player import LoopPlayer
    from immersions.bench.kit import environment
    from immersions.registry import REGISTRY, loop_length
    from immersions.dream.engine import DreamEngine
    from immersions.dream.loop import start_clip
    from immersions.selection import Region
    from immersions.model.checkpoint import load_model, preset_ear
    from immersions.model.stats import load_stats
    from immersions.remote.client import RemoteEngine

    choice = getattr(args, "device", "auto") or "auto"
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    seconds = float(getattr(args, "seconds", 20.0) or 20.0)
    outage = float(getattr(args, "outage", 2.0) or 2.0)
    workers = int(getattr(args, "workers", 1) or 1)
    model_arg = getattr(args, "model", None)
    net = load_model(model_arg)
    stats = load_stats(net)
    params = REGISTRY.defaults()
    rate = net.sample_rate
    clip = start_clip("groove", loop_length(params, rate), rate)
    region = Region(len(net.taps) // 2, (0.5, 0.2))
    doc: dict = {"benchmark": "remote", **environment(device), "model": str(net.folder),
                 "graph_nodes": net.graph_nodes, "seconds_per_run": seconds, "server_workers": workers,
                 "params": "defaults", "selection": f"tap {region.tap}, channel {region.channel}"}
    seed_nodes = preset_ear("seed").graph_nodes
    doc["frame_bytes_seed_computed"] = frame_bytes_for(seed_nodes, len(clip))
    doc["frame_bytes_default_computed"] = frame_bytes_for(net.graph_nodes, len(clip))

    arrivals: list[float] = []

    with LoopPlayer(backend="null", sample_rate=48000) as player:
        def heard(frame):
            arrivals.append(time.perf_counter())
            player.offer(frame)

        # local dreaming: the baseline
        engine = DreamEngine(net, stats, clip, params, device=device, on_frame=heard)
        engine.select(region)
        engine.start()
        try:
            if not _wait(lambda: arrivals, 120):
                raise ImmersionsError(f"local dreaming made no frame in 120 s ({engine.error or 'too slow'})")
            began, count = arrivals[-1], len(arrivals)
            time.sleep(seconds)
            local_fps = (len(arrivals) - count) / (time.perf_counter() - began)
        finally:
            engine.stop()
        doc["local"] = {"frames_per_s": round(local_fps, 3)}

        # remote dreaming: a server process on 127.0.0.1
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        serve = ["--bind", address, "--insecure", "--workers", str(workers), "--model", str(net.folder),
                 "--gpus", "cpu" if device.type == "cpu" else str(device.index)]
        server = ServerProcess(serve)
        remote = None
        try:
            server.wait_ready()
            arrivals.clear()
            remote = RemoteEngine(net.cpu(), stats, clip, params, address=address, on_frame=heard)
            remote.select(region)
            started = time.perf_counter()
            remote.start()
            if not _wait(lambda: arrivals, 120):
                raise ImmersionsError(f"no remote frame in 120 s ({remote.status})")
            first = arrivals[0] - started
            began, count = arrivals[-1], len(arrivals)
            time.sleep(seconds)
            remote_fps = (len(arrivals) - count) / (time.perf_counter() - began)
            doc["remote"] = {"frames_per_s": round(remote_fps, 3), "first_frame_s": round(first, 3),
                             "frame_bytes": remote.frame_bytes, "worker_frames": dict(remote.worker_frames)}
            doc["frame_bytes_default"] = remote.frame_bytes
            doc["frames_per_s_ratio"] = round(remote_fps / local_fps, 3) if local_fps > 0 else None
            doc["ratio_target_met"] = bool(local_fps > 0 and remote_fps / local_fps >= 0.9)

            # the outage: SIGKILL, wait, restart on the same port
            underruns = player.stats().underruns
            last = remote.latest()
            killed = time.perf_counter()
            server.kill()
            detected = _wait(lambda: not remote.connected, 10)
            detect_s = time.perf_counter() - killed
            status_down = remote.status
            time.sleep(max(0.0, outage - (time.perf_counter() - killed)))
            kept = remote.latest() is last
            received = remote.frames_received
            server = ServerProcess(serve)
            ready = server.wait_ready()
            if not _wait(lambda: remote.frames_received > received, 60):
                raise ImmersionsError(f"no frame within 60 s of the restart ({remote.status})")
            back = time.perf_counter()
            doc["recovery"] = {
                "outage_s": round(ready - killed, 3),
                "detected_s": round(detect_s, 3) if detected else None,
                "status_while_down": status_down,
                "latest_kept_during_outage": kept,
                "server_start_s": round(ready - server.spawned, 3),
                "recovery_s": round(back - ready, 3),
                "recovery_from_spawn_s": round(back - server.spawned, 3),
                "target_met": back - ready < 3.0,
                "underruns_during_outage": player.stats().underruns - underruns,
                "status_after": remote.status,
            }
        finally:
            if remote is not None:
                remote.stop()
            server.terminate()
        stats_player = player.stats()
        doc["player"] = {"backend": player.backend, "underruns": stats_player.underruns,
                         "late_callbacks": stats_player.late_callbacks, "switches": stats_player.switches}
    return doc
