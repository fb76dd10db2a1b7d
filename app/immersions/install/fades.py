"""How ready each fade of the installation's two decks is when it ends.

With two decks (`install --decks`, the default) each move (a new selection or scene) dreams
on the deck off air for its whole wait, then the crossfader fades to it over `fade_bars`.
For every fade, `FadeMeter` reads three objectives of the deck faded in (each the one the
deck's DreamFrame carries, the selection's objective):

- cold: the move at its start, the first dream frame of the move on that deck (the first
  frame after the move was made whose selection is the one the deck ends with: a step the
  dream thread took before it had the whole move counts as before it);
- heard: the loop of that deck the audience hears when the fade is over (the clip the player
  plays on the fade's last output frame), read as `bench cue` reads the loop heard (a clip
  from before the move counts as cold; the deck counted by the fader's power, which at the
  fade's end is all of it);
- newest: the best the dream had reached by then, the deck's newest dream frame.

`ready` = (heard - cold) / (newest - cold): how much of the prepared rise the audience hears
once the fade is over (1: all of it). Where newest == cold there is no rise to share:
`ready` is null and the fade is counted apart (`no_rise`), as are fades that could not be
measured (`unmeasured`, by reason: no move prepared on the deck, no frame of the move yet,
cut short by the next fade, still running when the run ended).

Main thread only (the session's tick, and the autopilot's hooks it is told through): it reads
what the player and the engines publish and never touches the audio callback.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from immersions.audio.mixing import fader_gains
from immersions.frames import DreamFrame, faded_in_objective, heard_objective

READY_SHARE = 0.8  # a fade is ready when the audience hears this share of the prepared rise (bench cue's 80 %)
KEPT_FADES = 100  # the newest fades listed one by one in the figures (the summary counts them all)
MEDIAN_OF = 10_000  # the median is of the newest this many measured fades (weeks of an installation; memory stays flat)
NOT_PREPARED, NOT_DREAMED, CUT_SHORT, RUNNING = "not prepared", "not dreamed", "cut short", "running"


def readiness(cold: float, heard: float, newest: float) -> float | None:
    """(heard - cold) / (newest - cold): the share of the rise the dream prepared that is heard;
    None where there is no rise to share (newest == cold) or a value is not finite."""
    if not all(math.isfinite(v) for v in (cold, heard, newest)) or newest == cold:
        return None
    return (heard - cold) / (newest - cold)


def _unmeasured_entry(deck: str, why: str) -> dict:
    return {"deck": deck, "cold": None, "heard": None, "newest": None, "ready": None, "steps": None,
            "heard_serial": None, "newest_serial": None, "why": why}


def _same_selection(a: DreamFrame, b: DreamFrame) -> bool:
    quiet_a, quiet_b = a.quieted, b.quieted
    if (quiet_a is None) != (quiet_b is None):
        return False
    return np.array_equal(a.selection, b.selection) and (quiet_a is None or np.array_equal(quiet_a, quiet_b))


@dataclass
class Move:
    """A move prepared on a deck: the deck's newest serial when it was made, and its cold start."""

    deck: str
    since: int
    cold: DreamFrame | None = None
    seen: int = -1  # the newest serial looked at

    def watch(self, latest: DreamFrame | None) -> None:
        """(per frame) The deck's newest frame: the cold start is the first frame after the move
        from which on the selection stays the one it is now."""
        if latest is None or latest.serial <= max(self.since, self.seen):
            return
        self.seen = latest.serial
        if self.cold is None or not _same_selection(latest, self.cold):
            self.cold = latest


class FadeMeter:
    """Measures each fade of two decks; see the module docstring. `perf`: the Performance
    (its decks' engines, its clock: a LoopPlayer or an OfflineClock). Call `moved(deck)` when
    a move has been prepared on a deck, `faded()` when a fade to the prepared deck has begun,
    and `tick()` once per display frame."""

    def __init__(self, perf):
        self.perf = perf
        self.preparing: dict[str, Move] = {}
        self.fading: Move | None = None
        self.fades: deque[dict] = deque(maxlen=KEPT_FADES)
        self.ready: deque[float] = deque(maxlen=MEDIAN_OF)  # the newest measured values, for the median
        self.measured = self.ready_enough = self.no_rise = 0
        self.lowest: float | None = None
        self.unmeasured: Counter[str] = Counter()

    def _latest(self, deck: str) -> DreamFrame | None:
        state = self.perf.decks.get(deck)
        return None if state is None else state.engine.latest()

    def moved(self, deck: str) -> None:
        latest = self._latest(deck)
        self.preparing[deck] = Move(deck, latest.serial if latest is not None else 0)

    def faded(self) -> None:
        if self.fading is not None:  # the next fade began before this one ended
            self._unmeasured(self.fading, CUT_SHORT)
        deck = "B" if self.perf.clock.fader_target >= 0.5 else "A"
        self.fading = self.preparing.pop(deck, None)
        if self.fading is None:  # nothing was prepared there (a move the hub refused)
            self.unmeasured[NOT_PREPARED] += 1
            self.fades.append(_unmeasured_entry(deck, NOT_PREPARED))
        self.tick()

    def tick(self) -> None:
        for move in (*self.preparing.values(), self.fading):
            if move is not None:
                move.watch(self._latest(move.deck))
        move, clock = self.fading, self.perf.clock
        side = 1.0 if move is not None and move.deck == "B" else 0.0
        if move is not None and clock.fader == clock.fader_target == side:  # the fade is over
            self.fading = None
            self._measure(move)

    def _measure(self, move: Move) -> None:
        newest, cold = self._latest(move.deck), move.cold
        if cold is None or newest is None:
            self._unmeasured(move, NOT_DREAMED)
            return
        renderer, index = self.perf.clock.renderer, 1 if move.deck == "B" else 0
        end = renderer.fade_end - 1  # the fade's last output frame: the fader is on the deck's side
        playing = renderer.playhead_at(end, index).frame
        start = float(cold.objective)
        power = fader_gains(self.perf.clock.fader, self.perf.params["crossfader_curve"])[index] ** 2
        heard = faded_in_objective(power, heard_objective(playing, cold.serial - 1, start), start)
        self.record(move.deck, start, heard, float(newest.objective), steps=newest.step - cold.step,
                    heard_serial=playing.serial if playing is not None else None, newest_serial=newest.serial)

    def record(self, deck: str, cold: float, heard: float, newest: float, **more) -> float | None:
        """One fade measured (objectives cold, heard at its end, newest): its `ready`, counted."""
        ready = readiness(cold, heard, newest)
        if ready is None:
            self.no_rise += 1
        else:
            self.ready.append(ready)
            self.measured += 1
            self.ready_enough += ready >= READY_SHARE
            self.lowest = ready if self.lowest is None else min(self.lowest, ready)
        self.fades.append({"deck": deck, "cold": cold, "heard": heard, "newest": newest,
                           "ready": None if ready is None else round(ready, 4), **more,
                           "why": None if ready is not None else "no rise"})
        return ready

    def _unmeasured(self, move: Move, why: str) -> None:
        self.unmeasured[why] += 1
        self.fades.append(_unmeasured_entry(move.deck, why))

    def summary(self) -> dict:
        """The fades measured, the lowest `ready` and the median (of the newest MEDIAN_OF), how
        many reached READY_SHARE, and the fades with no rise or not measured (a fade still
        running counts as such)."""
        running = Counter({RUNNING: 1}) if self.fading is not None else Counter()
        return {"measured": self.measured,
                "min": round(self.lowest, 4) if self.lowest is not None else None,
                "median": round(statistics.median(self.ready), 4) if self.ready else None,
                "at_least_80_percent": self.ready_enough,
                "no_rise": self.no_rise, "unmeasured": dict(self.unmeasured + running)}

    def figures(self) -> dict:
        """The summary and the newest fades one by one (a fade still running last, unmeasured)."""
        fades = list(self.fades)
        if self.fading is not None:
            fades.append(_unmeasured_entry(self.fading.deck, RUNNING))
        return {**self.summary(), "fades": fades}
