"""The dream engine: a Dreamer in a background thread, steered by parameter snapshots,
publishing the newest DreamFrame after the first step that follows a command, then every
PUBLISH_EVERY_S (a frame costs a forward pass: on 2 CPU cores about an eighth of a step's
time), and when dreaming pauses.

Threads and what crosses them:
- callers (GUI, MIDI, OSC, CLI) call `update(...)`, `select(...)`, `set_start(...)`,
  `switch_model(...)`; these only validate and enqueue, never block on a step;
- the dream thread applies queued commands between steps, reads the newest snapshot
  (an immutable object, swapped by reference), steps, and publishes a DreamFrame by
  swapping one reference; `latest()` returns it without locks.
A change with a bad value is rejected with a logged one-line reason; the last good
snapshot stays in force and the engine keeps running.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from immersions.frames import FRAMES_PER_LOOP, HUD_BINS, HUD_FRAMES, DreamFrame
from immersions.registry import REGISTRY, Snapshot, loop_length
from immersions.dream.dreamer import Dreamer
from immersions.dream.objectives import Reading
from immersions.selection import Region, Selection, check_region, fits
from immersions.errors import ImmersionsError
from immersions.model.ear import Ear
from immersions.model.stats import TapStats

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 0.5  # between frames, unless a command asks for one at once (see DreamEngine._run)


class Steered:
    """The parameters of an engine (local or remote): an immutable snapshot, swapped whole."""

    params: Snapshot
    rejected: int

    def update(self, **changes) -> bool:
        """Apply parameter changes as one new snapshot; False (and logged) if any is invalid."""
        try:
            self.params = self.params.replace(**changes)  # one reference swap: atomic for readers
            return True
        except ImmersionsError as err:
            self.rejected += 1
            log.warning("rejected parameter change: %s (keeping the last good values)", err)
            return False

    def submit(self, snapshot: Snapshot) -> bool:
        """Replace all parameters with a snapshot from elsewhere (a preset, a remote client)."""
        if not isinstance(snapshot, Snapshot) or snapshot.registry is not REGISTRY:
            self.rejected += 1
            log.warning("rejected a snapshot that is not of the dreaming registry")
            return False
        self.params = snapshot
        return True


class Turns:
    """Engines that share one device step one at a time, in the order they asked: an engine
    that has stepped waits behind any other that is waiting, so two dreaming decks alternate
    steps. A paused engine does not ask, and the other steps on alone."""

    def __init__(self):
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._busy = False

    def __enter__(self) -> None:
        me = object()
        with self._changed:
            self._queue.append(me)
            while self._busy or self._queue[0] is not me:
                self._changed.wait()
            self._queue.popleft()
            self._busy = True

    def __exit__(self, *exc) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """Engines waiting for their turn now."""
        return len(self._queue)


class DreamEngine(Steered):
    status: str | None = None  # dreaming here: no link to a server to report
    connected = True

    def __init__(self, model: Ear, stats: dict[str, TapStats] | None, start: np.ndarray,
                 params: Snapshot | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 copies: int = 4, on_frame: Callable[[DreamFrame], None] | None = None, turns: Turns | None = None):
        self.params = params or REGISTRY.defaults()
        self.dreamer = Dreamer(model, stats, start, copies=copies, seed=seed, device=device)
        # the ear a selection is checked against: the one switched to last, even before the dream
        # thread takes it (a region for the new ear follows a switch at once)
        self.model = model
        self.device = torch.device(device)
        self.on_frame = on_frame
        self.turns = turns  # shared with the engines of the other decks on this device (a dream server's)
        self.rejected = 0
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._frame: DreamFrame | None = None
        self._serial = 0
        self._running = threading.Event()  # set while dreaming is not paused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rate = 0.0
        self.error: str | None = None

    # -- control (any thread) ---------------------------------------------------------------

    def select(self, region: Region, keep: bool = False) -> None:
        """Add `region` to the selection (keep) or make it the only one."""
        self._check(region)
        self._commands.put(("select", region, keep))

    def edit(self, region: Region) -> None:
        """Replace the region being edited (the last one); regions kept before it stay."""
        self._check(region)
        self._commands.put(("edit", region))

    def _check(self, region: Region) -> None:
        check_region(self.model.taps, region)  # now, in the caller's thread

    def set_start(self, clip: np.ndarray) -> None:
        self._commands.put(("start", np.asarray(clip, np.float32)))

    def set_blend(self, clip: np.ndarray) -> None:
        """A new clip for `mix_original` to blend in; the loop carries on (a captured clip)."""
        self._commands.put(("blend", np.asarray(clip, np.float32)))

    def switch_model(self, model: Ear, stats: dict[str, TapStats] | None) -> None:
        """Dream on another loaded model from the next step on; the loop carries over."""
        self.model = model
        self._commands.put(("model", model, stats))

    def latest(self) -> DreamFrame | None:
        return self._frame

    def another_deck(self, model: Ear, stats: dict[str, TapStats] | None, start: np.ndarray, params: Snapshot,
                     seed: int, on_frame: Callable[[DreamFrame], None], deck: str) -> "DreamEngine":
        """The engine for another deck of the same performance: a DreamEngine of its own here, taking
        dream steps in turn with this one (one device, one step at a time: with dream_decks=both the
        decks alternate instead of halving each step's speed)."""
        if self.turns is None:
            self.turns = Turns()
        return DreamEngine(model, stats, start, params, device=self.device, seed=seed, copies=self.dreamer.copies,
                           on_frame=on_frame, turns=self.turns)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="dream", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def selection(self) -> Selection:
        """The selection the dreamer holds now (commands not yet taken are not in it)."""
        return self.dreamer.selection

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._running.set()  # wake a paused thread so it can see the stop
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "DreamEngine":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the dream thread ----------------------------------------------------------------------

    def _apply_commands(self) -> bool:
        """Take the queued commands; True when there were any."""
        taken = False
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return taken
            taken = True
            kind = command[0]
            if kind == "select":
                self.dreamer.select(command[1], command[2])
            elif kind == "edit":
                self.dreamer.edit(command[1])
            elif kind == "start":
                self.dreamer.set_start(command[1])
            elif kind == "blend":
                self.dreamer.set_blend(command[1])
            elif kind == "model":
                loop, start, selection = self.dreamer.loop.cpu().numpy(), self.dreamer.start.cpu().numpy(), self.dreamer.selection
                old = self.dreamer
                self.dreamer = Dreamer(command[1], command[2], start, copies=old.copies, device=self.device)
                self.dreamer.loop = torch.as_tensor(loop, device=self.device)
                self.dreamer.steps, self.dreamer.nan_resets = old.steps, old.nan_resets
                # a selection refers to taps by index; keep it only if the new model has them
                if fits(self.dreamer.model.taps, selection):
                    self.dreamer.selection = selection

    def _run(self) -> None:
        last = published = time.perf_counter()
        pending = None  # (params, objective) of a step not published yet
        fresh = False
        while not self._stop.is_set():
            if pending is not None and not self._running.is_set():
                self._publish(*pending)  # paused: the frame shows the loop that is held
                pending = None
            self._running.wait()
            if self._stop.is_set():
                break
            try:
                fresh = self._apply_commands() or fresh
                params = self.params
                self.dreamer.set_length(loop_length(params, self.dreamer.sample_rate))
                if not self.dreamer.selection.regions:
                    time.sleep(0.01)
                    continue
                with self.turns if self.turns is not None else nullcontext():
                    report = self.dreamer.step(params)
                if report.paused:
                    if pending is not None:
                        self._publish(*pending)
                        pending = None
                    time.sleep(0.02)
                    continue
                now = time.perf_counter()
                rate = 1.0 / max(now - last, 1e-9)
                self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
                last = now
                pending = (params, report.objective)
                # a frame costs a forward pass: publish after a command (the map and the HUD
                # answer at once) and then every PUBLISH_EVERY_S; the player only takes a new
                # clip when the playing loop ends, every 2 s or more
                if fresh or now - published >= PUBLISH_EVERY_S:
                    self._publish(*pending)
                    pending, fresh, published = None, False, now
            except Exception as err:  # keep dreaming through a bad step; say why once per kind
                self.error = f"{type(err).__name__}: {err}"
                log.exception("dream step failed; resetting to the start clip")
                self.dreamer.set_start(self.dreamer.start.cpu().numpy())
                time.sleep(0.1)

    @torch.no_grad()
    def _publish(self, params: Snapshot, objective: float) -> None:
        d = self.dreamer
        activations, acts, spec = activation_table(d.model, d.stats, d.loop, circular=True)
        masks = []
        shapes = {i: tuple(a.shape[1:]) for i, a in enumerate(acts)}
        used = {r.tap: shapes[r.tap] for r in d.selection.regions}
        selected, quiet = d.selection.masks(used), d.selection.masks(used, quiet=True)
        quieted = []
        for i, tap in enumerate(d.model.taps):
            for chosen, out in ((selected, masks), (quiet, quieted)):
                m = chosen.get(i)
                out.append(m.any(dim=-1).reshape(-1) if m is not None else torch.zeros(tap.neurons, dtype=torch.bool))
        hud = F.interpolate(spec[None], size=(HUD_BINS, HUD_FRAMES), mode="area")[0, 0]
        hud = (hud.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        self._serial += 1
        frame = DreamFrame(self._serial, d.clip(params), d.sample_rate, activations, torch.cat(masks).cpu().numpy(),
                           objective, d.steps, self._rate, d.nan_resets, hud,
                           d.model.label, torch.cat(quieted).cpu().numpy())
        self._frame = frame
        if self.on_frame is not None:
            self.on_frame(frame)


@torch.no_grad()
def activation_table(model: Ear, stats: dict[str, TapStats] | None, audio: torch.Tensor, circular: bool = True):
    """What the map draws for a stretch of audio: (float16 [nodes, FRAMES_PER_LOOP] node-major,
    normalized where stats exist; the taps' activations; the scalogram). `circular`: a loop
    (its end runs into its start) or a window of live input (zero-padded). A tap with one
    time step holds its value across the loop."""
    audio = audio[None]
    heard = model.hear(audio, circular=circular)
    acts = model.read(heard)
    spec = model.picture(audio, heard, circular=circular)
    reading = Reading(model.taps, acts, spec, stats)
    rows = []
    for i in range(len(model.taps)):
        a = reading.normalized(i)[0]  # [C, P, T]
        rows.append(F.interpolate(a.reshape(1, -1, a.shape[-1]), size=FRAMES_PER_LOOP, mode="linear",
                                  align_corners=False)[0])
    return torch.cat(rows).to(torch.float16).cpu().numpy(), acts, spec
