"""Listen mode and capture: the network's response to the room's sound, in time.

A `ListenEngine` thread (never the render thread, never the audio callback) does two jobs:
- listen: several times a second (16 times a loop, 4 .. 12 a second) it takes the last loop-length of input from the ring
  (resampled to the model's rate), runs the network over it as a live window (zero-padded,
  not circular) and publishes a `ListenFrame`, the same activation table a DreamFrame carries,
  by swapping one reference. The renderer draws it at `ListenFrame.fraction_at(now)`, which
  walks through the newest window in real time, one refresh behind the newest input, so the
  glow moves smoothly instead of jumping at each refresh.
- capture: a request names a moment (the next bar boundary of the heard loop) and a length
  (N bars); once the ring holds the input up to that moment, the N bars before it go, at the
  model's rate, to the request's callback (the performance makes them the start clip, or the
  clip `mix_original` blends in).
Dreaming goes on, or stays paused, meanwhile: this thread only reads the model.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from immersions.devices.capture import SoundIn
from immersions.dream.engine import activation_table
from immersions.errors import ImmersionsError
from immersions.frames import FRAMES_PER_LOOP
from immersions.registry import loop_seconds

log = logging.getLogger(__name__)

# refreshes: 16 per loop, so that a sample waits at most 1/16 loop for its window and the
# network's pass has the other 1/16 of the loop-length / 8 budget; but never fewer than 4 or
# more than 12 a second (a pass costs about 0.1 s of one core for a 4-s window on the default model)
REFRESHES_PER_LOOP = 16
LISTEN_HZ_MIN, LISTEN_HZ_MAX = 4.0, 12.0
CAPTURE_GIVE_UP_S = 2.0  # input that has not reached the ring this long after its moment never will (a dead input)


# -- the math: pure functions ----------------------------------------------------------------

def seconds_to_next_bar(fraction: float, loop_seconds: float, bars: int) -> float:
    """From a loop fraction to the next bar boundary of a `bars`-bar loop, in seconds: 0 on a
    boundary, never a whole bar (a press just after a downbeat waits for the next one)."""
    if loop_seconds <= 0 or bars < 1:
        return 0.0
    position = (fraction % 1.0) * bars  # in bars
    ahead = math.ceil(position - 1e-9) - position
    return max(0.0, ahead) * loop_seconds / bars


def refresh_period(loop_seconds: float) -> float:
    """Seconds between listen refreshes for a loop of this length."""
    return min(1.0 / LISTEN_HZ_MIN, max(1.0 / LISTEN_HZ_MAX, loop_seconds / REFRESHES_PER_LOOP))


def window_fraction(now: float, end_time: float, seconds: float, delay: float) -> float:
    """Where in a window of input (ending at end_time, `seconds` long) the moment now - delay
    lies, as a fraction 0 .. 1 (held at the ends)."""
    if seconds <= 0:
        return 1.0
    into = (now - delay - (end_time - seconds)) / seconds
    return min(1.0 - 0.5 / FRAMES_PER_LOOP, max(0.0, into))


# -- what crosses threads --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ListenFrame:
    serial: int
    activations: np.ndarray  # float16 [nodes, FRAMES_PER_LOOP], as in a DreamFrame
    model_name: str  # the model whose map it belongs to (DreamFrame.model_name)
    end: int  # ring index one past the newest input sample in the window
    end_time: float  # perf_counter time at which that sample was heard in the room
    seconds: float  # the window's length (the loop's length when it was taken)
    published: float  # perf_counter time of publication
    compute_s: float  # the network's time for this window
    period: float  # seconds between refreshes

    def fraction_at(self, now: float | None = None) -> float:
        """Where the renderer draws this window at `now`: the input heard one refresh and one
        computation ago, so that the next window takes over where this one ends."""
        now = time.perf_counter() if now is None else now
        delay = (self.published - self.end_time) + self.period
        return window_fraction(now, self.end_time, self.seconds, delay)


@dataclass(frozen=True)
class CaptureRequest:
    end_time: float  # perf_counter time the captured input ends (a bar boundary)
    seconds: float  # its length
    deliver: Callable[[np.ndarray], None]  # gets the clip at the model's rate, on the listen thread


class ListenEngine:
    """Listen mode and capture on their own thread. `model()` returns the (model, stats) to
    listen with, `params()` the newest parameter snapshot; both are read each refresh.
    rate_hz: refreshes a second; None follows the loop (`refresh_period`)."""

    def __init__(self, sound_in: SoundIn, model: Callable, params: Callable, rate_hz: float | None = None):
        self.sound_in = sound_in
        self._model, self._params = model, params
        self._fixed = None if rate_hz is None else 1.0 / float(rate_hz)  # None: refresh_period(loop)
        self.period = self._fixed or 1.0 / LISTEN_HZ_MIN
        self._frame: ListenFrame | None = None
        self._serial = 0
        self._captures: list[CaptureRequest] = []
        self._lock = threading.Lock()  # the capture list, between requesting threads and this one
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.captured = 0
        self.error: str | None = None

    # -- any thread --------------------------------------------------------------------------

    def latest(self) -> ListenFrame | None:
        return self._frame

    def capture(self, end_time: float, seconds: float, deliver: Callable[[np.ndarray], None]) -> None:
        """Take `seconds` of input ending at perf_counter time `end_time`, once it has been heard."""
        limit = self.sound_in.ring.size / self.sound_in.sample_rate
        if not 0 < seconds <= limit:
            raise ImmersionsError(f"capture of {seconds:.1f} s: the input ring keeps {limit:.0f} s; "
                                  "capture fewer bars or raise the tempo")
        with self._lock:
            self._captures.append(CaptureRequest(end_time, seconds, deliver))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._captures)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="listen", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the listen thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_refresh = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            try:
                self._serve_captures(now)
                params = self._params()
                if params["listen"] and now >= next_refresh:
                    next_refresh = max(next_refresh + self.period, now)
                    self.refresh(params)
            except Exception as err:  # keep listening through a bad window; say why once per kind
                why = f"{type(err).__name__}: {err}"
                if why != self.error:
                    log.warning("listen: %s", why)
                self.error = why
            wait = next_refresh - time.perf_counter() if self._params()["listen"] else self.period
            with self._lock:
                for request in self._captures:
                    wait = min(wait, request.end_time - time.perf_counter() + 0.002)
            self._wake.wait(min(self.period, max(0.002, wait)))
            self._wake.clear()

    def refresh(self, params) -> ListenFrame:
        """Run the network over the last loop-length of input and publish it (listen thread, or
        a caller that owns no thread, such as a benchmark)."""
        model, stats = self._model()
        rate = model.sample_rate
        seconds = loop_seconds(params)
        self.period = self._fixed or refresh_period(seconds)
        ring = self.sound_in.ring
        end, _ = ring.clock()
        audio = self.sound_in.window(seconds, rate, end)
        began = time.perf_counter()
        device = next(model.parameters()).device
        table, _, _ = activation_table(model, stats, torch.as_tensor(audio, device=device), circular=False)
        done = time.perf_counter()
        self._serial += 1
        frame = ListenFrame(self._serial, table, model.label, end,
                            ring.time_of(end), seconds, done, done - began, self.period)
        self._frame = frame
        return frame

    def _serve_captures(self, now: float) -> None:
        with self._lock:
            due = [r for r in self._captures if r.end_time <= now]
        if not due:
            return
        model, _ = self._model()
        rate = model.sample_rate
        ring = self.sound_in.ring
        for request in due:
            end = ring.index_at(request.end_time)
            if end > ring.written:
                if now - request.end_time > CAPTURE_GIVE_UP_S:
                    with self._lock:
                        self._captures.remove(request)
                    log.warning("capture dropped: the input stopped delivering sound (%s)", self.sound_in.name)
                continue  # heard, but not in the ring yet: the next pass takes it
            with self._lock:
                self._captures.remove(request)
            try:
                clip = self.sound_in.window(request.seconds, rate, end)
            except ImmersionsError as err:
                log.warning("capture failed: %s", err)
                continue
            self.captured += 1
            log.info("captured %.2f s of input (peak %.2f)", request.seconds, float(np.abs(clip).max(initial=0.0)))
            request.deliver(clip)
