"""Automation: a standard MIDI file replayed through a controller's map, on the caller's clock.

A performance (or a gallery piece) can replay what a performer once played on the
controller: `immersions midi record take.mid` writes it, `Automation.load("take.mid")`
reads it back -- all tracks merged, tempo changes respected -- as a list of channel
messages (CC, notes, program changes) at absolute times in seconds.

Replay has no thread and no timer of its own: the caller asks `due(t)` with *its* clock
(the heard time of the loop player, or simulated time in a headless render) and hands
each message to `MidiController.handle(msg, source=AUTOMATION)`. The same file therefore
replays identically in a live show and in a deterministic offline render.

A take names the map it was played on (a text event, "immersions map: bcf2000"), and replay
goes through that map unless `--map` names another; a file without one replays through the
map every MIDI command defaults to (`control.midi.map_for_port`).
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import mido

from immersions.errors import ImmersionsError

REPLAYED = ("control_change", "note_on", "note_off", "program_change")
MAP_TEXT = "immersions map: "  # a text event naming the map a take was played on (`midi record` writes it)


class Automation:
    """Channel messages at absolute times (seconds from the start), handed out as they fall due."""

    def __init__(self, events: list[tuple[float, mido.Message]], path: Path | None = None,
                 map_name: str | None = None):
        events = sorted(events, key=lambda e: e[0])  # stable: simultaneous messages keep their order
        self.map_name = map_name  # the map the take was played on (a shipped name or a file), if it says
        self.times = [t for t, _ in events]
        self.messages = [m.copy(time=t) for t, m in events]  # .time: absolute seconds
        self.path = path
        self._next = 0

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Automation":
        """Read a standard MIDI file (type 0 or 1); a missing or malformed one is a one-line error."""
        path = Path(path)
        try:
            midi = mido.MidiFile(path)
            events, now, map_name = [], 0.0, None
            for msg in midi:  # merged tracks; each msg.time is the delta in seconds at the tempo then
                now += msg.time
                if msg.type in REPLAYED:
                    events.append((now, msg))
                elif msg.type == "text" and msg.text.startswith(MAP_TEXT) and map_name is None:
                    map_name = msg.text[len(MAP_TEXT):].strip() or None
        except FileNotFoundError:
            raise ImmersionsError(f"no MIDI file at {path}") from None
        except TypeError:  # mido: "can't merge tracks in type 2 (asynchronous) file"
            raise ImmersionsError(f"{path} is a type 2 (asynchronous) MIDI file; save it as type 0 or 1") from None
        except Exception as err:  # mido raises what its parser meets: EOFError, OSError, ValueError, KeyError ...
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ImmersionsError(f"{path} is not a readable MIDI file ({why}); record one with "
                                  "`immersions midi record`") from None
        return cls(events, path, map_name)

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def duration(self) -> float:
        """Time of the last message (0 for an empty file)."""
        return self.times[-1] if self.times else 0.0

    @property
    def done(self) -> bool:
        return self._next >= len(self.messages)

    def due(self, t: float) -> list[mido.Message]:
        """The messages at times <= t not handed out yet, in order (each .time is its absolute time)."""
        end = bisect.bisect_right(self.times, t, lo=self._next)
        out = self.messages[self._next:end]
        self._next = max(self._next, end)
        return out

    def reset(self) -> None:
        """Start again from the beginning (a looping installation calls this when `done`)."""
        self._next = 0


def write_automation(path: str | os.PathLike, events: list[tuple[float, mido.Message]], *,
                     bpm: float = 120.0, ticks_per_beat: int = 960, midi_map: str | None = None) -> Path:
    """Write (seconds, message) pairs as a type 0 MIDI file at `bpm`; times are rounded to the
    nearest tick (0.5 ms at the defaults). `midi_map` (a shipped map's name or a map file) is
    written as a text event, and replay uses that map unless told another. Returns the path."""
    if bpm <= 0 or ticks_per_beat <= 0:
        raise ImmersionsError("write_automation: bpm and ticks_per_beat must be positive")
    tempo = mido.bpm2tempo(bpm)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    if midi_map and str(midi_map).isascii():  # MIDI text is 8-bit: a map file whose name is not stays unnamed
        track.append(mido.MetaMessage("text", text=MAP_TEXT + str(midi_map), time=0))
    previous = 0
    for seconds, msg in sorted(events, key=lambda e: e[0]):
        if seconds < 0:
            raise ImmersionsError(f"write_automation: message at {seconds:g} s is before the start")
        if msg.is_meta:
            continue
        tick = round(mido.second2tick(seconds, ticks_per_beat, tempo))
        track.append(msg.copy(time=tick - previous))
        previous = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, tracks=[track]).save(path)
    return path
