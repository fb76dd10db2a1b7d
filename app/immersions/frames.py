"""What the dream hands on, on the ground floor: the `DreamFrame` record and the sizes that
describe it (it imports nothing of ours but errors: numpy only).

The dream engine (dream/engine.py) makes DreamFrames; the player plays their clips, the
picture draws their activation tables and the HUD their scalograms; the remote protocol
sends them over the wire. All of those read the record and its sizes from here, without
importing the engine (and torch with it). How the objective of the loop heard is read
after a move (`heard_objective`, `faded_in_objective`) is here too: `bench cue` and the
installation's fade figures read it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAMES_PER_LOOP = 64  # activation frames per loop in a DreamFrame
HUD_BINS, HUD_FRAMES = 64, 128  # the small scalogram image for the overlay


@dataclass(frozen=True)
class DreamFrame:
    serial: int  # counts up with every published frame
    clip: np.ndarray  # float32 waveform, as heard (EQ applied, peak <= 1)
    sample_rate: int
    activations: np.ndarray  # float16 [nodes, FRAMES_PER_LOOP], node-major; normalized when stats exist
    selection: np.ndarray  # bool [nodes]: neurons inside the selection (at any time)
    objective: float
    step: int
    steps_per_second: float
    nan_resets: int
    scalogram: np.ndarray  # uint8 [HUD_BINS, HUD_FRAMES], low bins first
    model_name: str
    quieted: np.ndarray | None = None  # bool [nodes]: the selected neurons that are kept quiet (None: none)


def heard_objective(frame: DreamFrame | None, since: int, start: float) -> float:
    """The objective of a heard clip, for a move (a new selection) made after dream frame
    `since`: the one its dream step reported (the clip's DreamFrame) for a clip dreamed after
    the move; a clip from before it, or none, counts as the move's start value `start`.
    (`bench cue` and the installation's fade figures read the loop heard this way.)"""
    return float(frame.objective) if frame is not None and frame.serial > since else float(start)


def faded_in_objective(power: float, heard: float, start: float) -> float:
    """The objective on air while a deck is faded in: that deck's heard objective counted by its
    share of the crossfader's power (its gain squared, `power`), the deck fading out at the
    move's start value `start` (its loop never dreamed on that selection)."""
    return (1.0 - power) * start + power * heard
