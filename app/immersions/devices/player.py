"""The loop player: plays the newest dreamed clip in a loop through miniaudio.

What happens to a clip, in order:
- `offer(frame)` (any thread) resamples the clip to the device rate as a loop (padded
  circularly, so the seam stays clean), measures its largest sample-to-sample jump,
  and publishes it by writing one slot of a fixed table and one index;
- the audio callback keeps playing the current clip and takes the newest one only when
  its playhead crosses the loop end; the first `crossfade` seconds of the new clip are
  blended with the old loop wrapping round to its own start, with equal-power gains;
- master volume (ramped over one block, so moves never zipper) and a soft limiter;
- the mono mix goes to every output channel.

The callback copies prepared numpy buffers only: no locks, no logging, no buffers
allocated, and no clip ever freed there (slots are recycled by `offer`, outside it).
Everything it publishes for other threads is a plain int or float written in one step,
or a pair guarded by a sequence counter that readers check.

`LoopRenderer` is the callback body with no device behind it, so tests (and offline
renders) call `render(n)` directly. `LoopPlayer` is the thin shell around it: it opens
a device (falling back to miniaudio's NULL backend with one warning when there is no
sound card), times the callbacks, and tells the renderer's caller where the heard
playhead is, now, at the speaker.

Recording: the renderer's `tap` (a `Recorder`, see recorder.py) gets every finished block,
after the volume and the limiter: exactly what is heard. Since the tap lives in the renderer,
it records through a device reopen, and the offline clock can record the same way.

A shared bar (Ableton Link, see control/link.py): with a `BarGrid` (`set_grid`), every clip
starts where the shared bar group is at that moment, and when the loop drifts more than
ALIGN_TOLERANCE_S off it, the callback moves the playhead back with a REALIGN_S equal-power
crossfade (at most once a loop). As the bar line comes near (RETIME_LEAD_S), the loop's end
is re-timed onto it, so that every loop start lands on the bar: also the first one after a
tempo change, while the clip playing still has the old tempo's length. The callback learns
when its block will be heard from its own bar clock (`_bar_clock`: the earliest callback
times, not each one), reads the grid by one reference, and computes with plain floats: still
no lock and no buffer allocated.

Installations run for weeks, and devices vanish (an unplugged USB interface, a driver that
stalls). `LoopPlayer.check()`, called about once a second, notices a callback that has not run
for STALL_S and reopens the output (the same device if it is still listed, else the default,
else the NULL backend); the renderer, and so the loop and its position, carries on.

Where the parts live: the pure arithmetic (gains, limiter, loop resampling, positions against
the bar) in audio/mixing.py; the miniaudio shell (backends, finding and opening a device, the
lists of outputs) in devices/shell.py, shared with capture; the `BarGrid` in devices/grid.py.
This module is the loop player itself: the callback's body and its state, and the device it runs on.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import miniaudio
import numpy as np

from immersions.audio.mixing import fader_gains_into, soft_limit
from immersions.devices.cue import CueOutput
from immersions.devices.deck import SILENT, Deck, Playhead, PreparedClip, prepare_clip  # noqa: F401 (re-exported)
from immersions.devices.grid import BarGrid
from immersions.devices.recorder import Recorder, RecordingInfo, record
from immersions.devices.shell import (CLOSE_S, RETRY_S, backends, callback_stream, close_device, find_output,
                                      open_null_playback, open_playback, silent_for, why)
from immersions.devices.shell import STALL_S  # noqa: F401 (re-exported: a dead device is one silent this long)
from immersions.registry import REGISTRY
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

CHANNELS = 2
BUFFER_MS = 120.0  # audio queued ahead of the speaker: the callback may stall for most of it
PERIODS = 6  # callbacks per buffer: each fills one period (here 20 ms)
CAPACITY = 16384  # frames per callback before the buffers have to grow
DEBT_LEAK = 0.05  # per callback: forgives clock drift between the device and perf_counter
LATE_FACTOR = 1.5  # a callback is late when it comes half a period after it was due
CLOCK_NUDGE = 0.1  # how fast the playhead clock follows callbacks that come later than predicted
GIL_SWITCH_S = 0.001  # while playing: a thread waiting for the GIL (the callback) gets it within ~1 ms
ALIGN_TOLERANCE_S = 0.004  # a loop this far off the shared bar (Ableton Link) is moved back onto it
REALIGN_S = 0.025  # the equal-power crossfade that moves the playhead onto the bar: short, yet no click
RETIME_LEAD_S = 0.3  # the loop's end is re-timed onto the shared bar line within this long before it
FADER_SLEW_S = 0.02  # a hand's crossfader move takes at least this long over the whole travel: never a step
BAR_CLOCK_LEAK = 0.001  # s per s: how fast the bar clock lets go of its earliest callback (device clock drift)


# -- what crosses threads --------------------------------------------------------------------

@dataclass(frozen=True)
class PlayerStats:
    callbacks: int  # audio callbacks served
    late_callbacks: int  # callbacks that began more than half a period after they were due
    underruns: int  # callbacks whose block reached the device after its queued audio ran out (estimated)
    switches: int  # clip changes (one clip taking over from another; the first start is not one)
    max_switch_jump: float  # largest mix step into a switch sample
    max_crossfade_jump: float  # largest mix step anywhere inside a crossfade window
    max_clip_jump: float  # largest step inside (and around the seam of) the clips that played
    max_render_ms: float  # longest time the callback spent rendering a block
    faults: int  # callbacks that failed and played silence instead
    frames: int  # frames rendered
    reopens: int = 0  # times the output was closed and opened again (a dead or stalled device)
    realigns: int = 0  # times the loop was moved back onto the shared bar (Ableton Link)


# -- the callback body ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FadeRequest:
    """A crossfader move the callback schedules (published by one reference): to `target` over
    `bars` bars of `bar_seconds`, starting on the next bar line of the loop on air; bars 0: the
    running fade is cancelled and the fader follows the hand again."""

    target: float
    bars: int = 0
    bar_seconds: float = 0.0


class LoopRenderer:
    """The player's sound, block by block, with no device: `render(n)` fills and returns the
    next n frames. Two decks (A = 0, B = 1; see deck.py) mixed by the crossfader, then the
    master volume (ramped over a block) and the soft limiter; a cue ring (see cue.py), when one
    is attached, gets the deck off air (or a blend with the master, `cue_mix`) block by block.
    Only the audio callback (or one test thread) may call `render`; `offer`, `set_volume`,
    `set_crossfade`, `set_crossfader`, `fade_to` and `playhead_at` are safe from any thread.

    The crossfader never steps: a hand's move (MIDI, OSC, the overlay) is slewed to take at
    least FADER_SLEW_S over the whole travel, and a fade (`fade_to`) runs sample by sample from
    one bar line to another; both decks' gains are computed per sample into buffers made once.
    With the fader fully on one side (and no cue output playing the other deck) the other deck
    is only advanced (its playhead and switches move on), never rendered."""

    def __init__(self, sample_rate: int, volume: float | None = None, crossfade: float | None = None,
                 channels: int = CHANNELS, capacity: int = CAPACITY):
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._volume = REGISTRY["volume"].default
        self._crossfade = REGISTRY["crossfade"].default
        self._xfade_samples = max(1, round(self._crossfade * self.sample_rate))
        if volume is not None:
            self.set_volume(volume)
        if crossfade is not None:
            self.set_crossfade(crossfade)
        self._gain = self._volume  # the gain applied now; ramps to _volume over a block
        self._closing = False
        self.frames = 0
        # the hold on the shared bar (Ableton Link; None: the loops run free), read by both decks
        self.grid: BarGrid | None = None
        self._realign_len = max(1, round(REALIGN_S * self.sample_rate))
        self._align_tolerance = ALIGN_TOLERANCE_S * self.sample_rate
        self._retime_lead = RETIME_LEAD_S * self.sample_rate
        self.decks = (Deck(self, 0), Deck(self, 1))
        # the crossfader: where it is (callback's), where the hand wants it (any thread), its curve
        self._fader = float(REGISTRY["crossfader"].default)
        self._fader_target = self._fader
        self._curve = REGISTRY["crossfader_curve"].default
        self._slew = 1.0 / (FADER_SLEW_S * self.sample_rate)  # most fader travel a sample
        self._fade_request: FadeRequest | None = None  # written by fade_to / set_crossfader
        self._fade_seen: FadeRequest | None = None  # the last request the callback took
        self._fade_active = False
        self.fade_start = self.fade_end = -1  # output frames of the last fade scheduled (on bar lines)
        self._fade_from = self._fade_to = 0.0
        self._cue_mix = float(REGISTRY["cue_mix"].default)
        self.cue = None  # a CueRing (cue.py) the deck off air is written to; swapped by reference
        self.tap: Recorder | None = None  # gets every finished block (the recording); swapped by reference
        # the output frame the newest recording's first sample was played at (-1: none pushed yet),
        # so a recording lines up with the decks' playheads (`Deck.segments`)
        self.recording_from = -1
        self.tap_fault: BaseException | None = None  # why a failing tap was taken off (the sound went on)
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self._capacity = capacity
        (self._mix, self._tmp, self._fo, self._fi, self._a, self._b, self._x, self._ga, self._gb,
         self._cue_block) = (np.zeros(capacity, np.float32) for _ in range(10))
        for deck in self.decks:
            deck.mix = np.zeros(capacity, np.float32)
        self._ramp = np.arange(capacity + 1, dtype=np.float32)
        self._out = np.zeros((capacity, self.channels), np.float32)

    # -- any thread ----------------------------------------------------------------------------

    @property
    def volume(self) -> float:
        return self._volume

    @property
    def crossfade(self) -> float:
        return self._crossfade

    @property
    def fader(self) -> float:
        """Where the crossfader is now (0 = deck A alone, 1 = deck B alone), as the callback left it."""
        return self._fader

    @property
    def fader_target(self) -> float:
        """Where the crossfader is going: the hand's value, or a running fade's end."""
        return self._fader_target

    @property
    def on_air(self) -> int:
        """The deck the fader is nearer to (0 = A, 1 = B); the other one is the cue deck."""
        return 0 if self._fader < 0.5 else 1

    def set_volume(self, volume: float) -> None:
        """Master gain before the limiter (registry 'volume'); a bad value raises and changes nothing."""
        self._volume = REGISTRY["volume"].validate(volume)

    def set_crossfade(self, seconds: float) -> None:
        """Crossfade of the next switch (registry 'crossfade'); a bad value raises and changes nothing."""
        seconds = REGISTRY["crossfade"].validate(seconds)
        self._xfade_samples = max(1, round(seconds * self.sample_rate))
        self._crossfade = seconds

    def set_crossfader(self, position: float, curve: str | None = None) -> None:
        """The hand's crossfader (registry 'crossfader'); a move stops a running fade. The fader
        glides there (at most its whole travel in FADER_SLEW_S). A bad value raises."""
        position = REGISTRY["crossfader"].validate(position)
        if curve is not None:
            self._curve = REGISTRY["crossfader_curve"].validate(curve)
        if position != self._fader_target:
            self._fader_target = position
            self._fade_request = FadeRequest(position)  # cancels a fade that runs or waits

    def fade_to(self, target: float, bars: int, bar_seconds: float) -> None:
        """Move the crossfader to `target` over `bars` bars of `bar_seconds` on its own, from the
        next bar line of the loop on air to the bar line `bars` later (any thread)."""
        target = REGISTRY["crossfader"].validate(target)
        if not (isinstance(bars, int) and bars >= 1) or not bar_seconds > 0:
            raise ImmersionsError(f"a fade lasts one bar or more, not {bars!r} bars of {bar_seconds!r} s")
        self._fader_target = target
        self._fade_request = FadeRequest(target, bars, float(bar_seconds))

    def configure(self, settings) -> None:
        """Every player parameter of the registry (consumer "player") from a snapshot: where a
        new player parameter's value is used. A bad value raises and changes nothing."""
        names = ("volume", "crossfade", "crossfader", "crossfader_curve", "cue_mix")
        volume, crossfade, fader, curve, cue_mix = (REGISTRY[n].validate(settings[n]) for n in names)
        self.set_volume(volume)
        self.set_crossfade(crossfade)
        self.set_crossfader(fader, curve)
        self._cue_mix = cue_mix

    def offer(self, frame, deck: int = 0) -> PreparedClip | None:
        """Prepare a clip for deck `deck` (0 = A, 1 = B) and make it the one that deck switches to
        at its next loop boundary. Returns the prepared clip, or None when that serial is already
        the deck's newest."""
        return self.decks[deck].offer(frame)

    def playhead_at(self, frame: float, deck: int | None = None) -> Playhead:
        """Which clip, and where in its loop, output frame `frame` (fractional) belongs to on
        `deck` (None: the deck on air)."""
        return self.decks[self.on_air if deck is None else deck].playhead_at(frame)

    # what the decks counted, together
    @property
    def switches(self) -> int:
        return sum(d.switches for d in self.decks)

    @property
    def realigns(self) -> int:
        return sum(d.realigns for d in self.decks)

    @property
    def max_switch_jump(self) -> float:
        return max(d.max_switch_jump for d in self.decks)

    @property
    def max_crossfade_jump(self) -> float:
        return max(d.max_crossfade_jump for d in self.decks)

    @property
    def max_clip_jump(self) -> float:
        return max(d.max_clip_jump for d in self.decks)

    def fade_out(self) -> None:
        """Ramp to silence over the next block and stay silent (for a clickless stop)."""
        self._closing = True

    def start_recording(self, recorder: Recorder) -> None:
        """Give every block from the next one on to `recorder.push` (a started Recorder at this rate)."""
        if self.tap is not None:
            raise ImmersionsError(f"already recording to {self.tap.path}; stop that recording first")
        if recorder.sample_rate != self.sample_rate:
            raise ImmersionsError(f"a recorder at {recorder.sample_rate} Hz cannot record output at "
                                  f"{self.sample_rate} Hz; make it at the output's rate")
        if recorder.channels > self.channels:
            raise ImmersionsError(f"cannot record {recorder.channels} channels of a {self.channels}-channel output")
        self.tap_fault = None
        self.recording_from = -1
        self.tap = recorder

    def stop_recording(self) -> Recorder | None:
        """Take the tap off; the caller stops it (which drains and closes its file)."""
        recorder, self.tap = self.tap, None
        return recorder

    # -- the callback's thread -----------------------------------------------------------------

    def render(self, n: int, heard_at: float | None = None) -> np.ndarray:
        """The next n frames, float32 [n, channels]; a view that the next call overwrites.
        `heard_at`: when the block's first frame reaches the speaker (time.perf_counter()), so
        that with a `grid` the loops' starts are held on the shared bar."""
        if n > self._capacity:
            self._allocate(max(n, 2 * self._capacity))  # only if a device asks for a huge block
        first, last = self._fader_block(n)
        a_heard = not (first == 1.0 and last == 1.0)  # the fader is monotonic over a block
        b_heard = not (first == 0.0 and last == 0.0)
        cue = self.cue
        cue_deck = 1 if last < 0.5 else 0  # the deck off air at the block's end
        a, b = self.decks
        other_a, other_b = (a.length, a._pos), (b.length, b._pos)  # both before either moves on
        render_a = a_heard or (cue is not None and cue_deck == 0)
        render_b = b_heard or (cue is not None and cue_deck == 1)
        grid = self.grid
        a.render(n, heard_at, grid, render_a, other_b)
        b.render(n, heard_at, grid, render_b, other_a)
        a.finish(n, render_a)
        b.finish(n, render_b)
        mix = self._mix[:n]
        if a_heard and b_heard:
            ga, gb = self._ga[:n], self._gb[:n]
            fader_gains_into(self._x[:n], self._curve, ga, gb)
            np.multiply(a.mix[:n], ga, out=mix)
            other = self._tmp[:n]
            np.multiply(b.mix[:n], gb, out=other)
            np.add(mix, other, out=mix)
        else:
            np.copyto(mix, (a if a_heard else b).mix[:n])
        if cue is not None:
            self._write_cue(cue, self.decks[cue_deck].mix[:n], mix, n)
        self.frames += n
        self._apply_gain(mix)
        soft_limit(mix, out=mix, scratch=(self._a[:n], self._b[:n]))
        out = self._out[:n]
        np.copyto(out, mix[:, None])
        tap = self.tap
        if tap is not None:
            if self.recording_from < 0:
                self.recording_from = self.frames - n
            try:
                tap.push(out)
            except Exception as err:  # a broken recording never silences the sound
                self.tap, self.tap_fault = None, err
        return out

    def _fader_block(self, n: int) -> tuple[float, float]:
        """The fader's position after each sample of the block into self._x[:n]; (first, last)."""
        x = self._x[:n]
        request = self._fade_request
        if request is not self._fade_seen:
            self._fade_seen = request
            self._fade_active = request.bars > 0
            if self._fade_active:
                self._schedule_fade(request)
        now = self._fader
        if self._fade_active:
            start, end = self.fade_start, self.fade_end
            if self.frames + n <= start:  # waiting for its bar line
                x.fill(now)
                return now, now
            np.add(self._ramp[1:n + 1], float(self.frames - start), out=x)
            np.multiply(x, 1.0 / (end - start), out=x)
            np.clip(x, 0.0, 1.0, out=x)
            np.multiply(x, self._fade_to - self._fade_from, out=x)
            np.add(x, self._fade_from, out=x)
            if self.frames + n >= end:
                self._fade_active = False
                x[n - 1] = self._fade_to  # exactly on the side it went to
            self._fader = float(x[n - 1])
            return float(x[0]), self._fader
        target = self._fader_target
        if target == now:
            x.fill(now)
            return now, now
        most = n * self._slew
        step = target - now
        step = most if step > most else (-most if step < -most else step)
        np.multiply(self._ramp[1:n + 1], step / n, out=x)
        np.add(x, now, out=x)
        self._fader = target if abs(target - now - step) < 1e-9 else now + step
        x[n - 1] = self._fader
        return float(x[0]), self._fader

    def _schedule_fade(self, request: FadeRequest) -> None:
        """A fade's first and last frames, both on bar lines of the loop on air (its loop starts on
        a bar): from the next bar line (now, on one), over `bars` bars."""
        bar = request.bar_seconds * self.sample_rate
        deck = self.decks[self.on_air]
        if not deck.playing:
            deck = self.decks[1 - self.on_air]
        to_bar = 0.0
        if deck.playing:
            to_bar = (-float(deck._pos)) % bar
            if to_bar >= bar - 0.5:
                to_bar = 0.0
        self.fade_start = self.frames + int(round(to_bar))
        self.fade_end = self.fade_start + int(round(request.bars * bar))
        self._fade_from, self._fade_to = self._fader, request.target

    def _write_cue(self, cue, deck: np.ndarray, master: np.ndarray, n: int) -> None:
        """The cue output's block: the deck off air, blended with the master (before the volume)
        as far as `cue_mix` says, soft-limited, into the cue's ring."""
        block = self._cue_block[:n]
        m = self._cue_mix
        if m <= 0.0:
            np.copyto(block, deck)
        elif m >= 1.0:
            np.copyto(block, master)
        else:
            np.multiply(deck, 1.0 - m, out=block)
            other = self._a[:n]
            np.multiply(master, m, out=other)
            np.add(block, other, out=block)
        soft_limit(block, out=block, scratch=(self._a[:n], self._b[:n]))
        cue.write(block, self.frames)

    def _apply_gain(self, mix: np.ndarray) -> None:
        start, target = self._gain, (0.0 if self._closing else self._volume)
        if start == target:
            if start != 1.0:
                np.multiply(mix, start, out=mix)
            return
        n = len(mix)  # a linear ramp over the block: no zipper noise when the volume moves
        gain = self._tmp[:n]
        np.multiply(self._ramp[1:n + 1], (target - start) / n, out=gain)
        np.add(gain, start, out=gain)
        np.multiply(mix, gain, out=mix)
        self._gain = target

class DeckControls:
    """What a sound clock around a LoopRenderer (`renderer`) offers of its decks and crossfader:
    the LoopPlayer and the offline clock alike (any thread)."""

    renderer: LoopRenderer

    def offer(self, frame, deck: int = 0) -> PreparedClip | None:
        return self.renderer.offer(frame, deck)

    @property
    def fader(self) -> float:
        return self.renderer.fader

    @property
    def fader_target(self) -> float:
        return self.renderer.fader_target

    def fade_to(self, target: float, bars: int, bar_seconds: float) -> None:
        """Move the crossfader to `target` over `bars` bars, from the next bar line."""
        self.renderer.fade_to(target, bars, bar_seconds)


class LoopPlayer(DeckControls):
    """Plays offered clips in a loop on an audio device (or the NULL backend when none opens).

    `offer(frame)` whenever a new DreamFrame arrives; the renderer calls `position()` once per
    display frame to draw the frame that is heard, where it is heard.

    device: None (the default output), an index into `shell.list_devices(backend)`, or part of a name.
    backend: None (miniaudio's order), or one name: alsa, pulseaudio, jack, coreaudio, wasapi, null ...
    sample_rate: None (the device's own) or a rate; clips at any rate are resampled to it.
    buffer_ms, periods: the device buffer and the callbacks per buffer (each fills one period of
      buffer_ms / periods, rounded to whole ms). A callback may come up to (periods - 1) periods
      late before the device runs dry, and that is also the output latency. The callback runs
      Python, which must wait for the GIL and for a CPU: on a loaded 2-core machine stalls of
      100+ ms happen, hence a generous default; the loop is not played live, only the volume
      moves with that latency, and the playhead accounts for it.
    gil_switch_s: the callback runs Python, so it needs the GIL; while the player plays, the
      interpreter's switch interval is lowered to this (Python's default is 5 ms, and a dreaming
      thread can make the callback wait several of those), and restored on close. None: untouched.

    The callback counts, timed with time.perf_counter (see `stats()`):
    - callbacks: blocks served;
    - late_callbacks: a callback that began more than half a period after it was due (its start
      came over 1.5 x the previous block's duration after the previous callback's start);
    - underruns: estimated, as no backend reports them through miniaudio: the callbacks' running
      delay behind schedule (catch-up bursts pay it off; it leaks 5% per callback to forgive clock
      drift) plus this block's render time exceeded the audio the device still held when it asked
      (periods - 1 blocks), so it ran dry before the block arrived. On the NULL backend, which
      simply catches up after a stall, this says what a real device with this buffer would do.
    - reopens: the output was closed and opened again by `check()` or `reopen()`, or the player
      moved from the NULL fallback back onto the wanted output.

    Recording: `start_recording()` / `stop_recording()` write what is heard to a WAV file
    (see recorder.py); `close()` stops a running recording after the fade-out.
    """

    follows_link = True  # set_grid holds the loop's start on an Ableton Link bar

    def __init__(self, device: int | str | None = None, backend: str | None = None,
                 sample_rate: int | None = None, buffer_ms: float = BUFFER_MS, periods: int = PERIODS,
                 volume: float | None = None, crossfade: float | None = None, extra_latency_ms: float = 0.0,
                 gil_switch_s: float | None = GIL_SWITCH_S, cue_device: int | str | None = None):
        for name, value in (("volume", volume), ("crossfade", crossfade)):
            if value is not None:
                REGISTRY[name].validate(value)  # before a device is opened for nothing
        if not (isinstance(periods, int) and 2 <= periods <= 32):
            raise ImmersionsError(f"{periods!r} audio periods: choose a whole number 2 .. 32")
        if not 2.0 * periods <= float(buffer_ms) <= 1000.0:
            raise ImmersionsError(f"audio buffer of {buffer_ms:g} ms: choose {2 * periods} .. 1000 ms")
        if sample_rate is not None and not 8000 <= int(sample_rate) <= 384000:
            raise ImmersionsError(f"sample rate {sample_rate} Hz: choose 8000 .. 384000, or leave it unset")
        self.periods = periods
        self.period_ms = max(1, round(float(buffer_ms) / periods))  # miniaudio takes whole ms
        self.buffer_ms = float(self.period_ms * periods)
        self.extra_latency = max(0.0, float(extra_latency_ms)) / 1000.0
        self.callbacks = 0
        self.late_callbacks = 0
        self.underruns = 0
        self.faults = 0
        self.max_render = 0.0
        self.fault: BaseException | None = None
        self._fault_logged = False
        self._last_t = 0.0
        self._last_n = 0
        self._debt = 0.0
        self._anchor = 0.0
        self._clock_seq = 0  # odd while the callback rewrites (_anchor_pub, _frame_pub, _n_pub)
        self._anchor_pub, self._frame_pub, self._n_pub = 0.0, 0, 0
        self._bytes = self._bytes_all = self._bytes_src = None
        self._bytes_n = -1
        self._closed = False
        self.cue = None
        self.reopens = 0
        self._timed = False  # whether a callback ran on this device (the next one is timed against it)
        self._zero, self._zero_skip = 0.0, 0  # the bar clock (see _bar_clock)
        self._opened_t = 0.0  # when this device started: check() counts a stall from here at the earliest
        self._lock = threading.Lock()  # reopen() and close(), never the callback
        self._backend_name = backend
        self._wanted: str | None = None  # the chosen device's name: a reopen looks for it again
        self._device, self.device_name, self.fallback = self._open(device, backend, sample_rate)
        self._retry_t = time.perf_counter()  # the last look for the wanted output, while on the fallback
        self._retrying: threading.Thread | None = None
        self.backend = self._device.backend
        self.sample_rate = int(self._device._device.sampleRate)  # the rate the device really runs at
        self.renderer = LoopRenderer(self.sample_rate, volume, crossfade)
        self._switch_interval = None
        if gil_switch_s is not None and gil_switch_s < sys.getswitchinterval():
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(gil_switch_s)
        try:
            self._start()
        except miniaudio.MiniaudioError as err:
            self._device.close()
            self._restore_switch_interval()
            raise ImmersionsError(f"cannot start audio output {self.device_name} ({err}); "
                                  "choose another device (immersions lists them) or none") from err
        log.info("audio: %s on %s at %d Hz, %d x %d ms buffer", self.device_name, self.backend, self.sample_rate,
                 self.periods, self.period_ms)
        # self.cue: the second output (headphones) that plays the deck off air (CueOutput), or None
        if cue_device is not None:
            try:
                self.cue = CueOutput(self.renderer, cue_device, backend, self.sample_rate, self.buffer_ms,
                                     self.periods)
            except ImmersionsError:
                self.close(fade=False)
                raise

    def _open(self, device, backend, sample_rate, null_fallback: bool = True):
        backend_list = backends(backend)
        device_id, name = find_output(device, backend) if device is not None else (None, "default output")
        if device is not None:
            self._wanted = name
        rate = int(sample_rate or 0)  # 0: the device's own rate
        try:
            dev = open_playback(device_id, CHANNELS, rate, self.period_ms, self.periods, backend_list)
            return dev, name, False
        except miniaudio.MiniaudioError as err:
            if not null_fallback:
                raise
            log.warning("no audio output (%s: %s); playing silently on miniaudio's NULL backend, the visuals run on",
                        name, why(err))
        return self._open_null(rate or 48000)

    def _open_null(self, rate: int):
        return open_null_playback(CHANNELS, rate, self.period_ms, self.periods), "NULL (no sound)", True

    def _start(self) -> None:
        """Start self._device with a fresh callback generator; the renderer carries on where it was."""
        stream = callback_stream(self._callback)
        next(stream)
        self._timed = False
        self._zero_skip = self.periods + 1  # the first callbacks fill the device buffer in a burst
        self._opened_t = time.perf_counter()
        self._device.start(stream)

    # -- control (any thread) -------------------------------------------------------------------

    @property
    def volume(self) -> float:
        return self.renderer.volume

    @property
    def crossfade(self) -> float:
        return self.renderer.crossfade

    def set_volume(self, volume: float) -> None:
        self.renderer.set_volume(volume)

    def set_crossfade(self, seconds: float) -> None:
        self.renderer.set_crossfade(seconds)

    def configure(self, settings) -> None:
        """The player's registry parameters from a snapshot (any thread)."""
        self.renderer.configure(settings)

    def set_grid(self, grid: BarGrid | None) -> None:
        """Hold the loop's start on this shared bar (Ableton Link; any thread), or let it run free (None)."""
        self.renderer.grid = grid

    @property
    def latency(self) -> float:
        """Seconds from a callback to the moment its first sample reaches the speaker."""
        period = self._n_pub / self.sample_rate if self._n_pub else self.period_ms / 1000.0
        return (self.periods - 1) * period + self.extra_latency

    def heard_frame(self, now: float | None = None) -> float | None:
        """The output frame heard at the speaker at time `now` (time.perf_counter(); default: now),
        extrapolated from the last callback; None before the first callback."""
        self._log_fault()
        while True:
            seq = self._clock_seq
            anchor, frame, n = self._anchor_pub, self._frame_pub, self._n_pub
            if seq % 2 == 0 and seq == self._clock_seq:
                break
            time.sleep(0)  # the callback is mid-update: let it finish
        if seq == 0:
            return None
        now = time.perf_counter() if now is None else now
        heard = frame + (now - anchor - self.latency) * self.sample_rate
        return min(heard, frame + n - 1)

    def position(self, now: float | None = None, deck: int | None = None) -> Playhead:
        """The clip and loop fraction heard at the speaker at time `now` (time.perf_counter();
        default: now) on `deck` (None: the deck on air), extrapolated from the last callback so it
        moves smoothly between them."""
        heard = self.heard_frame(now)
        return SILENT if heard is None else self.renderer.playhead_at(heard, deck)

    def stats(self) -> PlayerStats:
        self._log_fault()
        r = self.renderer
        return PlayerStats(self.callbacks, self.late_callbacks, self.underruns, r.switches, r.max_switch_jump,
                           r.max_crossfade_jump, r.max_clip_jump, 1000.0 * self.max_render, self.faults, r.frames,
                           self.reopens, r.realigns)

    def _log_fault(self) -> None:
        if self.fault is not None and not self._fault_logged:
            self._fault_logged = True
            log.error("audio callback failed (%s: %s); it plays silence on every failing block",
                      type(self.fault).__name__, self.fault)
        tap_fault = self.renderer.tap_fault
        if tap_fault is not None:
            self.renderer.tap_fault = None
            log.error("recording failed in the audio callback (%s: %s); it stopped, the sound goes on",
                      type(tap_fault).__name__, tap_fault)

    # -- recording (any one thread) ------------------------------------------------------------------

    def start_recording(self, path: str | Path | None = None, folder: str | Path | None = None) -> Path:
        """Record what is heard (after volume and limiter) to `path`, or to a new
        <folder or ./recordings>/immersions-YYYYMMDD-HHMMSS.wav; returns the file's path.
        ImmersionsError (one line) when the file cannot be created or a recording runs already."""
        if self._closed:
            raise ImmersionsError("the audio output is closed: there is nothing to record")
        return record(self.renderer, path, folder).path

    def stop_recording(self) -> RecordingInfo | None:
        """Finish the recording (everything heard until now is in the file); None when none ran."""
        recorder = self.renderer.stop_recording()
        return recorder.stop() if recorder is not None else None

    @property
    def recording(self) -> bool:
        """True while a recording writes (False after it ended on its own, e.g. a full disk)."""
        tap = self.renderer.tap
        return tap is not None and tap.recording

    # -- device health (main thread) -----------------------------------------------------------------

    def check(self, now: float | None = None) -> bool:
        """Cheap; call about once a second. True while the output plays. When the callback has not
        run for STALL_S since the last one (or since the device started), the device is dead or
        stalled (unplugged, a driver hiccup): it is reopened, and the loop resumes where it was.
        False only when the player is closed or no output could be started again. The cue output,
        when there is one, is checked too (`CueOutput.check`: it never touches the master)."""
        if self._closed:
            return False
        self._log_fault()
        now = time.perf_counter() if now is None else now
        if self.cue is not None:
            self.cue.check(now)
        if self.fallback and now - self._retry_t >= RETRY_S and not (self._retrying and self._retrying.is_alive()):
            # playing silently since the output vanished or never opened: look for it again, on a
            # thread, as opening a device can take a while; the NULL device plays on meanwhile
            self._retry_t = now
            self._retrying = threading.Thread(target=self._return_to_output, name="audio-retry", daemon=True)
            self._retrying.start()
        silent = silent_for(lambda: max(self._last_t, self._opened_t), now, self.period_ms)
        return True if silent is None else self.reopen(f"no audio callback for {silent:.1f} s")

    def reopen(self, reason: str) -> bool:
        """Close the output and open it again: the same device if it is still listed, else the
        default, else the NULL backend. The renderer (loop, position, recording) carries on.
        Any thread but the callback's. True when an output plays again."""
        with self._lock:
            if self._closed:
                return False
            self.reopens += 1
            log.warning("audio: reopening %s (%s)", self.device_name, reason)
            close_device(self._device)
            try:
                self._device, self.device_name, self.fallback = self._open_again()
            except miniaudio.MiniaudioError as err:  # _open_again falls back to NULL: that failed too
                log.error("audio: not even the NULL backend opens (%s); the loop is silent and stopped", why(err))
                return False
            if not self._start_or_silence():
                return False
            self.backend = self._device.backend
            rate = int(self._device._device.sampleRate)
            if rate != self.sample_rate:  # miniaudio converts to the rate asked for, so this is not expected
                log.warning("audio: %s runs at %d Hz, not %d Hz: loops play off pitch until a restart",
                            self.device_name, rate, self.sample_rate)
            log.info("audio: %s on %s again", self.device_name, self.backend)
            return True

    def _start_or_silence(self) -> bool:
        """Start self._device (holding self._lock); one that does not start gives way to the NULL
        backend. False only when not even that starts."""
        try:
            self._start()
            return True
        except miniaudio.MiniaudioError as err:
            close_device(self._device)
            log.warning("audio: %s does not start (%s); playing silently on miniaudio's NULL backend, "
                        "the visuals run on", self.device_name, why(err))
        try:
            self._device, self.device_name, self.fallback = self._open_null(self.sample_rate)
            self._start()
            return True
        except miniaudio.MiniaudioError as err:
            log.error("audio: not even the NULL backend starts (%s); the loop is silent and stopped", why(err))
            return False

    def _open_again(self):
        try:
            return self._open_output()
        except (miniaudio.MiniaudioError, ImmersionsError) as err:
            log.warning("no audio output (default output: %s); playing silently on miniaudio's NULL backend, "
                        "the visuals run on", why(err))
        return self._open_null(self.sample_rate)

    def _open_output(self, say=log.info):
        """The wanted output, not started: the chosen device if it opens, else the default output.
        Raises when neither opens."""
        if self._wanted is not None:
            try:
                return self._open(self._wanted, self._backend_name, self.sample_rate, null_fallback=False)
            except (miniaudio.MiniaudioError, ImmersionsError) as err:
                say("audio: %s is gone or does not open (%s); trying the default output", self._wanted, why(err))
        return self._open(None, self._backend_name, self.sample_rate, null_fallback=False)

    def _return_to_output(self) -> bool:
        """On the NULL fallback: when the wanted output opens again (the interface was plugged back
        in, the sound server restarted), move the loop onto it; the loop and its position carry
        on. Quiet while there is still no output. True when the loop moved."""
        try:
            output = self._open_output(say=log.debug)
        except (miniaudio.MiniaudioError, ImmersionsError) as err:
            log.debug("audio: still no output (%s); staying on the NULL backend", why(err))
            return False
        with self._lock:
            if self._closed or not self.fallback:  # closed, or a reopen found the output meanwhile
                close_device(output[0])
                return False
            close_device(self._device)
            self._device, self.device_name, self.fallback = output
            if not self._start_or_silence() or self.fallback:
                return False
            self.backend = self._device.backend
            self.reopens += 1
            log.warning("audio: %s is back; the loop plays on it again", self.device_name)
            return True

    def close(self, fade: bool = True) -> None:
        """Fade out over one block, then stop the device, then a running recording (which keeps the
        fade). Safe to call twice."""
        if self._closed:
            return
        if fade and self.callbacks:
            self.renderer.fade_out()
            deadline = time.perf_counter() + 2 * self.latency + 0.1
            frames = self.renderer.frames
            while self.renderer.frames < frames + 2 * max(self._n_pub, 1) and time.perf_counter() < deadline:
                time.sleep(0.002)
            time.sleep(self.latency)  # let the faded blocks reach the speaker
        if self.cue is not None:
            self.cue.close()
        with self._lock:
            self._closed = True
            close_device(self._device)
        if self._retrying is not None:
            self._retrying.join(timeout=CLOSE_S)
        self._restore_switch_interval()
        self.stop_recording()
        self._log_fault()

    def _restore_switch_interval(self) -> None:
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    def __enter__(self) -> "LoopPlayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the audio callback -------------------------------------------------------------------------

    def _bar_clock(self, t: float, frame: int, n: int) -> float:
        """When the callback for `frame` was due: a callback comes late (the GIL, the CPU, a NULL
        device's coarse timer) but never before its due time, so the due time of frame 0 is the
        earliest `t - frame / rate` seen, let go slowly to follow a device clock that drifts. Far
        steadier than one callback's time, so the loop is not moved about by scheduling noise."""
        zero = t - frame / self.sample_rate
        if self._zero_skip > 0:  # the buffer-filling burst: callbacks before their due time
            self._zero_skip -= 1
            self._zero = zero
        else:
            held = self._zero + BAR_CLOCK_LEAK * n / self.sample_rate
            self._zero = zero if zero < held else held
        return self._zero + frame / self.sample_rate

    def _callback(self, n: int):
        t = time.perf_counter()
        sr = self.sample_rate
        if self._timed:
            gap = t - self._last_t
            due = self._last_n / sr
            if gap > LATE_FACTOR * due:
                self.late_callbacks += 1
            # debt: how far behind schedule the callbacks run; early ones (a burst catching up) pay it off
            debt = self._debt * (1.0 - DEBT_LEAK) + gap - due
            self._debt = debt if debt > 0.0 else 0.0
            predicted = self._anchor + due
            anchor = t if t < predicted else predicted + CLOCK_NUDGE * (t - predicted)
        else:
            anchor = t
        self._anchor = anchor
        self._last_t, self._last_n = t, n
        self._timed = True
        self.callbacks += 1
        frame = self.renderer.frames
        try:
            if self.renderer.grid is None:
                block = self.renderer.render(n)
            else:  # held on a shared bar: this block's first frame is heard one latency after its due time
                block = self.renderer.render(n, self._bar_clock(t, frame, n) + self.latency)
        except Exception as err:  # never raise into miniaudio: play silence and let the shell say why
            self.fault = err
            self.faults += 1
            block = self.renderer._out[:n]
            block.fill(0.0)
        rendered = time.perf_counter() - t
        if rendered > self.max_render:
            self.max_render = rendered
        # the device held (periods - 1) blocks when it asked; it ran dry if we came later than that
        if self._debt + rendered > (self.periods - 1) * n / sr:
            self.underruns += 1
            self._debt = 0.0
        self._clock_seq += 1
        self._anchor_pub, self._frame_pub, self._n_pub = anchor, frame, n
        self._clock_seq += 1
        # miniaudio copies the bytes it is given; hand it the same view while the block size holds
        out = self.renderer._out
        if out is not self._bytes_src:
            self._bytes_src, self._bytes_all, self._bytes_n = out, memoryview(out).cast("B"), -1
        if n != self._bytes_n:
            self._bytes, self._bytes_n = self._bytes_all[:n * CHANNELS * 4], n
        return self._bytes
