"""What the performance drives, typed: a dream `Engine` (a DreamEngine here, or a
RemoteEngine on a GPU server) and a sound `Clock` (a LoopPlayer on an audio device, or an
OfflineClock for a headless render). The performance and the parts built on it (overlay,
control surface, installation) use these and nothing else of them: no probing for methods."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from immersions.devices.player import Playhead
from immersions.frames import DreamFrame
from immersions.registry import Snapshot
from immersions.selection import Region, Selection


class Engine(Protocol):
    params: Snapshot
    error: str | None
    # the link to a dream server, in one line (None when dreaming here), and whether it is up
    status: str | None

    @property
    def paused(self) -> bool: ...

    @property
    def selection(self) -> Selection: ...

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def select(self, region: Region, keep: bool = False) -> None: ...

    def edit(self, region: Region) -> None: ...

    def submit(self, params: Snapshot) -> bool: ...

    def set_start(self, clip: np.ndarray) -> None: ...

    def set_blend(self, clip: np.ndarray) -> None:
        """The clip `mix_original` blends in; ImmersionsError where the engine cannot take one."""

    def switch_model(self, model, stats) -> None: ...

    def latest(self) -> DreamFrame | None: ...

    def another_deck(self, model, stats, start: np.ndarray, params: Snapshot, seed: int,
                     on_frame: Callable[[DreamFrame], None], deck: str) -> "Engine":
        """The engine for deck `deck` of the same performance (a DreamEngine of its own here;
        with remote dreaming, a deck on the same link to the server)."""


class Clock(Protocol):
    sample_rate: int
    device_name: str
    fallback: bool
    follows_link: bool  # whether it can hold the loop's start on an Ableton Link bar (set_grid)

    @property
    def latency(self) -> float: ...

    @property
    def recording(self) -> bool: ...

    def offer(self, frame, deck: int = 0) -> object: ...

    @property
    def fader(self) -> float:
        """Where the crossfader is now: 0 = deck A alone, 1 = deck B alone."""

    @property
    def fader_target(self) -> float:
        """Where it is going (the hand's value, or a running fade's end)."""

    def fade_to(self, target: float, bars: int, bar_seconds: float) -> None: ...

    def configure(self, settings) -> None: ...

    def set_volume(self, volume: float) -> None: ...

    def position(self, now: float | None = None, deck: int | None = None) -> Playhead: ...

    def stats(self): ...

    def start_recording(self, path: str | Path | None = None, folder: str | Path | None = None) -> Path: ...

    def stop_recording(self): ...

    def close(self, fade: bool = True) -> None: ...
