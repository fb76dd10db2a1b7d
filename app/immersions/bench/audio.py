"""`immersions bench audio`: the loop player on the NULL backend while the dream engine works.

The NULL backend consumes samples at the real rate with no sound card, so the callback
timing is real: the dream thread competes with it for the CPU and the GIL exactly as in
a performance. The renderer is stood in for by a loop that asks for the playhead at
60 Hz, as a display would.
"""

from __future__ import annotations

import logging
import statistics
import time
from types import SimpleNamespace

import torch

from immersions.devices.player import BUFFER_MS, PERIODS, LoopPlayer

log = logging.getLogger(__name__)

DISPLAY_HZ = 60.0


def bench_audio(seconds: float, model: str | None = None, buffer_ms: float = BUFFER_MS, periods: int = PERIODS,
                start: str = "groove", sample_rate: int = 48000) -> dict:
    """Play the dreamed loops for `seconds` on the NULL backend; one JSON-able dict of counters."""
    from immersions.bench.kit import environment
    from immersions.registry import REGISTRY, loop_length
    from immersions.dream.engine import DreamEngine
    from immersions.dream.loop import start_clip
    from immersions.selection import Region
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats

    net = load_model(model)
    params = REGISTRY.defaults()
    rate = net.sample_rate
    clip = start_clip(start, loop_length(params, rate), rate)
    engine = DreamEngine(net, load_stats(net), clip, params)
    engine.select(Region(len(net.taps) // 2))
    offers: list[float] = []
    backsteps, worst_backstep = 0, 0.0
    with LoopPlayer(backend="null", sample_rate=sample_rate, buffer_ms=buffer_ms, periods=periods) as player:
        player.offer(SimpleNamespace(serial=0, clip=clip, sample_rate=rate))  # sound from the first second
        engine.start()
        began = time.perf_counter()
        serial, last = 0, None
        try:
            while (now := time.perf_counter()) - began < seconds:
                frame = engine.latest()
                if frame is not None and frame.serial != serial:
                    t = time.perf_counter()
                    player.offer(frame)
                    offers.append(time.perf_counter() - t)
                    serial = frame.serial
                head = player.position(now)
                if last is not None and head.serial == last.serial and head.seconds < last.seconds:
                    back = last.seconds - head.seconds
                    if back < 0.5 * head.loop_seconds:  # not a wrap round the loop
                        backsteps += 1
                        worst_backstep = max(worst_backstep, back)
                last = head
                time.sleep(max(0.0, 1.0 / DISPLAY_HZ - (time.perf_counter() - now)))
            elapsed = time.perf_counter() - began
        finally:
            engine.stop()
        stats = player.stats()
        backend, device_rate, latency = player.backend, player.sample_rate, player.latency
        buffer_ms, period_ms = player.buffer_ms, player.period_ms
    ratio = stats.max_switch_jump / stats.max_clip_jump if stats.max_clip_jump > 0 else 0.0
    last_frame = engine.latest()
    return {
        "benchmark": "audio",
        **environment(torch.device("cpu")),
        "seconds": round(elapsed, 3),
        "model": net.label,
        "backend": backend,
        "sample_rate": device_rate,
        "clip_sample_rate": rate,
        "buffer_ms": buffer_ms,
        "periods": periods,
        "period_ms": period_ms,
        "latency_ms": round(1000 * latency, 3),
        "callbacks": stats.callbacks,
        "expected_callbacks": round(elapsed * 1000 / period_ms),
        "late_callbacks": stats.late_callbacks,
        "underruns": stats.underruns,
        "faults": stats.faults,
        "max_render_ms": round(stats.max_render_ms, 3),
        "switches": stats.switches,
        "max_switch_jump": stats.max_switch_jump,
        "max_clip_jump": stats.max_clip_jump,
        "switch_jump_ratio": round(ratio, 4),
        "click_free": stats.max_switch_jump <= stats.max_clip_jump,
        # equal-power gains sum to up to sqrt(2) mid-fade, so on two similar clips the steps
        # inside a crossfade can reach ~1.41x the clips' own: louder for a moment, not a click
        "max_crossfade_jump": stats.max_crossfade_jump,
        "dream_steps": last_frame.step if last_frame is not None else 0,
        "frames_offered": len(offers),
        "offer_ms_median": round(1000 * statistics.median(offers), 3) if offers else None,
        "offer_ms_max": round(1000 * max(offers), 3) if offers else None,
        "playhead_backsteps": backsteps,
        "playhead_max_backstep_ms": round(1000 * worst_backstep, 3),
    }


def bench_audio_args(args) -> dict:
    """`immersions bench audio [--seconds S]`: one minute unless told."""
    return bench_audio(args.seconds if args.seconds is not None else 60.0)
