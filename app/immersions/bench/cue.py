"""`immersions bench cue --json`: a performer's move, with one deck and with the cue deck.

A selection change (`--layer`, `--channel`: a position through the taps and the channels),
measured two ways from the groove start, in real time on an offscreen picture drawn at the
frame cap (as `perform` draws on this machine) and the player's sound advanced with the wall
clock:

(a) one deck, as before decks: the selection changes on the loop on air. The figure: the time
    from the change until the loop heard reaches 80 % of the rise the selection's objective
    makes in `--seconds` (default 60) of dreaming (the run goes on up to as long again for
    the loop heard to get there; null: it did not).
(b) two decks: the same selection is set on deck B, which dreams off air for `--seconds`
    while deck A holds its loop on air, then fades in over `--fade-bars` (default 2) bars.
    The figure: the time from the fade's start (on a bar line) until the loop on air is at
    80 % of the rise of deck B's loop as the cue plays it when the fade starts (what is faded in). The loop on air during the fade is both decks weighted by the
    crossfader's power (gain squared): deck A counts with the objective the selection had at
    the start (its loop never dreamed on it).

The objective of a heard clip is the one its dream step reported (the clip's DreamFrame), for
clips dreamed after the change; clips from before it count as the start value. Dream speed is
also reported: steps a second of the one engine on one deck (a), and on deck B while A holds (b).
Target: (b) at most the fade's length, against (a).
"""

from __future__ import annotations

import time

import torch

from immersions.audio.mixing import fader_gains
from immersions.bench.kit import environment
from immersions.errors import ImmersionsError
from immersions.frames import faded_in_objective, heard_objective
from immersions.registry import REGISTRY, bar_seconds

RISE_SHARE = 0.8


def _drive(perf, target, seconds: float, cap: float | None, on_frame) -> None:
    """Draw at the cap for `seconds` of wall time, the sound advanced with the wall clock."""
    from immersions.visual.gl import finish
    from immersions.visual.pacing import FramePacer

    pacer = FramePacer(cap)
    began = last = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - began >= seconds:
            return
        dt, last = now - last, now
        perf.clock.advance(dt)
        target.use()
        perf.frame(dt, target=target)
        finish(perf.ctx)
        on_frame(now)
        pacer.wait()


def _first_clip(engine, timeout: float = 180.0):
    waited = time.perf_counter()
    while engine.latest() is None:
        if engine.error or time.perf_counter() - waited > timeout:
            raise ImmersionsError(f"no dreamed clip ({engine.error or 'too slow'})")
        time.sleep(0.05)
    return engine.latest()


def _after(engine, serial: int, timeout: float = 60.0):
    """The first frame the engine publishes after `serial` (dreamed with the change in force)."""
    waited = time.perf_counter()
    while (frame := engine.latest()) is None or frame.serial <= serial:
        if time.perf_counter() - waited > timeout:
            raise ImmersionsError("the dream engine published nothing after the change")
        time.sleep(0.01)
    return frame


def _performance(args, size):
    from immersions.performance.performance import OfflineClock, Performance
    from immersions.visual.gl import offscreen_context

    ctx = offscreen_context()
    perf = Performance(ctx, size, OfflineClock(), model=getattr(args, "model", None), device="cpu",
                       start="groove", seed=getattr(args, "seed", 0) or 0)
    return ctx, perf, ctx.simple_framebuffer(size, components=4)


def bench_cue(args) -> dict:
    from immersions.visual.pacing import frame_cap

    seconds = float(getattr(args, "seconds", None) or 60.0)
    fade_bars = int(getattr(args, "fade_bars", None) or 2)
    layer = float(getattr(args, "layer", None) if getattr(args, "layer", None) is not None else 0.25)
    channel = float(getattr(args, "channel", None) if getattr(args, "channel", None) is not None else 0.7)
    size = (1280, 720)
    if seconds <= 0 or fade_bars < 1:
        raise ImmersionsError("bench cue: --seconds must be positive and --fade-bars at least 1")
    change = {"layer": layer, "channel_pos": channel}
    bar = bar_seconds(REGISTRY["bpm"].default)

    # (a) one deck: the selection changes on the loop on air
    ctx, perf, target = _performance(args, size)
    cap = frame_cap(0, ctx.info["GL_RENDERER"])
    try:
        perf.start()
        _first_clip(perf.engine)
        serial0 = perf.engine.latest().serial
        for name, value in change.items():
            perf.set(name, value)
        first = _after(perf.engine, serial0)
        start, steps0, began = float(first.objective), first.step, time.perf_counter()
        heard: list[tuple[float, float]] = []
        _drive(perf, target, seconds, cap, lambda now: heard.append(
            (now - began, heard_objective(perf.clock.position().frame, serial0, start))))
        latest = perf.engine.latest()
        one_rate = (latest.step - steps0) / (time.perf_counter() - began)
        rise = float(latest.objective) - start
        reached = next((t for t, o in heard if o >= start + RISE_SHARE * rise), None)
        if reached is None:  # the loop heard lags the dream by a loop or more: listen on, up to as long again
            goal = start + RISE_SHARE * rise

            def listen(now):
                heard.append((now - began, heard_objective(perf.clock.position().frame, serial0, start)))
                if heard[-1][1] >= goal:
                    raise StopIteration

            try:
                _drive(perf, target, seconds, cap, listen)
            except StopIteration:
                reached = heard[-1][0]
        one = {"objective_start": start, "objective_after_s": float(latest.objective), "rise": rise,
               "seconds_to_80_percent": reached, "dream_steps_per_s": one_rate, "frames": perf.frames}
    finally:
        perf.close()
        target.release()
        ctx.release()

    # (b) two decks: the same selection prepared on deck B off air, then faded in
    ctx, perf, target = _performance(args, size)
    try:
        perf.start()
        _first_clip(perf.engine)
        perf.set("deck", "B")
        deck_b = perf.decks["B"].engine
        _first_clip(deck_b)
        serial0 = deck_b.latest().serial
        for name, value in change.items():
            perf.set(name, value)
        first = _after(deck_b, serial0)
        start_b, steps0, began = float(first.objective), first.step, time.perf_counter()
        _drive(perf, target, seconds, cap, lambda now: None)
        prepared = deck_b.latest()
        b_rate = (prepared.step - steps0) / (time.perf_counter() - began)
        # what is faded in is deck B's loop as the cue plays it (held from the fade on): its rise
        prepared_heard = heard_objective(perf.clock.position(deck=1).frame, serial0, start_b)
        rise_b = prepared_heard - start_b
        renderer = perf.clock.renderer
        perf.fade(fade_bars)
        trace: list[tuple[float, float, float]] = []  # (output frame, fader, objective on air)

        def on_frame(now):
            x = perf.clock.fader
            power = fader_gains(x, perf.params["crossfader_curve"])[1] ** 2
            heard_b = heard_objective(perf.clock.position(deck=1).frame, serial0, start_b)
            trace.append((renderer.frames, x, faded_in_objective(power, heard_b, start_b)))

        _drive(perf, target, (fade_bars + 2) * bar, cap, on_frame)
        rate = renderer.sample_rate
        fade_start = renderer.fade_start / rate
        reached = next((f / rate - fade_start for f, _, o in trace
                        if f >= renderer.fade_start and o >= start_b + RISE_SHARE * rise_b), None)
        two = {"objective_start": start_b, "objective_prepared": float(prepared.objective),
               "objective_prepared_heard": prepared_heard, "rise": rise_b,
               "seconds_from_fade_start_to_80_percent": reached, "fade_seconds": fade_bars * bar,
               "dream_steps_per_s_deck_b_while_a_holds": b_rate, "frames": perf.frames}
    finally:
        perf.close()
        target.release()
        ctx.release()
    return {"benchmark": "cue", **environment(torch.device("cpu")), "model": str(getattr(args, "model", None) or "default"),
            "selection": change, "reference_s": seconds, "fade_bars": fade_bars, "frame_cap": cap, "size": list(size),
            "one_deck": one, "cue_deck": two,
            "dream_speed_two_decks_share": b_rate / one_rate if one_rate else None,
            "target": "(b) seconds_from_fade_start_to_80_percent <= fade_seconds, against (a) seconds_to_80_percent",
            "target_met": (two["seconds_from_fade_start_to_80_percent"] is not None
                           and two["seconds_from_fade_start_to_80_percent"] <= two["fade_seconds"])}
