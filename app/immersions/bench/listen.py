"""`immersions bench listen`: listen mode's latency, sound in to glow.

The room is a groove played into the ring at 48 kHz in real time, through the same path a
capture device takes (FileSource -> InputRing -> resampling to the model's rate). A probe
notes the newest sample in the ring and the moment it was written, then waits for the first
published ListenFrame whose window includes it: that wait is the latency. It is measured
with the listen thread alone, and again while the dream engine dreams on the same cores.

The baseline, measured in the same run: one network pass over a window (the floor no
refresh scheme can beat). The target: at most one loop-length / 8.
"""

from __future__ import annotations

import random
import statistics
import threading
import time

import torch

from immersions.devices.capture import SoundIn
from immersions.synth import render_loop
from immersions.bench.kit import environment, timed
from immersions.registry import REGISTRY, loop_length, loop_seconds
from immersions.dream.engine import DreamEngine, activation_table
from immersions.dream.listen import ListenEngine, refresh_period
from immersions.dream.loop import start_clip
from immersions.selection import Region
from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats

DEVICE_RATE = 48000


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median_s": statistics.median(values), "min_s": ordered[0], "max_s": ordered[-1],
            "p90_s": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "probes": len(values)}


def _probe(ear: ListenEngine, timeout: float = 60.0):
    """(seconds from the newest sample's write to the publication of a window that holds it,
    that window)."""
    written, when = ear.sound_in.ring.clock()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        frame = ear.latest()
        if frame is not None and frame.end >= written:
            return frame.published - when, frame
        time.sleep(0.001)
    raise ImmersionsError(f"no listen window published within {timeout:.0f} s; is the machine overloaded?")


def _measure(ear: ListenEngine, probes: int, rng: random.Random) -> dict:
    latencies, computes, drawn = [], [], []
    for _ in range(probes):
        time.sleep(rng.uniform(0.0, ear.period))  # probes land anywhere in the refresh cycle
        latency, frame = _probe(ear)
        latencies.append(latency)
        computes.append(frame.compute_s)
        # the renderer draws a window one refresh behind its newest input (ListenFrame.fraction_at)
        drawn.append(frame.published - frame.end_time + frame.period)
    return {"publish_latency": _summary(latencies), "window_compute": _summary(computes),
            "drawn_behind_input": _summary(drawn)}


def bench_listen(args) -> dict:
    model = load_model(getattr(args, "model", None))
    stats = load_stats(model)
    params = REGISTRY.defaults().replace(listen=True)
    seconds = loop_seconds(params)
    rate = model.sample_rate
    target = seconds / 8.0
    probes = max(20, 4 * int(getattr(args, "repeats", 7)))
    rng = random.Random(0)
    doc = {"benchmark": "listen", **environment(torch.device("cpu")), "model": str(model.folder),
           "loop_seconds": seconds, "target_s": target, "refresh_hz": 1.0 / refresh_period(seconds), "device_rate": DEVICE_RATE,
           "model_rate": rate}

    # the baseline: one network pass over one window of input, nothing else, on a thread of its
    # own as the listen thread runs it (torch's CPU threads behave differently on the main thread)
    window = torch.as_tensor(render_loop("groove", sample_rate=rate, seed=1)[:loop_length(params, rate)])
    result = {}
    worker = threading.Thread(target=lambda: result.update(timed(
        lambda: activation_table(model, stats, window, circular=False), repeats=int(getattr(args, "repeats", 7)))))
    worker.start()
    worker.join()
    doc["baseline_one_window"] = result

    room = render_loop("groove", sample_rate=DEVICE_RATE, seed=2)
    with SoundIn.from_file(room, sample_rate=DEVICE_RATE) as sound_in:
        state = {"params": params}
        ear = ListenEngine(sound_in, lambda: (model, stats), lambda: state["params"])
        ear.start()
        try:
            while ear.latest() is None:
                time.sleep(0.01)
            doc["alone"] = _measure(ear, probes, rng)
            engine = DreamEngine(model, stats, start_clip("groove", loop_length(params, rate),
                                                          rate), params)
            engine.select(Region(len(model.taps) // 2))
            engine.start()
            try:
                while engine.latest() is None:
                    time.sleep(0.01)
                steps_before, began = engine.dreamer.steps, time.perf_counter()
                doc["while_dreaming"] = _measure(ear, probes, rng)
                took = time.perf_counter() - began
                doc["while_dreaming"]["dream_steps_per_s"] = (engine.dreamer.steps - steps_before) / took
                # the same time of dreaming with listen off: what listening costs the dream
                state["params"] = params.replace(listen=False)
                steps_before, began = engine.dreamer.steps, time.perf_counter()
                time.sleep(took)
                doc["dream_steps_per_s_listen_off"] = (engine.dreamer.steps - steps_before) / (
                    time.perf_counter() - began)
            finally:
                engine.stop()
        finally:
            ear.stop()
    floor = doc["baseline_one_window"]["median_s"]
    for case in ("alone", "while_dreaming"):
        latency = doc[case]["publish_latency"]
        latency["ratio_to_one_window"] = latency["median_s"] / floor
        doc[case]["within_target"] = latency["max_s"] <= target
        doc[case]["drawn_within_target"] = doc[case]["drawn_behind_input"]["max_s"] <= target
    return doc
