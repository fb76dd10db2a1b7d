"""The cue output: a second audio device (headphones) that plays the deck off air, or a blend
of it with the master (`cue_mix`), on the same bar as the master output.

The player's callback renders both decks, so it writes the cue's block too: into a `CueRing`,
a ring of samples made once, that the cue device's callback reads. One writer (the player's
callback) and one reader (the cue's callback), each owning its own counter: the writer
publishes how many frames it has written (`written`, one int) after the samples are in; the
reader keeps its own place. Neither takes a lock or allocates.

The cue is heard at the same moment as the master: the master's device queues (periods - 1)
blocks; the cue's device queues one (two periods of the same size) and the ring the rest, so
the reader runs (periods - 2) blocks behind the writer (at least MIN_LEAD_BLOCKS). That lead is also what lets the
player's callback come late without the cue running dry, as its own device's buffer does
for the master. If the reader falls too far behind or
catches up with the writer (two devices' clocks drift apart over hours), it jumps back to the
lead and counts a `resync`; a block the ring cannot fill is completed with silence and counted
as an underrun.

The headphones' device can go away (a USB interface unplugged, a driver hiccup). `check()`,
called with the player's (about once a second), sees a cue callback that has not run for
STALL_S: the cue device is closed, the ring taken off the renderer (the player's callback no
longer renders the deck off air for it), and one warning says the cue is off. The same device,
by its name, is then looked for on a thread at the next check and every RETRY_S after; when it
opens, the ring starts over (the reader waits for its lead again), the cue plays on it, one line
says so and `reopens` counts it. Never the default output (that is usually the master's
speakers: the audience would hear the deck off air), nor the NULL device unless it was the one
asked for. The master plays on untouched throughout.
"""

from __future__ import annotations

import logging
import threading
import time

import miniaudio
import numpy as np

from immersions.devices.deck import SILENT, Playhead
from immersions.devices.shell import (CLOSE_S, RETRY_S, backends, callback_stream, close_device, find_output,
                                      open_playback, playbacks, silent_for, why)
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

RING_FRAMES = 1 << 16  # about 1.4 s at 48 kHz: far more than the two callbacks ever drift apart
CUE_PERIODS = 2  # the cue device's own buffer: two periods of the player's size (one queued)
MIN_LEAD_BLOCKS = 2  # never less: one block of lead is less than the two callbacks' jitter on a NULL device
CHANNELS = 2


class CueRing:
    """Mono samples from the player's callback to the cue's, with the master frame of each."""

    def __init__(self, lead_blocks: int = 1, frames: int = RING_FRAMES, burst_blocks: int = CUE_PERIODS - 1):
        self.lead_blocks = max(1, int(lead_blocks))  # the reader keeps this many of its blocks behind the writer
        # a device asks for its whole queue at once when it starts: the reader starts that much further back
        self.burst_blocks = max(0, int(burst_blocks))
        self.frames = int(frames)
        self._ring = np.zeros(self.frames, np.float32)
        self.written = 0  # master frames written: published after the samples are in
        self.first_frame = -1  # the master output frame of the ring's frame 0
        self.read = 0  # the reader's place (its own)
        self.underruns = 0
        self.resyncs = 0
        self._started = False

    # -- the player's callback ---------------------------------------------------------------------

    def write(self, block: np.ndarray, master_frame: int) -> None:
        """(writer) Append a block; `master_frame`: the master output frame of its first sample."""
        n, at = len(block), self.written % self.frames
        if self.first_frame < 0:
            self.first_frame = master_frame - self.written
        k = min(n, self.frames - at)
        np.copyto(self._ring[at:at + k], block[:k])
        if k < n:
            np.copyto(self._ring[:n - k], block[k:])
        self.written += n

    # -- the cue's callback ------------------------------------------------------------------------

    def read_into(self, out: np.ndarray) -> int:
        """(reader) Fill `out` with the next samples; returns the ring frame of out[0] (the master
        frame is that plus `first_frame`). Silence before the ring holds a lead, and where it ran dry."""
        n = len(out)
        written = self.written
        lead = self.lead_blocks * n
        if not self._started:
            start = lead + self.burst_blocks * n
            if written < start + n:
                out.fill(0.0)
                return -1
            self._started = True
            self.read = written - start
        avail = written - self.read
        if avail > self.frames // 2 or avail < 0:  # far behind (or wrapped): back to the lead
            self.read = written - lead
            self.resyncs += 1
            avail = lead
        start = self.read
        k = min(n, avail)
        at = start % self.frames
        first = min(k, self.frames - at)
        np.copyto(out[:first], self._ring[at:at + first])
        if first < k:
            np.copyto(out[first:k], self._ring[:k - first])
        if k < n:
            out[k:].fill(0.0)
            self.underruns += 1
        self.read = start + k
        return start

    def restart(self) -> None:
        """Start over, while neither side is attached (the cue's device closed, the ring off the
        renderer): the reader waits for a fresh lead, the master frames are taken afresh."""
        self.written = 0
        self.first_frame = -1
        self.read = 0
        self._started = False


class CueOutput:
    """The cue output on its own device: plays what the player's renderer writes into its ring.

    renderer: the player's LoopRenderer (the ring is attached to it while the cue plays).
    device: an index into `shell.list_devices(backend)` or part of a name; backend as the player's.
    sample_rate: the player's rate (the ring's samples are at it). buffer_ms, periods: as the player's.
    """

    def __init__(self, renderer, device: int | str, backend: str | None, sample_rate: int,
                 buffer_ms: float = 120.0, periods: int = 6):
        device_id, self.device_name = find_output(device, backend)  # one line naming the outputs there are
        self.renderer = renderer
        self._backend_name = backend
        self.sample_rate = int(sample_rate)
        self.periods = CUE_PERIODS
        self.period_ms = max(1, round(float(buffer_ms) / periods))  # the player's period
        self.ring = CueRing(lead_blocks=max(MIN_LEAD_BLOCKS, periods - CUE_PERIODS))
        self.callbacks = 0
        self.faults = 0
        self.reopens = 0  # times the device came back after it was gone
        self.fault: BaseException | None = None
        self._grow(16384)
        self._pub_seq = 0  # odd while the callback rewrites what it publishes (as the player's clock)
        self._pub_t, self._pub_frame = 0.0, -1
        self._last_t = self._opened_t = 0.0  # the last callback; when the device started (check() reads them)
        self._lock = threading.Lock()  # check(), the look for the device and close(); never the callback
        self._looking: threading.Thread | None = None
        self._next_look = 0.0  # while the device is gone: when check() looks for it next
        self._back_t: float | None = None  # when it last came back
        self._closed = False
        try:
            opened = self._open(device_id)
        except miniaudio.MiniaudioError as err:
            raise ImmersionsError(f"cannot open the cue output {self.device_name} ({why(err)}); "
                                  "choose another --cue-device (immersions devices lists them) or none") from err
        try:
            self._start(opened)
        except miniaudio.MiniaudioError as err:
            renderer.cue = None
            close_device(opened)
            raise ImmersionsError(f"cannot start the cue output {self.device_name} ({why(err)}); "
                                  "choose another --cue-device or none") from err
        self._device: miniaudio.PlaybackDevice | None = opened  # None while it is gone
        self.backend = opened.backend
        log.info("cue: %s on %s", self.device_name, self.backend)

    def _open(self, device_id) -> miniaudio.PlaybackDevice:
        return open_playback(device_id, CHANNELS, self.sample_rate, self.period_ms, CUE_PERIODS,
                             backends(self._backend_name))

    def _start(self, device: miniaudio.PlaybackDevice) -> None:
        """Attach the ring and start `device` with a fresh callback generator."""
        stream = callback_stream(self._callback)
        next(stream)
        self.renderer.cue = self.ring
        self._opened_t = time.perf_counter()
        device.start(stream)

    def _grow(self, frames: int) -> None:
        self._out = np.zeros((frames, CHANNELS), np.float32)
        self._mono = np.zeros(frames, np.float32)
        self._bytes_all, self._bytes, self._bytes_n = memoryview(self._out).cast("B"), None, -1

    @property
    def latency(self) -> float:
        """Seconds from a cue callback to its first sample in the headphones (its device's queue)."""
        return (self.periods - 1) * self.period_ms / 1000.0

    @property
    def underruns(self) -> int:
        return self.ring.underruns

    @property
    def playing(self) -> bool:
        """False while the device is gone (and after close)."""
        return self._device is not None and not self._closed

    def status(self) -> dict:
        """What the installation's figures, bench soak and the HUD report of the cue."""
        return {"device": self.device_name, "playing": self.playing, "reopens": self.reopens,
                "underruns": self.underruns}

    def line(self) -> str:
        """The HUD's line for the cue."""
        back = f", back {self.reopens}x" if self.reopens else ""
        return f"cue: {self.device_name}, {'playing' if self.playing else 'gone, looking for it'}{back}"

    def heard_frame(self, now: float | None = None) -> float | None:
        """The master output frame heard in the headphones at `now` (None before the ring plays)."""
        while True:
            seq = self._pub_seq
            t, frame = self._pub_t, self._pub_frame
            if seq % 2 == 0 and seq == self._pub_seq:
                break
            time.sleep(0)
        if frame < 0:
            return None
        now = time.perf_counter() if now is None else now
        return frame + (now - t - self.latency) * self.sample_rate

    def position(self, now: float | None = None) -> Playhead:
        """What the headphones play now on the cue deck (the deck off air)."""
        frame = self.heard_frame(now)
        if frame is None:
            return SILENT
        return self.renderer.playhead_at(frame, 1 - self.renderer.on_air)

    def _callback(self, n: int):
        t = time.perf_counter()
        self._last_t = t
        self.callbacks += 1
        if n > len(self._mono):
            self._grow(max(n, 2 * len(self._mono)))  # only if a device asks for a huge block
        mono = self._mono[:n]
        try:
            start = self.ring.read_into(mono)
        except Exception as err:  # never raise into miniaudio: play silence
            self.fault, start = err, -1
            self.faults += 1
            mono.fill(0.0)
        out = self._out[:n]
        np.copyto(out, mono[:, None])
        self._pub_seq += 1
        self._pub_t = t
        self._pub_frame = start + self.ring.first_frame if start >= 0 else -1
        self._pub_seq += 1
        if n != self._bytes_n:  # miniaudio copies the bytes: the same view while the block size holds
            self._bytes, self._bytes_n = self._bytes_all[:n * CHANNELS * 4], n
        return self._bytes

    # -- device health (the thread that calls the player's check) --------------------------------------

    def check(self, now: float | None = None) -> bool:
        """Cheap; the player's check() calls it (about once a second). True while the cue plays.
        A callback silent for STALL_S (since the last one, or since the device started): the
        device is gone, closed and the ring taken off the renderer. While it is gone, it is
        looked for (by its name, on a thread) at the next check and every RETRY_S after."""
        if self._closed:
            return False
        now = time.perf_counter() if now is None else now
        device = self._device
        if device is None:
            if now >= self._next_look and not (self._looking is not None and self._looking.is_alive()):
                self._next_look = now + RETRY_S
                self._looking = threading.Thread(target=self._come_back, name="cue-retry", daemon=True)
                self._looking.start()
            return False
        silent = silent_for(lambda: max(self._last_t, self._opened_t), now, self.period_ms)
        if silent is None:
            return True
        with self._lock:
            if self._closed or self._device is not device:
                return self.playing
            self._device = None
            self.renderer.cue = None  # the player's callback stops rendering the deck off air for it
            self._pub_seq += 1  # nothing is heard in the headphones now (the callback runs no more)
            self._pub_frame = -1
            self._pub_seq += 1
            close_device(device)
            # a device that came back only to fall silent again is not looked for at once
            back_lately = self._back_t is not None and time.perf_counter() - self._back_t < RETRY_S
            self._next_look = now + (RETRY_S if back_lately else 0.0)
        log.warning("cue: the headphones' output %s is gone (no callback for %.1f s); the cue is off until it "
                    "comes back, the master plays on", self.device_name, silent)
        return False

    def _come_back(self) -> bool:
        """(a thread) Open the cue's device again, by its name, never another: when it opens, the
        cue plays on it again. Quiet while it is still gone. True when it came back."""
        try:
            device = self._open(self._find_again())
        except (miniaudio.MiniaudioError, ImmersionsError) as err:
            log.debug("cue: %s is still gone (%s)", self.device_name, why(err))
            return False
        with self._lock:
            if self._closed or self._device is not None:
                close_device(device)
                return False
            self.ring.restart()  # nobody writes or reads it now
            try:
                self._start(device)
            except miniaudio.MiniaudioError as err:
                self.renderer.cue = None
                close_device(device)
                log.debug("cue: %s opens but does not start (%s)", self.device_name, why(err))
                return False
            self._device, self.backend = device, device.backend
            self.reopens += 1
            self._back_t = time.perf_counter()
        log.info("cue: %s is back; the cue plays on it again", self.device_name)
        return True

    def _find_again(self):
        """The id of the output with the cue's device's very name (never the default, nor a near name)."""
        for found in playbacks(self._backend_name):
            if found["name"] == self.device_name:
                return found["id"]
        raise ImmersionsError(f"{self.device_name} is not among the outputs")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            device, self._device = self._device, None
            self.renderer.cue = None
            if device is not None:
                close_device(device)
        if self._looking is not None:
            self._looking.join(timeout=CLOSE_S)
        if self.fault is not None:
            log.error("cue callback failed (%s: %s)", type(self.fault).__name__, self.fault)

    def __enter__(self) -> "CueOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
