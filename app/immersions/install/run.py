"""`immersions install --headless`: the installation without a screen, in real time.

The same session as the window's, on an offscreen OpenGL context (EGL) and a real
LoopPlayer: by default on miniaudio's NULL backend, which consumes audio in real time
without a sound card, so late callbacks and underruns are real figures of this machine
(give an audio device or backend to hear it, e.g. an audio-only installation). Frames are
drawn at a modest rate (12 fps at 640x360 by default) so that on a small machine most of
the CPU is left to dreaming, as a gallery PC showing the window would leave it.

It runs for `seconds` of wall time (or until SIGTERM / SIGINT) and returns the command
contract's figures (see `InstallSession.figures`) plus the run's own: seconds, fps, size,
start-up time, the audio device and the GL renderer.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime
from typing import Callable

from immersions.devices.player import LoopPlayer
from immersions.errors import ImmersionsError
from immersions.install.autopilot import AutopilotConfig
from immersions.install.hours import OpeningHours
from immersions.install.session import InstallOptions, InstallSession, install_performance, preload
from immersions.visual.gl import finish, offscreen_context

log = logging.getLogger(__name__)

Sampler = Callable[[float, InstallSession], None]  # (seconds since the loop began, the session)


def run_install_headless(seconds: float | None, model: str | None = None, seed: int = 0, scenes: str | None = None,
                         hours: OpeningHours | None = None, size: tuple[int, int] = (640, 360), fps: float = 12.0,
                         heartbeat: str | None = None, state_dir: str | None = None, audio_device: str | None = None,
                         audio_backend: str | None = "null", device: str | None = None,
                         autopilot: AutopilotConfig | None = None, sample: Sampler | None = None,
                         sample_every: float = 60.0, launched: float | None = None, cue_device: str | None = None) -> dict:
    """Run the installation headless for `seconds` (None: until SIGTERM / SIGINT); its figures."""
    options = InstallOptions(model=model, seed=seed, scenes=scenes, hours=hours or OpeningHours.always(),
                             autopilot=autopilot or AutopilotConfig(), heartbeat=heartbeat, state_dir=state_dir,
                             device=device, size=size, fps=fps, audio_device=audio_device, audio_backend=audio_backend,
                             cue_device=cue_device)
    return run_headless(options, seconds, sample=sample, sample_every=sample_every, launched=launched)


def run_headless(options: InstallOptions, seconds: float | None, sample: Sampler | None = None,
                 sample_every: float = 60.0, launched: float | None = None,
                 clock: Callable[[], datetime] = datetime.now) -> dict:
    """The headless loop for given options; see `run_install_headless`. `clock`: the wall
    clock the opening hours are read from."""
    if seconds is not None and seconds <= 0:
        raise ImmersionsError("--seconds must be positive")
    if not 0.5 <= options.fps <= 120:
        raise ImmersionsError(f"--fps {options.fps:g}: choose 0.5 .. 120 frames per second")
    width, height = options.size
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ImmersionsError(f"--size {width}x{height} is out of range (16 .. 8192 pixels a side)")
    began_setup = time.perf_counter()
    stop = threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    ctx = offscreen_context()
    player = perf = session = target = None
    try:
        preload()  # torch and the rest, before the audio callback runs: an import holds the GIL for seconds
        player = LoopPlayer(device=options.audio_device, backend=options.audio_backend,
                            buffer_ms=options.audio_buffer_ms, cue_device=options.cue_device)
        perf = install_performance(ctx, options.size, player, options, now=clock())
        session = InstallSession(perf, options)
        target = ctx.simple_framebuffer(options.size, components=4)
        at_start = player.stats()  # the start: from the first callback until the model has loaded
        session.start()
        began = last = time.perf_counter()
        origin = launched if launched is not None else began_setup
        startup = began - origin
        period = 1.0 / options.fps
        next_sample = next_check = began
        while not stop.is_set():
            now = time.perf_counter()
            if seconds is not None and now - began >= seconds:
                break
            if now >= next_check:  # about once a second, as the window does: a dead output (or cue) comes back
                next_check = now + 1.0
                player.check(now)
            if sample is not None and now >= next_sample:
                sample(now - began, session)
                next_sample += sample_every
            session.tick(now - last, target=target, now=clock())
            finish(ctx)
            last = now
            stop.wait(max(0.0, period - (time.perf_counter() - now)))
        elapsed = time.perf_counter() - began
        if sample is not None:
            sample(elapsed, session)
        latest = perf.engine.latest()
        doc = session.figures()
        doc.update({
            "seconds": round(elapsed, 2),
            "fps": round(session.frames / elapsed, 2) if elapsed > 0 else 0.0,
            "size": list(options.size),
            "startup_s": round(startup, 2),
            # from the launch (or the call) to the first loop heard: the saved loop when there is one
            "first_heard_s": round(session.first_heard - origin, 2) if session.first_heard is not None else None,
            "underruns_at_start": at_start.underruns,
            "late_callbacks_at_start": at_start.late_callbacks,
            "dream_steps": latest.step if latest is not None else 0,
            "nan_resets": latest.nan_resets if latest is not None else 0,
            "audio": player.device_name,
            "cue_underruns": player.cue.underruns if player.cue is not None else None,
            "renderer": ctx.info["GL_RENDERER"],
        })
        return doc
    finally:
        if session is not None:
            session.close()
        if perf is not None:
            perf.close()  # stops dreaming, fades and closes the player
        elif player is not None:
            player.close(fade=False)
        if target is not None:
            target.release()
        ctx.release()
        for sig, handler in old.items():
            signal.signal(sig, handler)
