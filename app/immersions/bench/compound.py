"""`immersions bench compound`: "excite A, quiet B", measured.

For pairs of regions (A to excite, B to quiet) and start clips, two dreams of N steps each
from the same loop and seed, side by side:
- `excite`: the selection is A alone (B is only watched);
- `quiet_w2`: A at weight 1 and B at weight -2 (the performer's `quiet` toggle at the
  registry's default `quiet_weight`); `--quiet-weights 1,2,4` compares `quiet_w1`, `quiet_w2`,
  `quiet_w4` side by side.
Per dream: where A started and ended, how far a control region of A's size rose (A's channels
moved half way round, as `immersions dream` reports), and where B started and ended. The
target (issue 17): A ends at 3x its start or more (counting a start below 0.1 as 0.1, as the
dream tests do) while B ends below its start.

The pairs are given as positions through the taps (the `layer` fader), so that any model
runs them: the same early tap (B a neighbour of A's channels), a deep tap excited while a
shallower one is kept quiet, and the last context layer.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from immersions.bench.kit import environment
from immersions.dream.dreamer import Dreamer
from immersions.dream.loop import start_clip
from immersions.dream.run import control_region, parse_settings
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats
from immersions.registry import REGISTRY, loop_length
from immersions.selection import Region, Selection, tap_of_layer

# (A's layer, A's channel position, B's layer, B's channel position); spans: CHANNEL_SPAN
PAIRS = ((0.25, 0.2, 0.25, 0.7), (0.6, 0.3, 0.45, 0.3), (1.0, 0.2, 1.0, 0.6))
CHANNEL_SPAN = 0.1
STARTS = ("noise", "groove")
RISE_RATIO = 3.0  # A's end against its start (at least START_FLOOR), for the target
START_FLOOR = 0.1


def bench_compound(args) -> dict:
    model = load_model(args.model)
    stats = load_stats(model)
    sr = model.sample_rate
    params = parse_settings(args.set, REGISTRY.defaults())
    samples = loop_length(params, sr)
    steps = args.steps if args.steps is not None else 50
    starts = tuple(s for s in (args.starts or ",".join(STARTS)).split(",") if s)
    taps = len(model.taps)
    doc = {"benchmark": "compound", **environment(torch.device("cpu")), "model": str(args.model or "default"), "steps": steps,
           "seed": args.seed, "channel_span": CHANNEL_SPAN, "target": f"quiet: A ends >= {RISE_RATIO:g}x its "
           f"start (at least {START_FLOOR:g}) while B ends below its start", "dreams": []}
    weights = [float(w) for w in (getattr(args, "quiet_weights", None) or f"{REGISTRY['quiet_weight'].default:g}").split(",")]
    for start in starts:
        clip = start_clip(start, samples, sr, args.seed)
        for a_layer, a_channel, b_layer, b_channel in PAIRS:
            a = Region(tap_of_layer(a_layer, taps), (a_channel, CHANNEL_SPAN))
            b = Region(tap_of_layer(b_layer, taps), (b_channel, CHANNEL_SPAN))
            variants = [("excite", Selection((a,)))] + [
                (f"quiet_w{w:g}", Selection((a, replace(b, weight=-w)))) for w in weights]
            for variant, selection in variants:
                doc["dreams"].append(_dream(model, stats, clip, params, steps, args, variant, selection, a, b, start))
    doc["summary"] = summarize(doc["dreams"])
    return doc


def _dream(model, stats, clip, params, steps: int, args, variant: str, selection: Selection, a: Region, b: Region,
           start: str) -> dict:
    dreamer = Dreamer(model, stats, clip, copies=args.copies, seed=args.seed)
    dreamer.selection = selection
    control = control_region(a, channels=model.taps[a.tap].channels)
    before = {k: dreamer.measure(r, params) for k, r in (("a", a), ("b", b), ("control", control))}
    began = time.perf_counter()
    for _ in range(steps):
        dreamer.step(params)
    seconds = time.perf_counter() - began
    after = {k: dreamer.measure(r, params) for k, r in (("a", a), ("b", b), ("control", control))}
    rise, control_rise = after["a"] - before["a"], after["control"] - before["control"]
    return {"variant": variant, "start": start, "a": _name(model, a), "b": _name(model, b),
            "a_start": before["a"], "a_end": after["a"], "a_rise": rise, "control_rise": control_rise,
            "rise_ratio": rise / control_rise if control_rise > 1e-9 else None,
            "b_start": before["b"], "b_end": after["b"], "b_change": after["b"] - before["b"],
            "a_ratio": after["a"] / max(before["a"], START_FLOOR),
            "met": after["a"] >= RISE_RATIO * max(before["a"], START_FLOOR) and after["b"] < before["b"],
            "steps_per_s": steps / seconds if seconds > 0 else None, "nan_resets": dreamer.nan_resets}


def _name(model, region: Region) -> str:
    pos, span = region.channel
    return f"{model.taps[region.tap].name} channels {pos:g}:{span:g}"


def summarize(dreams: list[dict]) -> dict:
    """Per variant: the median rises, B's median change, and how many dreams met the target."""
    out = {}
    for variant in sorted({d["variant"] for d in dreams}):
        rows = [d for d in dreams if d["variant"] == variant]
        out[variant] = {
            "dreams": len(rows),
            "median_a_rise": statistics.median(d["a_rise"] for d in rows),
            "median_a_ratio": statistics.median(d["a_ratio"] for d in rows),
            "median_control_rise": statistics.median(d["control_rise"] for d in rows),
            "median_b_change": statistics.median(d["b_change"] for d in rows),
            "b_fell": sum(d["b_end"] < d["b_start"] for d in rows),
            "met": sum(d["met"] for d in rows),
        }
    return out
