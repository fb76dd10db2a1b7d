"""One deck of the loop player: its clips, the switch at its loop's end, its hold on the bar.

The player (`devices/player.py: LoopRenderer`) mixes two decks, A and B, through the
crossfader. Each deck keeps its own clip slots, plays the newest clip offered to it, takes a
new one only when its playhead crosses its loop's end (with an equal-power crossfade from the
old loop wrapping round to its own start), and knows where its playhead was at every recent
output frame (`playhead_at`).

Both decks share one bar: with a `BarGrid` (Ableton Link) each holds its loop's start on it
(`_align`); without one, a deck that starts (or switches) while the other deck plays starts
at the other deck's place in its loop, so both loops start on the same bar.

A deck the listener cannot hear (the crossfader fully on the other side, and no cue output
playing it) is only *advanced*: its playhead, its switches and crossfades move on as if it
played, and no sample is touched.

Threads: `offer` from any thread (under the deck's offer lock, never taken by the callback);
`render` from the audio callback only: it copies prepared buffers, no locks, nothing allocated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from immersions.audio.mixing import (bar_position, copy_loop, equal_power_into, loop_max_jump, loop_offset,
                                     resample_loop, retime_window)
from immersions.devices.grid import BarGrid
from immersions.errors import ImmersionsError

MIN_CLIP_SAMPLES = 32
SLOTS = 16  # prepared clips alive at once: newest, current, fading, recent segments, free
SEGMENTS = 8  # remembered clip starts (switches), so the playhead can look back past one


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


class Deck:
    """One deck's loop, rendered into its own mono buffer (`mix`) by the player that owns it.

    owner: the LoopRenderer, which holds the sample rate, the output frame counter (`frames`,
    the first frame of the block being rendered), the crossfade's length, the shared scratch
    buffers and the settings of the hold on the bar."""

    def __init__(self, owner, index: int):
        self._r = owner
        self.index = index  # 0 = deck A, 1 = deck B
        # clip slots: written only by offer() (under _offer_lock), read by the callback via indexes
        self._clips: list[PreparedClip | None] = [None] * SLOTS
        self._offer_lock = threading.Lock()  # between offering threads only; never in the callback
        self._last_slot = -1
        self._newest = -1
        self._current = -1
        self._old = -1  # the clip fading out (-1: none, or fading in from silence)
        self._pos = 0  # next sample of the current clip
        self._old_pos = 0  # next sample of the clip fading out
        self._xf_len = 0  # samples in the running crossfade (0: none)
        self._xf_done = 0  # samples of the running crossfade already played
        self._xf_measured = False  # whether the running crossfade is between two clips
        self._last_mix = 0.0
        # switches, newest last: output frame where a clip started, its slot, and where in its loop
        self._seg_start = np.zeros(SEGMENTS, np.int64)
        self._seg_slot = np.zeros(SEGMENTS, np.int64)
        self._seg_pos = np.zeros(SEGMENTS, np.int64)
        self._seg_count = 0
        self.switches = 0
        self.max_switch_jump = 0.0
        self.max_crossfade_jump = 0.0
        self.max_clip_jump = 0.0
        self.realigns = 0  # moves onto the shared bar (each a short crossfade)
        self._aligned_frame = -(1 << 62)  # output frame of the last move onto the bar
        self._retimed_frame = -(1 << 62)  # output frame of the last re-timing of a loop's end
        self.mix = np.zeros(0, np.float32)  # this deck's block, before the crossfader (the owner allocates it)

    # -- any thread ----------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        """Whether a clip is playing on this deck (an empty deck is silent)."""
        return self._current >= 0

    @property
    def length(self) -> int:
        """Samples in the loop playing now (0 when none plays)."""
        current = self._current
        return self._clips[current].length if current >= 0 else 0

    def offer(self, frame) -> PreparedClip | None:
        """Prepare a clip and make it the one to switch to at this deck's next loop boundary.
        Returns the prepared clip, or None when that serial is already the newest."""
        newest = self._newest
        if newest >= 0 and self._clips[newest].serial == getattr(frame, "serial", None):
            return None
        clip = prepare_clip(frame, self._r.sample_rate)
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

    def segments(self) -> list[tuple[int, PreparedClip, int]]:
        """The remembered clip starts (switches and moves onto the bar), oldest first: (output
        frame, the clip, where in its loop it started), at most SEGMENTS of them."""
        count = self._seg_count
        found = []
        for j in range(max(0, count - SEGMENTS + 1), count):  # the oldest entry may be rewritten now
            i = j % SEGMENTS
            found.append((int(self._seg_start[i]), self._clips[int(self._seg_slot[i])], int(self._seg_pos[i])))
        return found

    # -- the callback's thread -----------------------------------------------------------------

    def render(self, n: int, heard_at: float | None, grid: BarGrid | None, audible: bool,
               other: tuple[int, int]) -> None:
        """The next n frames of this deck into `self.mix[:n]` (when `audible`; else the deck only
        moves on). `other`: (loop length, playhead) of the other deck at the block's start, length
        0 when it plays nothing: without a grid, a clip that starts here starts at its place."""
        mix = self.mix[:n]
        r = self._r
        grid = grid if heard_at is not None else None
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
                if audible:
                    mix.fill(0.0)
            else:
                self._play(mix, 0, audible)
            return
        if switch_at > 0:
            self._play(mix[:switch_at], 0, audible)
        clip = self._clips[nxt]
        pos = 0
        if grid is not None:  # the new clip starts where the band's bar is now
            pos = bar_position(grid.fraction_at(heard_at + switch_at / r.sample_rate),
                               grid.seconds * r.sample_rate, clip.length)
            if cur < 0 or abs(loop_offset(pos, 0, clip.length)) > r._align_tolerance:
                self._aligned_frame = r.frames
                if cur >= 0:
                    self.realigns += 1
        elif other[0] > 0:  # the other deck plays: start on its bar, at its place in the loop
            into = (other[1] + switch_at) % other[0]
            pos = into if other[0] == clip.length else int(into / other[0] * clip.length) % clip.length
        self._old, self._current, self._pos, self._old_pos = cur, nxt, pos, 0
        self._xf_len, self._xf_done = min(r._xfade_samples, clip.length), 0
        self._xf_measured = cur >= 0
        self._segment(r.frames + switch_at, nxt, pos)
        if clip.max_jump > self.max_clip_jump:
            self.max_clip_jump = clip.max_jump
        self._play(mix[switch_at:], switch_at, audible)
        if cur >= 0:
            self.switches += 1
            if audible:
                before = mix[switch_at - 1] if switch_at > 0 else self._last_mix
                jump = abs(float(mix[switch_at]) - float(before))
                if jump > self.max_switch_jump:
                    self.max_switch_jump = jump

    def finish(self, n: int, audible: bool) -> None:
        """(callback) The block is done: remember its last sample for the next one's jump."""
        self._last_mix = float(self.mix[n - 1]) if audible else 0.0

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
        r = self._r
        clip = self._clips[self._current]
        length = clip.length
        if self._xf_len:
            return
        fraction = grid.fraction_at(heard_at)
        bar = grid.seconds * r.sample_rate
        to_bar = (1.0 - fraction) * bar
        if to_bar <= retime_window(length, bar, r._retime_lead):
            if to_bar <= r._realign_len + 2 * n or r.frames - self._retimed_frame < length // 2:
                return
            target = (length - to_bar) % length
            if abs(loop_offset(self._pos, target, length)) > r._align_tolerance:
                self._retimed_frame = r.frames
                self._move(int(round(target)) % length)
            return
        if abs(bar - length) > r._align_tolerance or r.frames - self._aligned_frame < length:
            return
        pos = bar_position(fraction, bar, length)
        if abs(loop_offset(self._pos, pos, length)) <= r._align_tolerance:
            return
        if switching and (length - pos) % length < r._realign_len + n:
            return
        self._aligned_frame = r.frames
        self._move(pos)

    def _move(self, pos: int) -> None:
        """Crossfade the current clip from where it plays to `pos` (a move onto the bar)."""
        self._old, self._old_pos, self._pos = self._current, self._pos, pos
        self._xf_len, self._xf_done = min(self._r._realign_len, self._clips[self._current].length), 0
        self._xf_measured = True
        self.realigns += 1
        self._segment(self._r.frames, self._current, pos)

    def _play(self, seg: np.ndarray, offset: int, audible: bool) -> None:
        """Fill seg (starting at block offset `offset`) from the current clip, crossfading
        while the running crossfade lasts; a deck nobody hears only moves on."""
        clip = self._clips[self._current]
        done = self._xf_done
        m = min(len(seg), self._xf_len - done) if self._xf_len > done else 0
        if audible:
            self._pos = copy_loop(seg, clip.samples, self._pos)
        else:
            self._pos = (self._pos + len(seg)) % clip.length
        if m <= 0:
            return
        old = self._old
        if audible:
            r = self._r
            head, fo, fi = seg[:m], r._fo[:m], r._fi[:m]
            equal_power_into(fo, fi, done, self._xf_len, r._ramp)
            np.multiply(head, fi, out=head)
            if old >= 0:
                tail = r._tmp[:m]
                # after a switch the old loop wraps round to its own start; after a move onto the bar
                # it goes on from where it was
                self._old_pos = copy_loop(tail, self._clips[old].samples, self._old_pos)
                np.multiply(tail, fo, out=tail)
                np.add(head, tail, out=head)
            if self._xf_measured:
                self._measure_crossfade(seg, m, offset)
        elif old >= 0:
            self._old_pos = (self._old_pos + m) % self._clips[old].length
        self._xf_done = done + m
        if done + m >= self._xf_len:
            self._xf_len, self._old = 0, -1

    def _measure_crossfade(self, seg: np.ndarray, m: int, offset: int) -> None:
        before = self.mix[offset - 1] if offset > 0 else self._last_mix
        jump = abs(float(seg[0]) - float(before))
        if m > 1:
            steps = self._r._b[:m - 1]
            np.subtract(seg[1:m], seg[:m - 1], out=steps)
            np.abs(steps, out=steps)
            jump = max(jump, float(steps.max()))
        if jump > self.max_crossfade_jump:
            self.max_crossfade_jump = jump
