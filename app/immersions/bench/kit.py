"""The benchmarks' kit: the machine a figure was measured on, honest timing, and the
small argument checks every benchmark shares.

Every figure is a median over repetitions after a warm-up, with min and max; speed
claims are ratios against a baseline measured side by side in the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

from immersions.errors import ImmersionsError


def environment(device: torch.device | None = None, gl=None) -> dict:
    """The one environment block: machine, cores, load, torch and its device, and the OpenGL
    renderer when a context `gl` is given (a figure means little without the load beside it).
    Every benchmark spreads it at the top of its JSON: `{"benchmark": NAME, **environment(...), ...}`."""
    device = device if device is not None else torch.device("cpu")
    doc = {
        "machine": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        doc["device_name"] = torch.cuda.get_device_name(device)
    if gl is not None:
        doc["gl_renderer"] = gl.info.get("GL_RENDERER")
        doc["gl_version"] = gl.info.get("GL_VERSION")
    return doc


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2, device: torch.device | None = None) -> dict:
    """Median, min and max seconds of `fn` over `repeats` runs after `warmup` runs."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def torch_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one; a named device that is not there is an error, so that
    a GPU figure is never quietly measured on the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ImmersionsError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImmersionsError(f"device '{name}' asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                              "use --device cpu or install a CUDA build of torch")
    return device


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'1280x720,1920x1080' -> [(1280, 720), (1920, 1080)]."""
    sizes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ImmersionsError(f"size '{item}' is not WIDTHxHEIGHT, e.g. 1920x1080") from None
        if w <= 0 or h <= 0:
            raise ImmersionsError(f"size '{item}' must be positive, e.g. 1920x1080")
        sizes.append((w, h))
    if not sizes:
        raise ImmersionsError("--sizes is empty: give WIDTHxHEIGHT, e.g. 1920x1080")
    return sizes
