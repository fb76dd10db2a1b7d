"""The shared bar the loop player holds its loop on: a `BarGrid`, Ableton Link's beat clock in
this process's time (control/link.py makes them; devices/player.py plays against them).

Without a grid (`LoopPlayer.set_grid(None)`) the loop runs free: its own length is its bar
group. A grid is immutable and published whole (one reference swapped), so the audio
callback reads a consistent one without a lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from immersions.registry import bar_seconds


@dataclass(frozen=True)
class BarGrid:
    """A shared beat clock (Ableton Link) in this process's time.perf_counter() seconds: `beat`
    at `t`, `tempo` beats a minute, a loop of `quantum` beats. Published whole (one reference),
    so the audio callback reads a consistent one without a lock."""

    t: float
    beat: float
    tempo: float
    quantum: float

    def fraction_at(self, when: float) -> float:
        """0 .. 1 through the loop-long bar group that is playing at `when`."""
        beat = self.beat + (when - self.t) * self.tempo / 60.0
        return (beat % self.quantum) / self.quantum

    @property
    def seconds(self) -> float:
        """The bar group's length: what a loop lasts at this tempo."""
        return bar_seconds(self.tempo, self.quantum)
