"""The one registry of live parameters, on the ground floor (it imports nothing of ours but
errors).

Every parameter a performer, a controller, a preset or the autopilot can move is declared
here once: name, group, range, default, scale, unit, description, which part consumes it,
how far the autopilot may move it, and how text becomes its value (`Parameter.parse`, the
one parser for the command line, OSC, journeys and map files). The overlay, MIDI maps (with
learn and feedback), OSC addresses, presets, the autopilot's table, the renderer's visuals,
the player's settings and the routing of a change (`consumer`) are all derived from this
table: adding a parameter is one line plus the code that uses its value.

Engines never read a mutable dict: they read a `Snapshot`, an immutable set of values
that was validated as a whole. A change that fails validation is rejected with a
one-line error and the last good snapshot stays in force.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from immersions.errors import ImmersionsError

LINEAR, LOG, INTEGER, TOGGLE, CHOICE = "linear", "log", "int", "toggle", "choice"
# Who consumes a parameter, so that a change reaches it without a table of names anywhere else:
# DREAM: the dream engine's snapshot; SELECT: the region being edited (and the engine's snapshot);
# PLAYER: the loop player's settings (`configure`); RENDERER: the map's `Visuals`; WINDOW: the
# window's pacing; SCENE: preset recall; LISTEN: the listen thread; ACTION: read when an action runs
# (restart, capture); DECKS: the performance's two decks (which one the controls edit, which dream).
DREAM, SELECT, PLAYER, RENDERER, WINDOW, SCENE, LISTEN, ACTION, DECKS = (
    "dream", "selection", "player", "renderer", "window", "scene", "listen", "action", "decks")
CONSUMERS = (DREAM, SELECT, PLAYER, RENDERER, WINDOW, SCENE, LISTEN, ACTION, DECKS)
ENGINE_CONSUMERS = (DREAM, SELECT)  # a change of these reaches the dream engine as a new snapshot
TRUE_WORDS, FALSE_WORDS = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


@dataclass(frozen=True)
class Parameter:
    name: str  # registry name: lower_snake_case, also the OSC address /immersions/<name>
    group: str  # overlay section: Selection, Optimizer, Regularizers, Sound, Visuals
    default: float | int | bool | str
    minimum: float = 0.0
    maximum: float = 1.0
    scale: str = LINEAR  # how a 0..1 control (fader, knob) maps onto the range
    unit: str = ""
    description: str = ""
    choices: tuple[str, ...] = ()
    consumer: str = DREAM
    # where the autopilot moves it: (low, high) inside the range, or for a choice one weight per
    # choice; () = the autopilot leaves it alone
    autopilot: tuple[float, ...] = ()

    def parse(self, text: str):
        """Text (a command line's NAME=VALUE, an OSC string, a journey) as this parameter's
        value, validated; a typo is refused with a one-line reason, never read as off."""
        word = str(text).strip()
        if self.scale == CHOICE:
            return self.validate(word)
        if self.scale == TOGGLE:
            if word.lower() in TRUE_WORDS:
                return True
            if word.lower() in FALSE_WORDS:
                return False
            raise ImmersionsError(f"{self.name}: '{word}' is not on/off (use true/false, on/off, yes/no or 1/0)")
        try:
            number = float(word)
        except ValueError:
            raise ImmersionsError(f"{self.name}: '{word}' is not a number") from None
        return self.validate(int(number) if self.scale == INTEGER and number.is_integer() else number)

    def validate(self, value):
        """The value in this parameter's type, or ImmersionsError naming what is wrong."""
        if self.scale == CHOICE:
            if value not in self.choices:
                raise ImmersionsError(f"{self.name}: '{value}' is not one of {', '.join(self.choices)}")
            return value
        if self.scale == TOGGLE:
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ImmersionsError(f"{self.name}: expected on/off (true/false), got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ImmersionsError(f"{self.name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ImmersionsError(f"{self.name}: {value} is not a finite number")
        if not self.minimum <= value <= self.maximum:
            raise ImmersionsError(
                f"{self.name}: {value:g} is outside {self.minimum:g} .. {self.maximum:g}{' ' + self.unit if self.unit else ''}"
            )
        if self.scale == INTEGER:
            if float(value) != int(value):
                raise ImmersionsError(f"{self.name}: expected a whole number, got {value:g}")
            return int(value)
        return float(value)

    def from_unit(self, u: float):
        """Map a control position u in [0, 1] (a fader, a knob, MIDI CC / 127) to a value."""
        u = min(1.0, max(0.0, float(u)))
        if self.scale == TOGGLE:
            return u >= 0.5
        if self.scale == CHOICE:
            return self.choices[min(len(self.choices) - 1, int(u * len(self.choices)))]
        if self.scale == LOG:
            return self.minimum * (self.maximum / self.minimum) ** u
        value = self.minimum + u * (self.maximum - self.minimum)
        return int(round(value)) if self.scale == INTEGER else value

    def to_unit(self, value) -> float:
        """Inverse of from_unit: where a motor fader or LED ring should stand for `value`."""
        value = self.validate(value)
        if self.scale == TOGGLE:
            return 1.0 if value else 0.0
        if self.scale == CHOICE:
            return (self.choices.index(value) + 0.5) / len(self.choices)
        if self.maximum == self.minimum:
            return 0.0
        if self.scale == LOG:
            return math.log(value / self.minimum) / math.log(self.maximum / self.minimum)
        return (value - self.minimum) / (self.maximum - self.minimum)


class Registry:
    """An ordered, immutable table of parameters."""

    def __init__(self, parameters: Iterable[Parameter]):
        self._by_name: dict[str, Parameter] = {}
        for p in parameters:
            if p.name in self._by_name:
                raise ValueError(f"parameter '{p.name}' is declared twice")
            if p.scale == LOG and not 0 < p.minimum < p.maximum:
                raise ValueError(f"log parameter '{p.name}' needs 0 < minimum < maximum")
            p.validate(p.default)
            if p.consumer not in CONSUMERS:
                raise ValueError(f"parameter '{p.name}': consumer '{p.consumer}' is not one of {', '.join(CONSUMERS)}")
            _check_autopilot(p)
            self._by_name[p.name] = p

    def __iter__(self):
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self._by_name[name]
        except KeyError:
            raise ImmersionsError(f"unknown parameter '{name}'") from None

    def consumed_by(self, consumer: str) -> tuple[Parameter, ...]:
        return tuple(p for p in self if p.consumer == consumer)

    def steered(self) -> tuple[Parameter, ...]:
        """The parameters the autopilot moves (those with an `autopilot` range or weights)."""
        return tuple(p for p in self if p.autopilot)

    def groups(self) -> dict[str, list[Parameter]]:
        out: dict[str, list[Parameter]] = {}
        for p in self:
            out.setdefault(p.group, []).append(p)
        return out

    def defaults(self) -> "Snapshot":
        return Snapshot(self, {p.name: p.default for p in self})


def _check_autopilot(p: Parameter) -> None:
    """An autopilot range lies inside the parameter's range; choice weights match its choices."""
    if not p.autopilot:
        return
    if p.scale == CHOICE:
        if len(p.autopilot) != len(p.choices) or min(p.autopilot) < 0 or sum(p.autopilot) <= 0:
            raise ValueError(f"parameter '{p.name}': autopilot needs one weight >= 0 per choice")
        return
    if len(p.autopilot) != 2 or p.autopilot[0] > p.autopilot[1]:
        raise ValueError(f"parameter '{p.name}': autopilot range must be (low, high)")
    for value in p.autopilot:
        try:
            p.validate(value)
        except ImmersionsError as err:
            raise ValueError(f"parameter '{p.name}': autopilot range: {err}") from None


@dataclass(frozen=True)
class Snapshot:
    """Immutable, validated values for every parameter of a registry."""

    registry: Registry
    _values: Mapping[str, object] = field(repr=False)

    def __post_init__(self):
        values = {}
        for p in self.registry:
            if p.name not in self._values:
                raise ImmersionsError(f"snapshot lacks parameter '{p.name}'")
            values[p.name] = p.validate(self._values[p.name])
        unknown = set(self._values) - set(values)
        if unknown:
            raise ImmersionsError(f"unknown parameter '{sorted(unknown)[0]}'")
        object.__setattr__(self, "_values", MappingProxyType(values))

    def __getitem__(self, name: str):
        if name not in self._values:
            raise ImmersionsError(f"unknown parameter '{name}'")
        return self._values[name]

    def values(self) -> Mapping[str, object]:
        return self._values

    def replace(self, **changes) -> "Snapshot":
        """A new snapshot with `changes` applied; raises (and changes nothing) if any is invalid."""
        return Snapshot(self.registry, {**self._values, **changes})


BEATS_PER_BAR = 4  # every bar here is a bar of 4/4


def beat_seconds(bpm: float) -> float:
    """How long one beat lasts at `bpm`."""
    return 60.0 / bpm


def bar_seconds(bpm: float, beats_per_bar: float = BEATS_PER_BAR) -> float:
    """How long a bar of `beats_per_bar` beats lasts at `bpm`; a group of bars (a loop, Ableton
    Link's quantum) is one bar of all their beats. The one place the 4/4 arithmetic is written."""
    return beats_per_bar * 60.0 / bpm


def loop_seconds(params: Mapping) -> float:
    """How long one loop lasts: `bars` bars of 4/4 at `bpm`."""
    beats = BEATS_PER_BAR * int(params["bars"])
    return bar_seconds(float(params["bpm"]), beats)


def loop_length(params: Mapping, sample_rate: int) -> int:
    """Samples in one loop at `sample_rate` (the one place the loop's length is computed)."""
    return int(round(loop_seconds(params) * sample_rate))


# -- the live parameters: dreaming, then playback and visuals -----------------------------
# One table: the dream engine reads the dreaming ones, the player and the renderer theirs.

SELECTION, OPTIMIZER, REGULARIZERS, SOUND, VISUALS, SCENES = (
    "Selection", "Optimizer", "Regularizers", "Sound", "Visuals", "Scenes")
SOUND_IN = "Sound in"  # the room's sound: listen mode and capture (`perform --input`)
DECK_GROUP = "Decks"  # two decks and the crossfader; not kept in presets (a preset loads into a deck)
DECK_NAMES = ("A", "B")  # the decks, in the crossfader's order (0 = A, 1 = B)
DECK_DREAMING = ("off_air", "both")  # dream_decks' choices
FADER_CURVES = ("equal_power", "cut")  # crossfader_curve's choices (audio/mixing.py draws them)
OPEN_GROUPS = (SELECTION, SOUND)  # the overlay's sections that start open
START_CLIPS = ("silence", "noise", "kick", "groove")  # the shipped start clips (assets/clips)
REPEAT_PERIODS = {"beat": 1, "half_bar": 2, "bar": 4}  # repeat_every's choices, in beats
# progression's choices: the semitones of each chord's root from the first, one chord to each
# part of the loop (cut evenly); transforms.transpose_parts centres them on the ear's register
PROGRESSIONS = {
    "none": (0,),
    "I-IV": (0, 5),
    "I-V": (0, -5),
    "I-vi-IV-V": (0, -3, -7, -5),
    "I-V-vi-IV": (0, -5, -3, -7),
    "i-VI-III-VII": (0, -4, 3, -2),
}

DREAM_PARAMETERS = (
    Parameter("layer", SELECTION, 0.5, description="position through the network's taps: 0 = first encoder tap, 1 = last context layer", consumer=SELECT),
    Parameter("channel_pos", SELECTION, 0.5, description="where the selected channels start, as a fraction of the free room", consumer=SELECT),
    Parameter("channel_span", SELECTION, 0.0, description="fraction of channels selected (0 = one channel)", consumer=SELECT),
    Parameter("pitch_pos", SELECTION, 0.5, description="where the selected pitches start", consumer=SELECT),
    Parameter("pitch_span", SELECTION, 1.0, description="fraction of pitches selected (0 = one pitch)", consumer=SELECT),
    Parameter("time_pos", SELECTION, 0.5, description="where the selected time steps start", consumer=SELECT),
    Parameter("time_span", SELECTION, 1.0, description="fraction of the loop's time steps selected", consumer=SELECT),
    Parameter("keep", SELECTION, False, scale=TOGGLE, description="add the next region to the selection instead of replacing it", consumer=SELECT),
    Parameter("quiet", SELECTION, False, scale=TOGGLE, description="the region being edited is kept quiet instead of excited: the dream lowers its neurons while the others rise", consumer=SELECT),
    Parameter("quiet_weight", SELECTION, 2.0, 0.25, 4.0, scale=LOG, description="how hard a quiet region is held down against the excited ones (its weight is minus this; at 1 an excited region's pull can still lift it)", consumer=SELECT),
    Parameter("start_clip", SELECTION, "groove", scale=CHOICE, choices=START_CLIPS, description="what the loop starts from when it is restarted (the restart action)", consumer=ACTION),
    Parameter("learning_rate", OPTIMIZER, -2.0, -5.0, 2.0, unit="log10", description="step size 10^x; below -4.9 dreaming pauses", autopilot=(-2.6, -1.4)),
    Parameter("optimizer", OPTIMIZER, "sgd", scale=CHOICE, choices=("sgd", "adam"), description="update rule after the gradient is normalized", autopilot=(0.75, 0.25)),
    Parameter("space", OPTIMIZER, "spectrum", scale=CHOICE, choices=("waveform", "spectrum", "stft", "components"), description="where the step is taken: the samples, the loop's spectrum, its short-time spectra (both tilted by step_tilt), or a mix of the start clip's components"),
    Parameter("step_tilt", OPTIMIZER, -6.0, -12.0, 3.0, unit="dB/oct", description="in the spectrum and stft spaces, how a step's power falls per octave (-3 = pink, 0 = white)"),
    Parameter("step_floor", OPTIMIZER, 160.0, 20.0, 640.0, scale=LOG, unit="Hz", description="in the spectrum and stft spaces, below this a step's power stops rising with the tilt, as real music's balance is level there; 40 gives an ear that wants sub-bass (the house ear's late taps) more of it"),
    Parameter("mix_original", OPTIMIZER, 0.0, description="after each step, blend this much of the start clip back in", autopilot=(0.0, 0.15)),
    Parameter("time_jitter", REGULARIZERS, 0.1, 0.0, 2.0, unit="s", description="largest circular time shift of the jittered copies; large values smear into pads", autopilot=(0.0, 0.4)),
    Parameter("jitter_grid", REGULARIZERS, "free", scale=CHOICE, choices=("free", "sixteenth", "beat"), description="time jitter in whole beats or sixteenths of the tempo (at least one step), or free"),
    Parameter("pitch_jitter", REGULARIZERS, 1.0, 0.0, 8.0, unit="bins", description="largest random pitch shift of the copies' scalograms", autopilot=(0.0, 3.0)),
    Parameter("mask_time", REGULARIZERS, 0.1, 0.0, 0.5, description="width of a random silent time band per copy, as a fraction of the loop", autopilot=(0.0, 0.25)),
    Parameter("mask_pitch", REGULARIZERS, 0.1, 0.0, 0.5, description="width of a random silent pitch band per copy, as a fraction of the bins", autopilot=(0.0, 0.25)),
    Parameter("gradient_noise", REGULARIZERS, 0.05, 0.0, 1.0, description="noise added to the normalized gradient, relative to its std", autopilot=(0.0, 0.2)),
    Parameter("denoise", REGULARIZERS, 0.0, 0.0, 1.0, description="strength of the de-noising applied to the loop after each step", autopilot=(0.0, 0.3)),
    Parameter("sparsity", REGULARIZERS, 0.05, 0.0, 1.0, description="after each step, shrink each moment's spectrum against its loudest partial, sparing what the selection pulls on (tones and hits stay, hiss goes)"),
    Parameter("balance", REGULARIZERS, 0.1, 0.0, 1.0, description="after each step, move the loop's octave balance this much toward real music's"),
    Parameter("harmonics", REGULARIZERS, 0.0, 0.0, 1.0, description="after each step, raise the overtones of each moment's strongest partials this much toward a harmonic series (pitched, instrument-like tones instead of bare sines)"),
    Parameter("beat_repeat", REGULARIZERS, 0.1, 0.0, 1.0, description="after each step, blend this much of the loop's average over whole beats into it (onsets repeat at the tempo)"),
    Parameter("repeat_every", REGULARIZERS, "half_bar", scale=CHOICE, choices=tuple(REPEAT_PERIODS), description="the period beat_repeat averages over: every beat the same sound, or a figure of two beats (the default), or of a bar, repeated; the notes may move inside it", autopilot=(0.3, 0.5, 0.2)),
    Parameter("progression", REGULARIZERS, "none", scale=CHOICE, choices=tuple(PROGRESSIONS), description="a chord progression: the loop is cut into one part per chord and the ear hears each part transposed back to the root, so the dream plays its figure on each chord in turn", autopilot=(0.6, 0.08, 0.08, 0.08, 0.08, 0.08)),
    Parameter("rhythm_repeat", REGULARIZERS, 0.0, 0.0, 1.0, description="after each step, move each octave band's loudness this much toward its average over whole beats: the rhythm repeats at the tempo, the notes and chords in it may change from beat to beat"),
    Parameter("contrast", REGULARIZERS, 0.75, 0.0, 2.0, description="weight of the selected layer's other channels (the loudest of them: contrast_share), subtracted: the selection has to rise above its neighbours rather than with them"),
    Parameter("contrast_share", REGULARIZERS, 0.1, 0.0, 1.0, description="which of the layer's other channels the contrast holds down: the loudest share of them, found again every step (0 = the loudest one, 0.1 = the loudest tenth, the default: the ones that rise with the selection), or the whole layer's mean (1)"),
    Parameter("activation_penalty", REGULARIZERS, 0.0, 0.0, 1.0, description="weight of the mean of all normalized activations", autopilot=(0.0, 0.2)),
    Parameter("energy_penalty", REGULARIZERS, 0.0, 0.0, 1.0, description="weight of the mean scalogram level (loudness, noise)", autopilot=(0.0, 0.2)),
    Parameter("high_frequency_penalty", REGULARIZERS, 0.0, 0.0, 1.0, description="weight of a ramp over the top half of the bins", autopilot=(0.0, 0.3)),
    Parameter("eq_low", SOUND, 0.0, -24.0, 12.0, unit="dB", description="low shelf below 250 Hz"),
    Parameter("eq_mid", SOUND, 0.0, -24.0, 12.0, unit="dB", description="peak band 250 Hz .. 4 kHz"),
    Parameter("eq_high", SOUND, 0.0, -24.0, 12.0, unit="dB", description="high shelf above 4 kHz"),
    Parameter("bpm", SOUND, 120.0, 60.0, 200.0, unit="BPM", description="tempo that sets the loop length"),
    Parameter("bars", SOUND, 2, 1, 8, scale=INTEGER, description="4/4 bars per loop"),
)

PERFORM_PARAMETERS = (
    Parameter("volume", SOUND, 0.8, 0.0, 1.5, description="master gain before the soft limiter (1 = unity)", consumer=PLAYER),
    Parameter("crossfade", SOUND, 0.05, 0.005, 1.0, scale=LOG, unit="s", description="equal-power crossfade when the next loop takes over", consumer=PLAYER),
    Parameter("brightness", VISUALS, 1.0, 0.0, 4.0, description="glow of the neurons", consumer=RENDERER),
    Parameter("node_size", VISUALS, 1.0, 0.25, 4.0, scale=LOG, description="size of the neuron sprites", consumer=RENDERER),
    Parameter("edge_brightness", VISUALS, 0.5, 0.0, 4.0, description="glow of the connections", consumer=RENDERER),
    Parameter("edge_count", VISUALS, 100_000, 1_000, 50_000_000, scale=LOG, description="connections drawn: the strongest ones first", consumer=RENDERER),
    Parameter("bloom", VISUALS, True, scale=TOGGLE, description="HDR bloom around bright neurons", consumer=RENDERER),
    Parameter("bloom_intensity", VISUALS, 1.0, 0.0, 4.0, description="strength of the bloom", consumer=RENDERER),
    Parameter("bloom_radius", VISUALS, 0.5, 0.0, 1.0, description="reach of the bloom", consumer=RENDERER),
    Parameter("camera_follow", VISUALS, True, scale=TOGGLE, description="the camera glides to the selected region", consumer=RENDERER),
    Parameter("camera_ease", VISUALS, 4.0, 0.1, 20.0, scale=LOG, unit="s", description="time the camera takes to reach the selection", consumer=RENDERER),
    Parameter("max_fps", VISUALS, 0, 0, 240, scale=INTEGER, unit="fps", description="most frames drawn a second (0 = automatic: 8 on a CPU renderer such as llvmpipe, so dreaming keeps its cores; else the display's rate)", consumer=WINDOW),
    Parameter("render_scale", VISUALS, 0.0, 0.0, 1.0, description="share of the view's width and height the map is drawn at before it is scaled up to fill it (0 = automatic: half on a CPU renderer such as llvmpipe, where it halves the cost of a frame; else full size; at least 0.25)", consumer=RENDERER),
    Parameter("morph_loops", SCENES, 2, 0, 16, scale=INTEGER, unit="loops", description="loops a recalled preset takes to morph in (0 = at once)", consumer=SCENE),
    Parameter("listen", SOUND_IN, False, scale=TOGGLE, description="the map glows with the network's response to the room's sound (--input), not the dreamed loop", consumer=LISTEN),
    Parameter("capture_bars", SOUND_IN, 2, 1, 8, scale=INTEGER, unit="bars", description="bars of input the capture action takes, ending on the next bar line", consumer=ACTION),
    Parameter("deck", DECK_GROUP, "A", scale=CHOICE, choices=DECK_NAMES, description="the deck the controls (overlay, MIDI, OSC, presets) edit: its selection, start clip, dream settings and model", consumer=DECKS),
    Parameter("dream_decks", DECK_GROUP, "off_air", scale=CHOICE, choices=DECK_DREAMING, description="with two decks: only the deck off air dreams while the one on air holds its loop (off_air, for 2 cores), or both dream in turn (a GPU, more cores)", consumer=DECKS),
    Parameter("crossfader", DECK_GROUP, 0.0, description="mixes the two decks' loops: 0 = deck A alone, 1 = deck B alone; a move glides, never clicks", consumer=PLAYER),
    Parameter("crossfader_curve", DECK_GROUP, "equal_power", scale=CHOICE, choices=FADER_CURVES, description="equal_power: -3 dB each in the middle, constant loudness; cut: both at full level over most of the travel, the far deck cut at the ends", consumer=PLAYER),
    Parameter("fade_length", DECK_GROUP, 2, 1, 32, scale=INTEGER, unit="bars", description="bars the fade_bars action takes to move the crossfader to the other deck, bar line to bar line", consumer=ACTION),
    Parameter("cue_mix", DECK_GROUP, 0.0, description="what the cue output (--cue-device, headphones) plays: 0 = the deck off air alone, 1 = the master", consumer=PLAYER),
    Parameter("capture_to", SOUND_IN, "start", scale=CHOICE, choices=("start", "mix"), description="a capture becomes the start clip (the loop restarts from it) or the clip mix_original blends in", consumer=ACTION),
)

REGISTRY = Registry(DREAM_PARAMETERS + PERFORM_PARAMETERS)
