"""`immersions render`: the performance without a screen or a sound card. The same
Performance runs on an offscreen OpenGL context (EGL: Mesa on a CPU, or a GPU's driver),
dreaming included; each frame is drawn at the playhead that a listener would hear at that
moment, written to PNG, and the heard sound is written to a WAV beside the frames.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from immersions.audio.io import write_wav
from immersions.control.surface import ControlSurface, SurfaceOptions
from immersions.errors import ImmersionsError
from immersions.performance.performance import OfflineClock, Performance, save_png
from immersions.registry import REGISTRY
from immersions.visual.gl import finish, offscreen_context

log = logging.getLogger(__name__)

FIRST_CLIP_TIMEOUT = 120.0  # seconds to wait for the first dreamed clip before rendering


def render_offscreen(frames: int, size: tuple[int, int], out: str | Path | None, seconds: float | None = None,
                     fps: float = 30.0, model: str | None = None, device: str | None = None,
                     overlay: bool = False, start: str = "groove", seed: int = 0, params=None,
                     progress: bool = False, video_out: str | None = None, video_out_overlay: bool = False) -> dict:
    """Render `frames` frames spread over `seconds` of heard time (default frames / fps).

    `video_out`: also send each frame to other applications (see visual/video_out.py);
    the overlay goes with it only when `video_out_overlay`."""
    if frames < 1:
        raise ImmersionsError("--frames must be at least 1")
    if not (16 <= size[0] <= 8192 and 16 <= size[1] <= 8192):
        raise ImmersionsError(f"--size {size[0]}x{size[1]} is out of range (16 .. 8192 pixels a side)")
    seconds = float(seconds) if seconds is not None else frames / fps
    if seconds <= 0:
        raise ImmersionsError("--seconds must be positive")
    dt = seconds / frames
    out = Path(out) if out is not None else None
    ctx = offscreen_context()
    # frames written to files are not drawn against the clock: at full size unless asked
    # (render_scale's automatic half size is for drawing live beside dreaming on a CPU)
    params = params if params is not None else REGISTRY.defaults()
    if params["render_scale"] == 0:
        params = params.replace(render_scale=1.0)
    sender = _video_out(ctx, video_out, fps, video_out_overlay)  # a missing device is said before the model loads
    clock = OfflineClock()
    try:
        perf = Performance(ctx, size, clock, model=model, device=device, start=start, seed=seed, params=params,
                           progress=progress)
    except BaseException:
        if sender is not None:
            sender.close()
        raise
    target = ctx.simple_framebuffer(size, components=4)
    gui = surface = None
    if overlay:
        import imgui
        from moderngl_window.integrations.imgui import ModernGLRenderer

        from immersions.performance.gui import Overlay

        imgui.create_context()
        imgui.get_io().ini_file_name = None  # no imgui.ini left in the working folder
        gui = Overlay(ctx, ModernGLRenderer(ctx=ctx, display_size=size))
        surface = ControlSurface(perf, SurfaceOptions(midi=False))  # the overlay's presets and recording panels
    try:
        perf.start()
        wait_for_first_clip(perf)  # sound and light start with the first dreamed clip
        times, clips = [], set()
        for i in range(frames):
            clock.advance(dt)
            began = time.perf_counter()
            target.use()
            target.clear(0.0, 0.0, 0.0, 1.0)
            perf.frame(dt, target=target)
            if sender is not None and not sender.overlay:
                sender.capture(target, size)
            if gui is not None:
                target.use()
                gui.draw(perf, dt, surface)
            if sender is not None and sender.overlay:
                sender.capture(target, size)
            finish(ctx)
            times.append(time.perf_counter() - began)
            if perf.heard.serial >= 0:
                clips.add(perf.heard.serial)
            if out is not None:
                save_png(perf.renderer.read_image(), out / f"frame_{i:05d}.png")
            if progress and (i + 1) % 10 == 0:
                log.info("frame %d of %d", i + 1, frames)
        stats = perf.renderer.stats
        audio = clock.audio()
        if out is not None:
            write_wav(out / "heard.wav", audio, clock.sample_rate)
        ms = 1000 * statistics.median(times)
        return {
            "frames": frames,
            "size": list(size),
            "fps": 1000.0 / ms,
            "ms_per_frame": ms,
            "ms_per_frame_max": 1000 * max(times),
            "nodes_drawn": stats.nodes_drawn,
            "edges_drawn": stats.edges_drawn,
            "bytes_uploaded_per_frame": stats.bytes_uploaded_last_frame,
            "bytes_uploaded_per_clip": stats.bytes_uploaded_last_clip,
            "clips_shown": len(clips),
            "dream_steps": perf.engine.latest().step,
            "audio_seconds": len(audio) / clock.sample_rate,
            "audio_rms": float(np.sqrt(np.mean(audio ** 2))) if len(audio) else 0.0,
            "out": str(out) if out is not None else None,
            "renderer": ctx.info["GL_RENDERER"],
            **({"video_out": {"sent": sender.stats.sent, "dropped": sender.stats.dropped,
                              "errors": sender.stats.errors}} if sender is not None else {}),
        }
    finally:
        if sender is not None:
            sender.close()
        if gui is not None:
            gui.release()
        if surface is not None:
            surface.close()
        perf.close()
        target.release()


def wait_for_first_clip(perf: Performance, timeout: float = FIRST_CLIP_TIMEOUT) -> None:
    """Until the engine's first dreamed clip; one line (exit status 2) when none can come: the
    engine says why (`error`; a remote engine with a fallback says nothing while the server is
    away, and this waits for the local engine's first clip), or `timeout` s pass."""
    waited = time.perf_counter()
    while perf.engine.latest() is None:
        error = perf.engine.error
        if error:
            remote = perf.engine.status is not None  # a server's trouble is not the model's size
            raise ImmersionsError(f"no dreamed clip after {time.perf_counter() - waited:.0f} s ({error})"
                                  + ("" if remote else "; try a smaller model"))
        if time.perf_counter() - waited > timeout:
            raise ImmersionsError(f"no dreamed clip after {timeout:.0f} s (too slow); try a smaller model")
        time.sleep(0.02)


def _video_out(ctx, target: str | None, fps: float, overlay: bool):
    """A VideoOut for `--video-out TARGET`, or None."""
    if not target:
        return None
    from immersions.visual.video_out import VideoOut

    return VideoOut.open(ctx, target, fps=fps, overlay=overlay)


def perform_headless(seconds: float, size: tuple[int, int] = (640, 360), fps: float = 15.0,
                     model: str | None = None, models: tuple[str, ...] = (), device: str | None = None,
                     start: str = "groove", seed: int = 0, params=None, controls: SurfaceOptions | None = None,
                     state_out: str | Path | None = None, progress: bool = False, engine_factory=None,
                     video_out: str | None = None, sound_in=None) -> dict:
    """`immersions perform --headless`: the performance with its control surface (MIDI map,
    automation, OSC, presets, recording) and no window, for `seconds` of heard time.

    Time is the heard time of the offline clock, so an automation file replays against the
    sound exactly as it would live; the loop is paced to the wall clock so that dreaming gets
    the time it would have live. Returns (and writes to `state_out`) the final parameter
    values and what the controls did, so a script can check what a controller did."""
    if seconds <= 0:
        raise ImmersionsError("--seconds must be positive")
    if fps <= 0:
        raise ImmersionsError("--fps must be positive")
    ctx = offscreen_context()
    sender = _video_out(ctx, video_out, fps, False)  # no overlay is drawn headless
    clock = OfflineClock()
    try:
        perf = Performance(ctx, size, clock, model=model, device=device, start=start, seed=seed, params=params,
                           progress=progress, engine_factory=engine_factory, sound_in=sound_in)
    except BaseException:
        if sender is not None:
            sender.close()
        raise
    surface = None
    target = ctx.simple_framebuffer(size, components=4)
    try:
        perf.preload(models)
        surface = ControlSurface(perf, controls or SurfaceOptions(midi=False))
        perf.start()
        wait_for_first_clip(perf)  # the performance (and its time line) starts with the first clip
        dt, heard, clips = 1.0 / fps, 0.0, set()
        began = time.perf_counter()
        while heard < seconds - 1e-9:
            surface.tick(dt, heard, heard)
            clock.advance(dt)
            heard += dt
            target.use()
            perf.frame(dt, target=target)
            if sender is not None:
                sender.capture(target, size)
            if perf.heard.serial >= 0:
                clips.add(perf.heard.serial)
            ahead = began + heard - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        surface.presets.tick(0.0)
        perf.controls.apply()  # requests of the last frame count too
        doc = {
            "seconds": round(heard, 6),
            "model": perf.loaded.name,
            "models": [m.name for m in perf.models.values()],
            "params": dict(perf.params.values()),
            "clips_heard": len(clips),
            "dream_steps": perf.engine.latest().step,
            "rejected": perf.controls.rejected,
            "last_error": perf.controls.last_error,
            **surface.state(),
        }
    finally:
        if sender is not None:
            sender.close()
        if surface is not None:
            surface.close()
        perf.close()
        target.release()
    if state_out is not None:
        path = Path(state_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc
