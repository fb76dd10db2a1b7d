"""Ableton Link: the band's tempo and bars, shared over the local network (through aalink).

`--link` on `perform` and `install` joins the Link session:
- our `bpm` follows the session's tempo: the change goes through the control hub with the
  source "link", so MIDI feedback and OSC subscribers see it like any other change;
- a tempo we set (overlay, MIDI, OSC, presets, autopilot) is proposed to the session;
- the loop's start is held on the session's bar: a loop of `bars` bars is a Link quantum of
  4 x bars beats, and the player (see `BarGrid` in devices/grid.py) moves its playhead onto
  that quantum's phase, with a short crossfade, whenever it drifts off.

aalink wants an asyncio loop, so the session lives on its own thread with its own loop. That
thread polls the session a few dozen times a second and publishes, for the audio callback,
a `BarGrid`: one immutable object, swapped by reference (no lock in the callback). Link's
clock (CLOCK_MONOTONIC_RAW on Linux) is not time.perf_counter(), so each grid pairs a beat
read from Link with a perf_counter reading taken around it, keeping only tight pairs.

Tempi outside our `bpm` range are folded by octaves (a 240 BPM session is our 120 with two
Link beats to our one), so the bars still line up.

Link discovers peers by multicast on every network interface: tests and benchmarks run it
only inside a private network namespace (see tests/test_link.py and bench/link.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass

from immersions.devices.grid import BarGrid
from immersions.registry import BEATS_PER_BAR, REGISTRY
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

LINK = "link"  # the control hub source of a change that came from the Link session
POLL_S = 0.02  # how often the session is read (tempo, peers, the beat clock)
PAIR_S = 0.0005  # a beat reading counts only when the perf_counter readings around it are this close
TEMPO_EPSILON = 0.005  # BPM: smaller differences are Link's rounding, not a tempo change


def fold_tempo(link_bpm: float, low: float, high: float) -> tuple[float, float]:
    """(our bpm, Link beats per our beat): the session's tempo halved or doubled into low .. high."""
    factor = 1.0
    bpm = float(link_bpm)
    while bpm > high and bpm / 2.0 >= low:
        bpm, factor = bpm / 2.0, factor * 2.0
    while bpm < low and bpm * 2.0 <= high:
        bpm, factor = bpm * 2.0, factor / 2.0
    return min(max(bpm, low), high), factor


def quantum_beats(bars: int, factor: float = 1.0) -> float:
    """Link beats in one loop of `bars` bars of 4/4."""
    return BEATS_PER_BAR * int(bars) * factor


@dataclass(frozen=True)
class LinkStatus:
    """What the HUD shows."""

    enabled: bool
    peers: int
    tempo: float  # the session's tempo (BPM, as Link counts it)
    phase: float  # beats into the loop-long quantum, 0 .. quantum
    quantum: float

    @property
    def fraction(self) -> float:
        """0 .. 1 through the loop-long bar group: the HUD's phase bar."""
        return min(1.0, max(0.0, self.phase / self.quantum)) if self.quantum > 0 else 0.0

    def line(self) -> str:
        """One HUD line: 'link: 1 peer, 133.00 BPM, bar 2 beat 3 of 2'."""
        if not self.enabled:
            return "link: joining ..."
        bar, beat = divmod(int(self.phase), BEATS_PER_BAR)
        bars = max(1, round(self.quantum / BEATS_PER_BAR))
        return (f"link: {self.peers} peer{'' if self.peers == 1 else 's'}, {self.tempo:.2f} BPM, "
                f"bar {bar + 1} beat {beat + 1} of {bars}")


def _load_aalink():
    try:
        import aalink
    except ImportError as err:
        raise ImmersionsError(f"--link needs the aalink package ({err}); install it where immersions runs: "
                              f"`{sys.executable} -m pip install 'aalink>=0.2.3'` (in a checkout: "
                              "`.venv/bin/pip install -e '.[link]'`), or play without --link") from err
    return aalink


class LinkSession:
    """One Link peer, bound to a control hub and (optionally) a player.

    `start()` joins, `close()` leaves; the session's tempo reaches the hub as a request
    (applied with the next frame's `hub.apply()`). The thread never touches the performance itself: only the hub's
    queue (thread-safe) and the player's grid (one reference)."""

    def __init__(self, hub, player=None, bars: int | None = None):
        self._aalink = _load_aalink()
        self.hub = hub
        self.player = player
        params = hub.params
        self._bars = int(bars if bars is not None else params["bars"])
        bpm = REGISTRY["bpm"]
        self._low, self._high = float(bpm.minimum), float(bpm.maximum)
        self._factor = 1.0
        self._proposed: queue.SimpleQueue = queue.SimpleQueue()  # our tempi, for the thread to give to Link
        self._seen_tempo: float | None = None  # the session tempo last handed to the hub
        self._status = LinkStatus(False, 0, float(params["bpm"]), 0.0, quantum_beats(self._bars))
        self.grid: BarGrid | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._start_bpm = float(params["bpm"])
        hub.listen(self._on_change)

    # -- main thread -----------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> "LinkSession":
        self._thread = threading.Thread(target=self._run, name="immersions-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.close()
            raise ImmersionsError(f"Ableton Link did not start ({self._error or 'no answer'}); "
                                  "check the network, or play without --link")
        log.info("Ableton Link on: %.2f BPM, a loop is %g beats", self._start_bpm, quantum_beats(self._bars))
        return self

    @property
    def status(self) -> LinkStatus:
        return self._status

    def _on_change(self, change) -> None:
        """(hub listener, main thread) Our tempo changes go to the session; the loop length too."""
        if change.name == "bars":
            self._bars = int(change.value)
        elif change.name == "bpm" and change.source != LINK:
            self._proposed.put(float(change.value))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.player is not None:
            self.player.set_grid(None)
        self.hub.unlisten(self._on_change)

    # -- the Link thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._session())
        except Exception as err:  # Link never takes the music down: the loop runs free without it
            self._error = err
            log.error("Ableton Link stopped (%s: %s); the loop runs on its own clock", type(err).__name__, err)
            self._ready.set()
            if self.player is not None:
                self.player.set_grid(None)

    async def _session(self) -> None:
        link = self._aalink.Link(self._start_bpm)
        link.quantum = quantum_beats(self._bars)
        link.enabled = True
        self._ready.set()
        try:
            while not self._stop.is_set():
                self._poll(link)
                await asyncio.sleep(POLL_S)
        finally:
            link.enabled = False

    def _poll(self, link) -> None:
        proposed = None
        while not self._proposed.empty():  # only the newest counts
            proposed = self._proposed.get_nowait()
        if proposed is not None and abs(proposed * self._factor - link.tempo) > TEMPO_EPSILON:
            link.tempo = proposed * self._factor
            self._seen_tempo = link.tempo  # ours: not handed back to the hub
        tempo = link.tempo
        if self._seen_tempo is None or abs(tempo - self._seen_tempo) > TEMPO_EPSILON:
            self._seen_tempo = tempo
            ours, self._factor = fold_tempo(tempo, self._low, self._high)
            if abs(ours - float(self.hub.params["bpm"])) > TEMPO_EPSILON:
                self.hub.request("bpm", round(ours, 3), LINK)
        quantum = quantum_beats(self._bars, self._factor)
        if link.quantum != quantum:
            link.quantum = quantum
        grid = self._grid(link, tempo, quantum)
        if grid is not None:
            self.grid = grid
            if self.player is not None:
                self.player.set_grid(grid)
        beat = grid.beat if grid is not None else link.beat
        self._status = LinkStatus(True, int(link.num_peers), tempo, beat % quantum, quantum)

    @staticmethod
    def _grid(link, tempo: float, quantum: float) -> BarGrid | None:
        """The beat clock in perf_counter time, from a tight (perf_counter, beat, perf_counter) read."""
        for _ in range(3):
            before = time.perf_counter()
            beat = link.beat
            after = time.perf_counter()
            if after - before <= PAIR_S and math.isfinite(beat):
                return BarGrid(0.5 * (before + after), beat, tempo, quantum)
        return None  # preempted every time: keep the last grid, it stays good for a while
