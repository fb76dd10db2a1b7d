"""Opening hours: when the installation plays, and how it fades in and out.

A gallery opens at, say, 10:00 and closes at 18:00; a club night runs 22:00 .. 02:00
(the span wraps past midnight); a permanent piece plays "always" (00:00 .. 24:00).
Times are the machine's local wall clock, read as naive `datetime`s.

`level(now)` is the fade: 0 while closed, rising linearly to 1 over `fade` seconds after
opening and falling to 0 over `fade` seconds before closing. The session multiplies the
sound by it and draws a black curtain of opacity 1 - level over the picture, so the room
hears and sees the piece arrive and leave instead of a click and a cut. Closed, the
screen is black, the sound silent and dreaming paused (see session.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from immersions.errors import ImmersionsError

DAY = 24 * 3600
FADE_SECONDS = 5.0
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_time(text: str, what: str = "time", allow_end_of_day: bool = False) -> int:
    """'HH:MM' or 'HH:MM:SS' -> seconds after midnight; '24:00' only as a closing time."""
    m = _TIME.match(str(text))
    hours, minutes, seconds = (int(g) if g else 0 for g in m.groups()) if m else (-1, 0, 0)
    end_of_day = allow_end_of_day and (hours, minutes, seconds) == (24, 0, 0)
    if not m or not end_of_day and not (0 <= hours <= 23 and 0 <= minutes <= 59 and 0 <= seconds <= 59):
        upper = "24:00" if allow_end_of_day else "23:59"
        raise ImmersionsError(f"{what} '{text}' is not a time of day: write HH:MM between 00:00 and {upper}")
    return hours * 3600 + minutes * 60 + seconds


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}" + (f":{seconds % 60:02d}" if seconds % 60 else "")


@dataclass(frozen=True, init=False)
class OpeningHours:
    """Open from `open` until `close` every day ('22:00'-'02:00' wraps past midnight;
    '00:00'-'24:00', or `OpeningHours.always()`, never closes)."""

    opens: int  # seconds after midnight
    closes: int  # seconds after midnight; DAY for 24:00
    fade: float

    def __init__(self, open: str = "10:00", close: str = "18:00", fade: float = FADE_SECONDS):
        opens = parse_time(open, "opening time")
        closes = parse_time(close, "closing time", allow_end_of_day=True)
        if opens == closes % DAY and closes != DAY:
            raise ImmersionsError(f"opening and closing at {open}: give two different times, "
                                  "or leave both unset to play always")
        if not 0.0 <= float(fade) <= 600.0:
            raise ImmersionsError(f"fade of {fade} s: choose 0 .. 600 seconds")
        object.__setattr__(self, "opens", opens)
        object.__setattr__(self, "closes", closes)
        object.__setattr__(self, "fade", float(fade))

    @classmethod
    def always(cls) -> "OpeningHours":
        return cls("00:00", "24:00")

    @classmethod
    def from_args(cls, open: str | None, close: str | None, fade: float = FADE_SECONDS) -> "OpeningHours":
        """From command-line values: both set, or neither (always)."""
        if (open is None) != (close is None):
            raise ImmersionsError("give both --open and --close (e.g. --open 10:00 --close 18:00), "
                                  "or neither to play always")
        return cls.always() if open is None else cls(open, close, fade)

    @property
    def is_always(self) -> bool:
        return self.opens == 0 and self.closes == DAY

    @property
    def length(self) -> int:
        """Seconds open per day."""
        return (self.closes - self.opens) % DAY or DAY

    def __str__(self) -> str:
        return "always" if self.is_always else f"{_clock(self.opens)}-{_clock(self.closes % DAY)}"

    def _since_open(self, now: datetime) -> float:
        """Seconds since the latest opening time at or before `now` (0 .. DAY)."""
        t = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        return (t - self.opens) % DAY

    def is_open(self, now: datetime) -> bool:
        return self.is_always or self._since_open(now) < self.length

    def next_change(self, now: datetime) -> datetime | None:
        """When it next opens (while closed) or closes (while open); None for always."""
        if self.is_always:
            return None
        since = self._since_open(now)
        wait = self.length - since if since < self.length else DAY - since
        return now + timedelta(seconds=wait)

    def level(self, now: datetime) -> float:
        """0 closed, 1 open; linear ramps of `fade` seconds after opening and before closing."""
        if self.is_always:
            return 1.0
        since = self._since_open(now)
        if since >= self.length:
            return 0.0
        if self.fade <= 0.0:
            return 1.0
        return max(0.0, min(1.0, since / self.fade, (self.length - since) / self.fade))
