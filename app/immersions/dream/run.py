"""Dreaming from the command line: one selection, or a journey of them.

A journey is a list of selections in a TOML file; each stage starts from the previous
stage's result, so the sound wanders freely through the network:

    start = "noise"          # silence, noise, a starter clip, or an audio file
    steps = 40               # default per stage
    seed = 0
    [params]                 # any registry parameter, for every stage
    learning_rate = -1.8

    [[stage]]
    layer = "enc 2 conv 2"   # name, key (enc2.conv2) or index
    channel = "0.2:0.1"      # POS[:SPAN] in 0..1
    pitch = "0.5:1"
    time = "0.5:1"

    [[stage]]
    layer = "ar 3"
    keep = true              # add to the previous selection instead of replacing it
    params = { time_jitter = 0.8 }

`immersions dream --journey FILE` takes --steps, --seed, --start and --set too: a value given
on the command line wins over the file's (--steps over every stage's own `steps`, --set over
[params] and each stage's params); one not given leaves the file's. --layer, --channel,
--pitch, --time and --keep pick one selection and are refused beside a journey.
"""

from __future__ import annotations

import logging
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from immersions.audio.io import write_wav
from immersions.registry import REGISTRY, Snapshot, loop_length
from immersions.dream.dreamer import Dreamer
from immersions.dream.loop import start_clip
from immersions.selection import Region, resolve_tap
from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.model.ear import Ear
from immersions.model.stats import load_stats

log = logging.getLogger(__name__)


def parse_axis(text: str | None, default: tuple[float, float], label: str) -> tuple[float, float]:
    """'POS' or 'POS:SPAN' -> (pos, span); span defaults to 0 (one index)."""
    if text is None:
        return default
    try:
        parts = [float(p) for p in str(text).split(":")]
    except ValueError:
        raise ImmersionsError(f"--{label} '{text}' is not POS or POS:SPAN (numbers in 0..1)") from None
    if len(parts) not in (1, 2):
        raise ImmersionsError(f"--{label} '{text}' is not POS or POS:SPAN")
    pos, span = parts[0], parts[1] if len(parts) == 2 else 0.0
    for name, v in (("position", pos), ("span", span)):
        if not 0.0 <= v <= 1.0:
            raise ImmersionsError(f"--{label} {name} {v:g} is outside 0 .. 1")
    return pos, span


def parse_settings(settings: dict | list[str] | None, base: Snapshot) -> Snapshot:
    """Registry values from a TOML table or NAME=VALUE strings, validated as a whole."""
    if not settings:
        return base
    if isinstance(settings, list):
        settings = parse_pairs(settings)
    return base.replace(**settings)


def parse_pairs(settings: list[str]) -> dict:
    """NAME=VALUE strings (--set) -> {name: value}, each value parsed by its parameter."""
    pairs = {}
    for item in settings:
        if "=" not in item:
            raise ImmersionsError(f"--set '{item}' is not NAME=VALUE")
        name, value = item.split("=", 1)
        pairs[name.strip()] = REGISTRY[name.strip()].parse(value)
    return pairs


def control_region(region: Region, turn: float = 0.5, channels: int | None = None) -> Region:
    """A region of the same size that was not selected: channels moved `turn` of the way round
    (half way by default). On a tap of one channel (`channels` 1: CREPE's pitch output), moving
    round the channels would give the selection back: the pitches move round instead."""
    if channels == 1:
        pos, span = region.pitch
        return Region(region.tap, region.channel, ((pos + turn) % 1.0, span), region.time)
    pos, span = region.channel
    return Region(region.tap, ((pos + turn) % 1.0, span), region.pitch, region.time)


@dataclass
class DreamResult:
    objective_start: float
    objective_end: float
    control_start: float
    control_end: float
    steps: int
    steps_per_second: float
    nan_resets: int
    peak: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_stage(dreamer: Dreamer, region: Region, keep: bool, params: Snapshot, steps: int,
              progress: bool = True, label: str = "dreaming") -> DreamResult:
    if steps < 0:
        raise ImmersionsError(f"--steps must be zero or more, not {steps}")
    control = control_region(region, channels=dreamer.model.taps[region.tap].channels)
    dreamer.select(region, keep)
    start, control_start = dreamer.measure(region, params), dreamer.measure(control, params)
    began = time.perf_counter()
    for _ in tqdm(range(steps), desc=label, unit="step", disable=not progress):
        dreamer.step(params)
    seconds = time.perf_counter() - began
    return DreamResult(start, dreamer.measure(region, params), control_start, dreamer.measure(control, params),
                       steps, steps / seconds if steps and seconds > 0 else 0.0, dreamer.nan_resets, dreamer.peak)


def _new_dreamer(model: Ear, start: str, params: Snapshot, seed: int) -> Dreamer:
    sr = model.sample_rate
    samples = loop_length(params, sr)
    return Dreamer(model, load_stats(model), start_clip(start, samples, sr, seed), seed=seed)


def explain_fall(model: Ear, stats, region: Region, result: "DreamResult") -> float:
    """After a dream from silence whose selection fell: when most of the selected neurons
    rest higher on silence than on real material (their mean plus one std), say so in one
    line, since any sound lowers such neurons. Returns that share (0 without statistics).
    (Deep neurons that rest high on silence can still be driven higher, so the share alone
    predicts nothing: only a fall is explained.)"""
    if not stats:
        return 0.0
    tap = model.taps[region.tap]
    channels, pitches, _ = region.bounds((tap.channels, tap.pitches, 1))
    share = stats[tap.key].silence_loving(channels, pitches)
    if share > 0.5 and result.objective_end < result.objective_start:
        log.warning("the selection fell from silence (%.3f -> %.3f): %.0f%% of its neurons in %s rest higher on "
                    "silence than on real material, and sound lowers them; start from a clip or noise (--start) "
                    "to hear what they answer", result.objective_start, result.objective_end, 100 * share, tap.name)
    return share


def dream_clip(model_name: str | None, layer: str, channel: str | None, pitch: str | None, time_: str | None,
               keep: bool, start: str, steps: int, seed: int, out: str, settings: list[str] | None = None,
               progress: bool = True) -> DreamResult:
    model = load_model(model_name)
    params = parse_settings(settings, REGISTRY.defaults())
    region = Region(resolve_tap(model.taps, layer), parse_axis(channel, (0.5, 0.0), "channel"),
                    parse_axis(pitch, (0.5, 1.0), "pitch"), parse_axis(time_, (0.5, 1.0), "time"))
    dreamer = _new_dreamer(model, start, params, seed)
    result = run_stage(dreamer, region, keep, params, steps, progress)
    if start == "silence":
        explain_fall(model, dreamer.stats, region, result)
    clip = dreamer.clip(params)
    write_wav(out, clip, dreamer.sample_rate)
    result.peak = float(np.abs(clip).max())  # of what is heard, after the EQ
    return result


def journey(path: str, out_dir: str, model_name: str | None = None, progress: bool = True, *,
            steps: int | None = None, seed: int | None = None, start: str | None = None,
            settings: list[str] | None = None) -> dict:
    """Run a journey file. The command line's values win over the file's: `steps` over every
    stage's and the file's `steps`, `seed` and `start` over the file's, `settings` (--set)
    over the file's [params] and each stage's params; None leaves the file's (or the built-in
    40 steps, seed 0, noise). Returns what ran: the start, seed, and one entry per stage."""
    try:
        plan = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ImmersionsError(f"cannot read journey {path}: {err}") from err
    stages = plan.get("stage", [])
    if not stages:
        raise ImmersionsError(f"journey {path} has no [[stage]] entries")
    if steps is not None and steps < 0:
        raise ImmersionsError(f"--steps must be zero or more, not {steps}")
    overrides = parse_pairs(settings or [])  # a bad --set fails before the model loads
    model = load_model(model_name or plan.get("model"))
    defaults = REGISTRY.defaults()
    base = parse_settings(plan.get("params"), defaults)
    seed = int(plan.get("seed", 0)) if seed is None else seed
    start = str(plan.get("start", "noise")) if start is None else start
    dreamer = _new_dreamer(model, start, parse_settings(overrides, base), seed)
    out = Path(out_dir)
    results = []
    for number, stage in enumerate(stages, start=1):
        params = parse_settings(overrides, parse_settings(stage.get("params"), base))
        region = Region(resolve_tap(model.taps, stage.get("layer", 0)),
                        parse_axis(stage.get("channel"), (0.5, 0.0), "channel"),
                        parse_axis(stage.get("pitch"), (0.5, 1.0), "pitch"),
                        parse_axis(stage.get("time"), (0.5, 1.0), "time"),
                        stage_weight(stage, number, params["quiet_weight"]))
        stage_steps = int(stage.get("steps", plan.get("steps", 40))) if steps is None else steps
        result = run_stage(dreamer, region, bool(stage.get("keep", False)), params, stage_steps, progress,
                           f"stage {number}/{len(stages)}")
        clip = dreamer.clip(params)
        wav = write_wav(out / f"stage{number:02d}.wav", clip, dreamer.sample_rate)
        result.peak = float(np.abs(clip).max())
        results.append({"stage": number, "layer": model.taps[region.tap].name, "weight": region.weight, "wav": str(wav),
                        "params": _changed(params, defaults), **result.as_dict()})
    return {"journey": str(path), "start": start, "seed": seed, "stages": results}


def _changed(params: Snapshot, defaults: Snapshot) -> dict:
    """The values of `params` that differ from `defaults`."""
    return {name: value for name, value in params.values().items() if value != defaults[name]}


def stage_weight(stage: dict, number: int, quiet_weight: float = 2.0) -> float:
    """A journey stage's region weight: `weight = -2` (or `quiet = true`: minus `quiet_weight`, or
    minus the stage's `weight` when it gives one) keeps the region quiet while the kept ones rise;
    1 (excite) when neither is given."""
    weight, quiet = stage.get("weight", quiet_weight if stage.get("quiet") is True else 1.0), stage.get("quiet", False)
    if not isinstance(quiet, bool):
        raise ImmersionsError(f"journey stage {number}: quiet must be true or false, not {quiet!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ImmersionsError(f"journey stage {number}: weight must be a number (negative quiets), not {weight!r}")
    return -abs(float(weight)) if quiet else float(weight)
