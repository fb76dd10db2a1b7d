"""The installation session: what runs a Performance unattended, one display frame at a time.

The render loop (the headless runner in run.py, or the installation window) builds the
Performance with `install_performance(...)`, wraps it in an `InstallSession`, calls
`start()` once, then `tick(dt, target=...)` every frame *instead of* `perf.frame(...)`,
and `close()` at the end. A tick:

1. reads the opening hours: closed, dreaming rests on every deck (`Performance.rest`),
   the sound is at volume 0 and the screen black (the map is not even drawn, which leaves
   the machine idle overnight); opening, dreaming resumes and sound and picture fade in
   over the hours' fade, and fade out the same way before closing;
2. counts loops as heard (a new clip or the playhead wrapping round) and, while open,
   lets the autopilot (or the curated scene list) act at loop boundaries; its guard
   measures each new loop, and the `LoudnessRider` rides `volume` (x the fade level)
   toward the target loudness;
3. draws the Performance into `target`, then a black curtain of opacity 1 - level;
4. about every 0.5 s writes the watchdog's heartbeat: frames, a hash and the brightness of
   the picture just drawn, whether it should be playing, the heard clip and the audio
   callbacks;
5. every few loops saves the loop heard (if it is sound, not silence) as a WAV in the state
   folder. After a crash the next start plays that loop at once (`start()` offers it to the
   player before dreaming has made anything) and dreams on from it, so the room hears
   music again seconds after a restart, continuing where it was.

A clean start: the audio callback is Python, so anything that holds the GIL for long stalls
the sound. Importing torch holds it for seconds (dlopen of libtorch and its static set-up),
so `preload()` does the heavy imports *before* the audio device starts; the model then
loads while the saved loop plays, with torch on one thread (`gentle_torch`) so that a
core stays free for the callback.

Everything the session changes in the performance goes through the control hub with the
AUTOPILOT source. It owns `volume` (presets' volumes are overridden by the rider).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import moderngl
import numpy as np
import psutil

from immersions.audio.io import write_wav
from immersions.control.hub import AUTOPILOT
from immersions.frames import FRAMES_PER_LOOP, HUD_BINS, HUD_FRAMES
from immersions.registry import REGISTRY, loop_seconds
from immersions.install import INSTALL_BUFFER_MS
from immersions.install.autopilot import Autopilot, AutopilotConfig, Curator, Guard, Scenes
from immersions.install.fades import FadeMeter
from immersions.install.hours import OpeningHours
from immersions.install.loudness import LoudnessRider
from immersions.install.watchdog import Heartbeat, picture_summary
from immersions.paths import cache_dir
from immersions.visual.renderer import load_shader

log = logging.getLogger(__name__)

RESUME_SERIAL = 0  # the saved loop played at start; dreamed clips count from 1
VOLUME_STEP = 5e-4  # smaller volume moves are not sent through the hub



def default_state_dir() -> Path:
    return cache_dir() / "install"


@dataclass
class InstallOptions:
    """Everything `immersions install` decides; the headless runner and the window read the same."""

    model: str | None = None
    seed: int = 0
    scenes: str | None = None  # a scene list (TOML): curated mode instead of the autopilot
    preset_folders: tuple[str, ...] = ()  # where the scene list's presets are (assets/presets is always searched)
    hours: OpeningHours = field(default_factory=OpeningHours.always)
    autopilot: AutopilotConfig = field(default_factory=AutopilotConfig)
    heartbeat: str | None = None  # the heartbeat file (the watchdog sets it)
    state_dir: str | None = None  # the last good loop is kept here (default ~/.cache/immersions/install)
    log_dir: str | None = None
    save_every_loops: int = 4
    start: str = "groove"  # the start clip when there is no saved loop
    device: str | None = None  # torch device for dreaming (None: cuda if available, else cpu)
    monitor: int | None = None  # window: full screen on this monitor
    size: tuple[int, int] = (640, 360)  # headless picture size (the window uses its screen's)
    fps: float = 12.0  # headless frames per second
    audio_device: str | None = None
    audio_backend: str | None = None
    audio_buffer_ms: float = INSTALL_BUFFER_MS  # deep: nobody plays it live (see immersions.install)
    overlay: bool = False  # window: overlay shown at start (Tab toggles)
    video_out: str | None = None  # window: send the picture to other applications (visual/video_out.py)
    video_out_overlay: bool = False  # ... with the overlay on it
    link: bool = False  # join the Ableton Link session: bpm follows the band, loops start on its bar
    audio_input: str | None = None  # the room's sound in (--input): listen mode and capture, unattended
    input_backend: str | None = None  # the input's backend (None: the system's; not the headless output's NULL)
    cue_device: str | None = None  # a second output playing the deck off air (bench soak: NULL's)

    @property
    def state_folder(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()


class ResumeLoop:
    """The saved loop, shaped like the DreamFrame the player and the renderer expect: offered
    to the player before the model is even loaded, so the room hears music at once; its
    neurons stay dark (`attach(nodes)` sizes its activation table once the map is known)
    until the first dreamed clip takes over at the loop's end."""

    def __init__(self, clip: np.ndarray, sample_rate: int):
        self.serial = RESUME_SERIAL
        self.clip, self.sample_rate = clip, int(sample_rate)
        self.objective, self.step, self.steps_per_second, self.nan_resets = 0.0, 0, 0.0, 0
        self.model_name = "saved loop"
        self.activations = self.selection = self.scalogram = self.quieted = None
        self.offered: float | None = None  # time.perf_counter() when it went to the player

    def attach(self, nodes: int) -> None:
        self.activations = np.zeros((nodes, FRAMES_PER_LOOP), np.float16)
        self.selection = np.zeros(nodes, bool)
        self.scalogram = np.zeros((HUD_BINS, HUD_FRAMES), np.uint8)


class StateFolder:
    """The last good loop, kept as `last_clip.wav` (16-bit mono, written atomically)."""

    CLIP = "last_clip.wav"

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_state_dir()

    @property
    def clip_path(self) -> Path:
        return self.folder / self.CLIP

    def save_clip(self, frame) -> Path:
        tmp = self.folder / f".{self.CLIP}.{os.getpid()}.tmp.wav"
        write_wav(tmp, np.asarray(frame.clip, dtype=np.float32), frame.sample_rate)
        os.replace(tmp, self.clip_path)
        return self.clip_path

    def resume_loop(self) -> ResumeLoop | None:
        """The saved loop, or None; a file that does not read is moved aside (and said)."""
        path = self.clip_path
        if not path.is_file():
            return None
        try:
            with wave.open(str(path), "rb") as f:
                if f.getsampwidth() != 2 or f.getnchannels() != 1:
                    raise wave.Error("not 16-bit mono")
                rate = f.getframerate()
                pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
            if len(pcm) < rate // 10:
                raise wave.Error(f"only {len(pcm)} samples")
        except (OSError, EOFError, wave.Error) as err:
            log.warning("ignoring the saved loop %s (%s); dreaming starts from the start clip", path, err)
            path.replace(path.with_suffix(".broken.wav"))
            return None
        return ResumeLoop(pcm.astype(np.float32) / 32767.0, rate)


def preload():
    """Import what the Performance needs (torch, the dream engine, the renderer) now, before
    an audio device starts: these imports hold the GIL for seconds, and a callback waiting
    that long is an underrun. Returns the Performance class."""
    from immersions.performance.performance import Performance

    return Performance


@contextlib.contextmanager
def gentle_torch(threads: int = 1):
    """Torch on at most `threads` threads inside (a model loading while the saved loop plays):
    on a small machine a torch op on every core leaves the audio callback waiting for a CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def install_performance(ctx, size: tuple[int, int], clock, options: InstallOptions, now: datetime | None = None):
    """The Performance an installation runs. With a saved loop, and inside opening hours, the
    player (`clock`) plays it at once, while the model loads; dreaming then goes on from it.
    Call `preload()` before the player is made, so that nothing here holds the GIL for long."""
    state = StateFolder(options.state_folder)
    resume = state.resume_loop()
    level = options.hours.level(now or datetime.now())
    if resume is not None and level > 0.0:
        clock.set_volume(REGISTRY["volume"].default * level)
        clock.offer(resume)
        resume.offered = time.perf_counter()
        log.info("playing the saved loop %s while the model loads", state.clip_path)
    Performance = preload()  # already imported, unless the caller forgot
    sound_in = None
    if options.audio_input:
        from immersions.devices.capture import open_sound_in

        # no input: one warning inside, and the piece plays on without listening
        sound_in = open_sound_in(options.audio_input, options.input_backend)
    try:
        with gentle_torch():
            perf = Performance(ctx, size, clock, model=options.model, device=options.device,
                               start=str(state.clip_path) if resume is not None else options.start, seed=options.seed,
                               sound_in=sound_in)
    except BaseException:
        if sound_in is not None:
            sound_in.close()
        raise
    if resume is not None:
        resume.attach(perf.loaded.scene.nodes)
    return perf


class Curtain:
    """Black over the picture at a given opacity: the fade of the opening hours."""

    def __init__(self, ctx: moderngl.Context):
        self.ctx = ctx
        self.program = ctx.program(vertex_shader=load_shader("fullscreen.vert.glsl"),
                                   fragment_shader=load_shader("curtain.frag.glsl"))
        self.vao = ctx.vertex_array(self.program, [])

    def draw(self, target, cover: float) -> None:
        if cover <= 0.0:
            return
        ctx = self.ctx
        target.use()
        ctx.enable(moderngl.BLEND)
        ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA, moderngl.ZERO, moderngl.ONE
        self.program["u_cover"].value = min(1.0, float(cover))
        self.vao.render(moderngl.TRIANGLES, vertices=3)
        ctx.blend_func = moderngl.DEFAULT_BLENDING

    def release(self) -> None:
        self.vao.release()
        self.program.release()


def _rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


class InstallSession:
    """Runs a Performance unattended; see the module docstring.

    presets, library: a PresetPlayer and its PresetLibrary already wired to `perf.controls`
    (the window may have made them); made here for a scene list when not given."""

    def __init__(self, perf, options: InstallOptions | None = None, presets=None, library=None):
        self.perf, self.options = perf, options or InstallOptions()
        opts = self.options
        self.hub = perf.controls
        self.hours = opts.hours
        self.guard = Guard(opts.autopilot)
        self.presets = presets
        if opts.scenes:
            scenes = Scenes.load(opts.scenes)
            self.presets, library = self._preset_player(presets, library)
            self.pilot = Curator(self.hub, scenes, self.presets, library, opts.seed, opts.autopilot, self.guard)
        else:
            # with the room's sound in, the autopilot also listens to the room and captures from it
            self.pilot = Autopilot(self.hub, perf.model.taps, opts.seed, opts.autopilot, self.guard,
                                   room=perf.sound_in is not None)
        # two decks: how ready each fade is when it ends (fades.py), told by the pilot's hooks
        self.fade_meter = FadeMeter(perf) if opts.autopilot.decks else None
        if self.fade_meter is not None:
            self.pilot.on_prepare, self.pilot.on_fade = self.fade_meter.moved, self.fade_meter.faded
        if opts.autopilot.decks:
            self.pilot.fading = lambda: perf.clock.fader != perf.clock.fader_target
        self.rider = LoudnessRider(min(1.0, self.hub.params["volume"]), opts.autopilot.target_lufs)
        self.state = StateFolder(opts.state_folder)
        self.heartbeat = Heartbeat(opts.heartbeat) if opts.heartbeat else None
        self.curtain = Curtain(perf.ctx)
        self.process = psutil.Process()
        self.rss_start_mb = _rss_mb(self.process)
        self.loops = 0
        self.frames = 0
        self.level = 0.0
        self.open: bool | None = None  # None until the first tick has read the hours
        self.saved = 0
        self.clips: set[int] = set()
        self.taps: Counter[int] = Counter()
        self.first_heard: float | None = None  # time.perf_counter() when the first loop was heard
        playing = perf.clock.position().frame
        if isinstance(playing, ResumeLoop) and playing.offered is not None:  # heard since before the model loaded
            self.first_heard = playing.offered + perf.clock.latency
        self._serial, self._fraction = -1, 0.0
        self.link = None  # the Ableton Link session, from start() with options.link

    def _preset_player(self, presets, library):
        from immersions.control.presets import PresetLibrary, PresetPlayer, shipped_presets_dir, user_presets_dir

        if library is None:  # the user's folder stays last: the library saves there
            folders = [shipped_presets_dir(), *(Path(f) for f in self.options.preset_folders), user_presets_dir()]
            library = PresetLibrary(folders)
        if presets is None:
            hub = self.hub
            presets = PresetPlayer(hub, library, lambda: loop_seconds(hub.params))
        return presets, library

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start dreaming (the saved loop, if any, is already playing: see install_performance)."""
        if self.options.link:
            from immersions.control.link import LinkSession

            clock = self.perf.clock
            self.link = LinkSession(self.hub, clock if clock.follows_link else None).start()
        self.perf.start()

    def close(self) -> None:
        """Keep the loop heard now for the next start; stop beating."""
        if self.link is not None:
            self.link.close()
        frame = self.perf.heard.frame
        if frame is not None and frame.serial > RESUME_SERIAL and self._good(frame):
            self.state.save_clip(frame)
        if self.heartbeat is not None:
            self.heartbeat.close()
        self.curtain.release()

    # -- per frame ------------------------------------------------------------------------------------

    def tick(self, dt: float, *, target, now: datetime | None = None, began: float | None = None) -> None:
        """One display frame: decide, draw into `target` (a framebuffer, e.g. ctx.screen), beat.
        `began`: when the window's pacer let the frame start (the HUD's frame rate counts it)."""
        perf, hub = self.perf, self.hub
        now = now or datetime.now()
        self._opening_hours(now)
        heard = perf.heard  # as drawn last frame
        new_loop = self._count_loop(heard)
        frame = heard.frame if heard.serial >= 0 else None
        if self.open:
            self.pilot.tick(self.loops, frame)
            if new_loop and frame is not None:
                self._heard_loop(frame)
        if self.fade_meter is not None:
            self.fade_meter.tick()
        if self.presets is not None:
            self.presets.tick(dt)
        self._set_volume(self.rider.step(dt) * self.level)
        if self.level > 0.0:
            perf.frame(dt, target, began)
            self.curtain.draw(target, 1.0 - self.level)
        else:  # closed: a black screen, and the map is not drawn at all
            hub.apply()
            target.use()
            target.clear(0.0, 0.0, 0.0, 1.0)
        self.frames += 1
        if self.heartbeat is not None and self.heartbeat.due():
            self._beat(target)

    def _opening_hours(self, now: datetime) -> None:
        self.level = self.hours.level(now)
        is_open = self.hours.is_open(now)
        if is_open != self.open:
            log.info("%s (opening hours %s)", "opening" if is_open else "closing", self.hours)
            self.open = is_open
            self.perf.rest(not is_open)  # dreaming rests overnight, on both decks
            if is_open:
                self.guard.restarted()  # the hours closed in between: judge the loop afresh
            elif self.hub.params["listen"]:
                self.hub.set("listen", False, AUTOPILOT)  # nobody is there: the listen thread rests too

    def _count_loop(self, heard) -> bool:
        """True when a new loop began since the last frame (a new clip, or the playhead wrapped)."""
        if heard.serial < 0:
            return False
        new = heard.serial != self._serial or heard.fraction + 0.5 < self._fraction
        self._serial, self._fraction = heard.serial, heard.fraction
        if new:
            self.loops += 1
            if self.first_heard is None:
                self.first_heard = time.perf_counter()
        return new

    def _heard_loop(self, frame) -> None:
        if frame.serial > RESUME_SERIAL:
            self.clips.add(frame.serial)
        taps = len(self.perf.model.taps)
        self.taps[min(taps - 1, int(round(self.hub.params["layer"] * (taps - 1))))] += 1
        reading = self.guard.reading
        if reading is not None and reading.serial == frame.serial:
            self.rider.observe(reading)
        every = max(1, self.options.save_every_loops)
        if frame.serial > RESUME_SERIAL and self.loops % every == 0 and self._good(frame):
            try:
                self.state.save_clip(frame)
                self.saved += 1
            except OSError as err:  # a full disk must not stop the show
                log.warning("cannot save the loop to %s: %s", self.state.folder, err)

    def _good(self, frame) -> bool:
        reading = self.guard.reading
        if reading is None or reading.serial != frame.serial:
            return False
        return reading.loudness > self.options.autopilot.silence_lufs and math.isfinite(frame.objective)

    def _set_volume(self, volume: float) -> None:
        volume = round(min(1.5, max(0.0, volume)), 4)
        current = self.hub.params["volume"]
        if abs(current - volume) > VOLUME_STEP or (volume == 0.0 and current != 0.0):
            self.hub.set("volume", volume, AUTOPILOT)

    def _beat(self, target) -> None:
        w, h = self.perf.size
        image = np.frombuffer(target.read(viewport=(0, 0, w, h), components=3, alignment=1), np.uint8)
        stats = self.perf.clock.stats()
        heard = self.perf.heard
        self.heartbeat.beat(frames=self.frames, **picture_summary(image.reshape(h, w, 3)),
                            should_play=self.level >= 1.0, level=round(self.level, 3), loops=self.loops,
                            audio_serial=heard.serial,
                            audio_callbacks=stats.callbacks if stats is not None else self.frames,
                            selections=self.pilot.selections, cue=self._cue_figures(),
                            fade_ready=self.fade_meter.summary() if self.fade_meter is not None else None)

    # -- the figures -----------------------------------------------------------------------------------

    def figures(self) -> dict:
        """The command contract's figures, plus what moved the piece on and why."""
        stats = self.perf.clock.stats()
        loudness = self.rider.heard_loudness()
        return {
            "clips_played": len(self.clips),
            "selections": self.pilot.selections,
            "taps_visited": len(self.taps),
            "late_callbacks": stats.late_callbacks if stats is not None else 0,
            "underruns": stats.underruns if stats is not None else 0,
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_end_mb": round(_rss_mb(self.process), 1),
            # recoveries without a new process: the audio device reopened (the watchdog counts process restarts)
            "restarts": stats.reopens if stats is not None else 0,
            "fades": self.pilot.fades,  # two decks: fades to the prepared deck
            # ... and how much of each one's prepared rise is heard when it ends (install/fades.py)
            "fade_ready": self.fade_meter.figures() if self.fade_meter is not None else None,
            "loop_restarts": self.pilot.restarts,  # the autopilot started the loop again from a start clip
            "loudness_lufs": round(loudness, 2) if loudness is not None else None,
            "moved_on": dict(self.pilot.reasons),
            "loops": self.loops,
            "frames": self.frames,
            "volume": self.hub.params["volume"],
            "loops_saved": self.saved,
            "mode": "scenes" if isinstance(self.pilot, Curator) else "autopilot",
            "hours": str(self.hours),
            "bpm": self.hub.params["bpm"],
            # Ableton Link (--link): peers seen now and moves of the loop back onto the shared bar
            "link": None if self.link is None else {"peers": self.link.status.peers,
                                                    "tempo": round(self.link.status.tempo, 3),
                                                    "realigns": stats.realigns if stats is not None else 0},
            # the room's sound in (--input): None when there is none (or it did not open)
            "sound_in": self._sound_in_figures(),
            # the cue output (--cue-device): whether it plays now, and how often its device came back
            "cue": self._cue_figures(),
        }

    def _cue_figures(self) -> dict | None:
        cue = getattr(self.perf.clock, "cue", None)
        return None if cue is None else cue.status()

    def _sound_in_figures(self) -> dict | None:
        perf = self.perf
        if perf.sound_in is None or perf.listening is None:
            return None
        heard = perf.listening.latest()
        return {"name": perf.sound_in.name, "listen": bool(self.hub.params["listen"]),
                "listen_windows": heard.serial if heard is not None else 0,
                "listened_selections": getattr(self.pilot, "listened", 0),
                "captures_asked": getattr(self.pilot, "captures", 0), "captured": perf.listening.captured,
                "input_s": round(perf.sound_in.ring.written / perf.sound_in.sample_rate, 2),
                "input_faults": perf.sound_in.faults}
