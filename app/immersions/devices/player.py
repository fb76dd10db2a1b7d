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
from dataclasses import dataclass, field
from pathlib import Path

import miniaudio
import numpy as np

from immersions.audio.mixing import (bar_position, copy_loop, equal_power_into, loop_max_jump, loop_offset,
                                     resample_loop, retime_window, soft_limit)
from immersions.devices.grid import BarGrid
from immersions.devices.recorder import Recorder, RecordingInfo, record
from immersions.devices.shell import (CLOSE_S, backends, close_device, find_output, open_null_playback, open_playback,
                                      why)
from immersions.registry import REGISTRY
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

CHANNELS = 2
BUFFER_MS = 120.0  # audio queued ahead of the speaker: the callback may stall for most of it
PERIODS = 6  # callbacks per buffer: each fills one period (here 20 ms)
MIN_CLIP_SAMPLES = 32
SLOTS = 16  # prepared clips alive at once: newest, current, fading, recent segments, free
SEGMENTS = 8  # remembered clip starts (switches), so the playhead can look back past one
CAPACITY = 16384  # frames per callback before the buffers have to grow
DEBT_LEAK = 0.05  # per callback: forgives clock drift between the device and perf_counter
LATE_FACTOR = 1.5  # a callback is late when it comes half a period after it was due
CLOCK_NUDGE = 0.1  # how fast the playhead clock follows callbacks that come later than predicted
GIL_SWITCH_S = 0.001  # while playing: a thread waiting for the GIL (the callback) gets it within ~1 ms
STALL_S = 1.5  # a started device whose callback has not run for this long is dead: check() reopens it
RETRY_S = 30.0  # on the NULL fallback, check() looks this often for the wanted output to come back
ALIGN_TOLERANCE_S = 0.004  # a loop this far off the shared bar (Ableton Link) is moved back onto it
REALIGN_S = 0.025  # the equal-power crossfade that moves the playhead onto the bar: short, yet no click
RETIME_LEAD_S = 0.3  # the loop's end is re-timed onto the shared bar line within this long before it
BAR_CLOCK_LEAK = 0.001  # s per s: how fast the bar clock lets go of its earliest callback (device clock drift)


# -- what crosses threads --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PreparedClip:
    """A clip ready for the callback: float32 at the device rate, one loop long."""

    serial: int
    samples: np.ndarray
    sample_rate: int
    max_jump: float  # largest sample-to-sample jump around the loop (seam included)
    frame: object = field(default=None, repr=False)  # what was offered (a DreamFrame), for whoever draws it

    @property
    def length(self) -> int:
        return len(self.samples)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def prepare_clip(frame, sample_rate: int) -> PreparedClip:
    """Anything with .serial, .clip (mono waveform) and .sample_rate -> a PreparedClip."""
    try:
        serial, clip, rate = int(frame.serial), np.asarray(frame.clip, dtype=np.float32), int(frame.sample_rate)
    except (AttributeError, TypeError, ValueError) as err:
        raise ImmersionsError(f"cannot play {type(frame).__name__}: offer an object with .serial, .clip "
                              f"and .sample_rate (a DreamFrame) ({err})") from err
    if clip.ndim != 1:
        raise ImmersionsError(f"clip {serial} has shape {clip.shape}: the player plays mono clips (1-D arrays)")
    if rate <= 0:
        raise ImmersionsError(f"clip {serial} has sample rate {rate}: it must be positive")
    samples = resample_loop(np.nan_to_num(clip, nan=0.0, posinf=0.0, neginf=0.0), rate, sample_rate)
    if len(samples) < MIN_CLIP_SAMPLES:
        raise ImmersionsError(f"clip {serial} is {len(samples)} samples at {sample_rate} Hz: too short to loop; "
                              f"offer at least {MIN_CLIP_SAMPLES}")
    return PreparedClip(serial, samples, sample_rate, loop_max_jump(samples), frame)


@dataclass(frozen=True)
class Playhead:
    """What is heard at the speaker at one moment."""

    serial: int  # serial of the clip being heard; -1 before the first clip
    fraction: float  # 0 .. 1 through that clip's loop
    loop_seconds: float  # the loop's length (0 before the first clip)
    frame: object = field(default=None, repr=False)  # the offered object (DreamFrame) whose clip is heard

    @property
    def seconds(self) -> float:
        return self.fraction * self.loop_seconds


SILENT = Playhead(-1, 0.0, 0.0, None)


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

class LoopRenderer:
    """The player's sound, block by block, with no device: `render(n)` fills and returns the
    next n frames. Only the audio callback (or one test thread) may call `render`; `offer`,
    `set_volume`, `set_crossfade` and `playhead_at` are safe from any thread."""

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
        # clip slots: written only by offer() (under _offer_lock), read by the callback via indexes
        self._clips: list[PreparedClip | None] = [None] * SLOTS
        self._offer_lock = threading.Lock()  # between offering threads only; never in the callback
        self._last_slot = -1
        self._newest = -1
        self._current = -1
        self._old = -1  # the clip fading out (-1: none, or fading in from silence)
        self._pos = 0  # next sample of the current clip
        self._xf_len = 0  # samples in the running crossfade (0: none)
        self._xf_measured = False  # whether the running crossfade is between two clips
        self.frames = 0
        self._last_mix = 0.0
        # switches, newest last: output frame where a clip started, and its slot
        self._seg_start = np.zeros(SEGMENTS, np.int64)
        self._seg_slot = np.zeros(SEGMENTS, np.int64)
        self._seg_pos = np.zeros(SEGMENTS, np.int64)  # where in its loop the clip was at that frame
        self._seg_count = 0
        self.switches = 0
        self.max_switch_jump = 0.0
        self.max_crossfade_jump = 0.0
        self.max_clip_jump = 0.0
        # Link: the shared bar the loop's start is held on (None: the loop runs free)
        self.grid: BarGrid | None = None
        self._old_pos = 0  # next sample of the clip fading out
        self._xf_done = 0  # samples of the running crossfade already played
        self._aligned_frame = -(1 << 62)  # output frame of the last move onto the bar
        self._realign_len = max(1, round(REALIGN_S * self.sample_rate))
        self._align_tolerance = ALIGN_TOLERANCE_S * self.sample_rate
        self._retime_lead = RETIME_LEAD_S * self.sample_rate
        self._retimed_frame = -(1 << 62)  # output frame of the last re-timing of a loop's end
        self.realigns = 0  # moves onto the shared bar (each a short crossfade)
        self.tap: Recorder | None = None  # gets every finished block (the recording); swapped by reference
        self.tap_fault: BaseException | None = None  # why a failing tap was taken off (the sound went on)
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self._capacity = capacity
        self._mix, self._tmp, self._fo, self._fi, self._a, self._b = (np.zeros(capacity, np.float32) for _ in range(6))
        self._ramp = np.arange(capacity + 1, dtype=np.float32)
        self._out = np.zeros((capacity, self.channels), np.float32)

    # -- any thread ----------------------------------------------------------------------------

    @property
    def volume(self) -> float:
        return self._volume

    @property
    def crossfade(self) -> float:
        return self._crossfade

    def set_volume(self, volume: float) -> None:
        """Master gain before the limiter (registry 'volume'); a bad value raises and changes nothing."""
        self._volume = REGISTRY["volume"].validate(volume)

    def set_crossfade(self, seconds: float) -> None:
        """Crossfade of the next switch (registry 'crossfade'); a bad value raises and changes nothing."""
        seconds = REGISTRY["crossfade"].validate(seconds)
        self._xfade_samples = max(1, round(seconds * self.sample_rate))
        self._crossfade = seconds

    def configure(self, settings) -> None:
        """Every player parameter of the registry (consumer "player") from a snapshot: where a
        new player parameter's value is used. A bad value raises and changes nothing."""
        volume, crossfade = (REGISTRY[n].validate(settings[n]) for n in ("volume", "crossfade"))
        self.set_volume(volume)
        self.set_crossfade(crossfade)

    def offer(self, frame) -> PreparedClip | None:
        """Prepare a clip and make it the one to switch to at the next loop boundary.
        Returns the prepared clip, or None when that serial is already the newest."""
        newest = self._newest
        if newest >= 0 and self._clips[newest].serial == getattr(frame, "serial", None):
            return None
        clip = prepare_clip(frame, self.sample_rate)
        with self._offer_lock:
            slot = self._free_slot()
            self._clips[slot] = clip  # the clip that was there (if any) is freed here, not in the callback
            self._newest = slot
        return clip

    def _free_slot(self) -> int:
        # every slot the callback may still touch: it only moves indexes among these
        used = {self._newest, self._current, self._old}
        count = self._seg_count
        for j in range(max(0, count - SEGMENTS), count):
            used.add(int(self._seg_slot[j % SEGMENTS]))
        for step in range(1, SLOTS + 1):
            slot = (self._last_slot + step) % SLOTS
            if slot not in used:
                self._last_slot = slot
                return slot
        raise RuntimeError("no free clip slot")  # cannot happen: SLOTS > 3 + SEGMENTS

    def playhead_at(self, frame: float) -> Playhead:
        """Which clip, and where in its loop, output frame `frame` (fractional) belongs to."""
        count = self._seg_count
        for j in range(count - 1, max(-1, count - SEGMENTS), -1):  # the oldest entry may be rewritten now
            start = int(self._seg_start[j % SEGMENTS])
            if start <= frame:
                clip = self._clips[int(self._seg_slot[j % SEGMENTS])]
                into = (frame - start + int(self._seg_pos[j % SEGMENTS])) % clip.length
                return Playhead(clip.serial, into / clip.length, clip.seconds, clip.frame)
        return SILENT

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
        self.tap = recorder

    def stop_recording(self) -> Recorder | None:
        """Take the tap off; the caller stops it (which drains and closes its file)."""
        recorder, self.tap = self.tap, None
        return recorder

    # -- the callback's thread -----------------------------------------------------------------

    def render(self, n: int, heard_at: float | None = None) -> np.ndarray:
        """The next n frames, float32 [n, channels]; a view that the next call overwrites.
        `heard_at`: when the block's first frame reaches the speaker (time.perf_counter()), so
        that with a `grid` the loop's start is held on the shared bar."""
        if n > self._capacity:
            self._allocate(max(n, 2 * self._capacity))  # only if a device asks for a huge block
        mix = self._mix[:n]
        grid = self.grid if heard_at is not None else None
        cur, nxt = self._current, self._newest
        if grid is not None and cur >= 0:
            self._align(grid, heard_at, n, nxt != cur)
        switch_at = -1
        if nxt >= 0 and nxt != cur:
            if cur < 0:
                switch_at = 0
            else:
                length = self._clips[cur].length
                boundary = (length - self._pos) % length  # pos 0 at a block start: the boundary is now
                # a running crossfade must end first (a clip held on the bar may start near its end)
                if boundary < n and self._xf_len - self._xf_done <= boundary:
                    switch_at = boundary
        if switch_at < 0:
            if cur < 0:
                mix.fill(0.0)
            else:
                self._play(mix, 0)
        else:
            if switch_at > 0:
                self._play(mix[:switch_at], 0)
            clip = self._clips[nxt]
            pos = 0
            if grid is not None:  # the new clip starts where the band's bar is now
                pos = bar_position(grid.fraction_at(heard_at + switch_at / self.sample_rate),
                                   grid.seconds * self.sample_rate, clip.length)
                if cur < 0 or abs(loop_offset(pos, 0, clip.length)) > self._align_tolerance:
                    self._aligned_frame = self.frames
                    if cur >= 0:
                        self.realigns += 1
            self._old, self._current, self._pos, self._old_pos = cur, nxt, pos, 0
            self._xf_len, self._xf_done = min(self._xfade_samples, clip.length), 0
            self._xf_measured = cur >= 0
            self._segment(self.frames + switch_at, nxt, pos)
            if clip.max_jump > self.max_clip_jump:
                self.max_clip_jump = clip.max_jump
            self._play(mix[switch_at:], switch_at)
            if cur >= 0:
                self.switches += 1
                before = mix[switch_at - 1] if switch_at > 0 else self._last_mix
                jump = abs(float(mix[switch_at]) - float(before))
                if jump > self.max_switch_jump:
                    self.max_switch_jump = jump
        self._last_mix = float(mix[n - 1])
        self.frames += n
        self._apply_gain(mix)
        soft_limit(mix, out=mix, scratch=(self._a[:n], self._b[:n]))
        out = self._out[:n]
        np.copyto(out, mix[:, None])
        tap = self.tap
        if tap is not None:
            try:
                tap.push(out)
            except Exception as err:  # a broken recording never silences the sound
                self.tap, self.tap_fault = None, err
        return out

    def _segment(self, frame: int, slot: int, pos: int) -> None:
        i = self._seg_count % SEGMENTS
        self._seg_start[i] = frame
        self._seg_slot[i] = slot
        self._seg_pos[i] = pos
        self._seg_count += 1  # published after the entry is complete

    def _align(self, grid: BarGrid, heard_at: float, n: int, switching: bool) -> None:
        """Keep the loop on the shared bar; never inside a crossfade. Two moves, each a short
        equal-power crossfade from where the loop was to where it should be:

        - near the bar line (`retime_window`), the loop's end is re-timed onto it: the playhead
          goes to `length - samples to the bar line`, so the clip ends, and the next loop (or the
          next clip) starts, on the bar. After a tempo change the clip playing has the old length
          until the dream engine delivers one at the new tempo; this is what keeps that loop's
          end on the bar (the tail is cut, or a little of it played twice). Once a bar group,
          and early enough that its crossfade ends before the bar line.
        - elsewhere, a clip as long as the bar group that drifted off it is moved back in
          proportion (at most once a loop, and never where the move's own crossfade would still
          run at the next switch: the switch would cut it off). A clip of another length is
          left alone until its end comes near: in proportion it would drift off again at once."""
        clip = self._clips[self._current]
        length = clip.length
        if self._xf_len:
            return
        fraction = grid.fraction_at(heard_at)
        bar = grid.seconds * self.sample_rate
        to_bar = (1.0 - fraction) * bar
        if to_bar <= retime_window(length, bar, self._retime_lead):
            if to_bar <= self._realign_len + 2 * n or self.frames - self._retimed_frame < length // 2:
                return
            target = (length - to_bar) % length
            if abs(loop_offset(self._pos, target, length)) > self._align_tolerance:
                self._retimed_frame = self.frames
                self._move(int(round(target)) % length)
            return
        if abs(bar - length) > self._align_tolerance or self.frames - self._aligned_frame < length:
            return
        pos = bar_position(fraction, bar, length)
        if abs(loop_offset(self._pos, pos, length)) <= self._align_tolerance:
            return
        if switching and (length - pos) % length < self._realign_len + n:
            return
        self._aligned_frame = self.frames
        self._move(pos)

    def _move(self, pos: int) -> None:
        """Crossfade the current clip from where it plays to `pos` (a move onto the bar)."""
        self._old, self._old_pos, self._pos = self._current, self._pos, pos
        self._xf_len, self._xf_done = min(self._realign_len, self._clips[self._current].length), 0
        self._xf_measured = True
        self.realigns += 1
        self._segment(self.frames, self._current, pos)

    def _play(self, seg: np.ndarray, offset: int) -> None:
        """Fill seg (starting at block offset `offset`) from the current clip, crossfading
        while the running crossfade lasts."""
        clip = self._clips[self._current]
        done = self._xf_done
        m = min(len(seg), self._xf_len - done) if self._xf_len > done else 0
        self._pos = copy_loop(seg, clip.samples, self._pos)
        if m <= 0:
            return
        head, fo, fi = seg[:m], self._fo[:m], self._fi[:m]
        equal_power_into(fo, fi, done, self._xf_len, self._ramp)
        np.multiply(head, fi, out=head)
        old = self._old
        if old >= 0:
            tail = self._tmp[:m]
            # after a switch the old loop wraps round to its own start; after a move onto the bar
            # it goes on from where it was
            self._old_pos = copy_loop(tail, self._clips[old].samples, self._old_pos)
            np.multiply(tail, fo, out=tail)
            np.add(head, tail, out=head)
        if self._xf_measured:
            self._measure_crossfade(seg, m, offset)
        self._xf_done = done + m
        if done + m >= self._xf_len:
            self._xf_len, self._old = 0, -1

    def _measure_crossfade(self, seg: np.ndarray, m: int, offset: int) -> None:
        before = self._mix[offset - 1] if offset > 0 else self._last_mix
        jump = abs(float(seg[0]) - float(before))
        if m > 1:
            steps = self._b[:m - 1]
            np.subtract(seg[1:m], seg[:m - 1], out=steps)
            np.abs(steps, out=steps)
            jump = max(jump, float(steps.max()))
        if jump > self.max_crossfade_jump:
            self.max_crossfade_jump = jump

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


class LoopPlayer:
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
                 gil_switch_s: float | None = GIL_SWITCH_S):
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
        stream = self._stream()
        next(stream)
        self._timed = False
        self._zero_skip = self.periods + 1  # the first callbacks fill the device buffer in a burst
        self._opened_t = time.perf_counter()
        self._device.start(stream)

    # -- control (any thread) -------------------------------------------------------------------

    def offer(self, frame) -> PreparedClip | None:
        return self.renderer.offer(frame)

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

    def position(self, now: float | None = None) -> Playhead:
        """The clip and loop fraction heard at the speaker at time `now` (time.perf_counter();
        default: now), extrapolated from the last callback so it moves smoothly between them."""
        self._log_fault()
        while True:
            seq = self._clock_seq
            anchor, frame, n = self._anchor_pub, self._frame_pub, self._n_pub
            if seq % 2 == 0 and seq == self._clock_seq:
                break
            time.sleep(0)  # the callback is mid-update: let it finish
        if seq == 0:
            return SILENT
        now = time.perf_counter() if now is None else now
        heard = frame + (now - anchor - self.latency) * self.sample_rate
        return self.renderer.playhead_at(min(heard, frame + n - 1))

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
        False only when the player is closed or no output could be started again."""
        if self._closed:
            return False
        self._log_fault()
        last = max(self._last_t, self._opened_t)
        now = time.perf_counter() if now is None else now
        if self.fallback and now - self._retry_t >= RETRY_S and not (self._retrying and self._retrying.is_alive()):
            # playing silently since the output vanished or never opened: look for it again, on a
            # thread, as opening a device can take a while; the NULL device plays on meanwhile
            self._retry_t = now
            self._retrying = threading.Thread(target=self._return_to_output, name="audio-retry", daemon=True)
            self._retrying.start()
        if now - last <= STALL_S:
            return True
        time.sleep(max(0.05, 2.0 * self.period_ms / 1000.0))  # a callback only waiting for the GIL runs now
        if max(self._last_t, self._opened_t) != last:
            return True
        return self.reopen(f"no audio callback for {now - last:.1f} s")

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

    def _stream(self):
        n = yield b""
        while True:
            n = yield self._callback(n)

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
