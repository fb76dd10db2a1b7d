"""The autopilot: plays the instrument when nobody is there.

It listens in loops, like a musician: every few loops (`loops_per_selection`, jittered) it
picks a new region of the network to dream. The taps are visited by a walk that mostly
steps to a neighbouring tap and sometimes leaps, and that avoids the taps heard most
recently, so over an afternoon the room hears the shallow taps (partials, clicks) and the
deep ones (textures, expectations). Regions alternate between narrow (one channel, a few
pitches) and wide (many channels, all pitches). Now and then it keeps the region it had
and layers the new one on top (`keep` + the `select` action), restarts the loop from
silence, noise or a starter clip (`start_clip` + `restart`), and nudges the optimizer and
the regularizers, always inside the ranges a person would choose (`STEERING`: each
parameter's `autopilot` range in the registry). A layered region is sometimes kept quiet
(`quiet`): the regions before it rise while it falls. The camera follows the selection
with a slow ease, so the picture glides from region to region.

With the room's sound in (`install --input`, `room=True`), it also listens to the room: a
selection is sometimes spent in listen mode (the map glows with the network's response to
the room instead of the dreamed loop), and sometimes the loop starts again from the room's
last bars (the `capture` action, on the bar, as the start clip) instead of a starter clip.

Everything it does goes through the control hub (`hub.set` / `hub.act` with the AUTOPILOT
source, on the main thread), so the overlay, MIDI feedback and the logs see it like any
performer. All randomness comes from one `numpy.random.Generator(seed)`: for a seed and
the same loops heard, the same decisions.

The `Guard` listens to each heard loop and says when to move on: a long silence, a loop
that no longer changes (stuck), NaN resets piling up or an objective that is not finite,
or a loop that is pure noise. Moving on is a new selection and a restart from a starter
clip; the reasons are counted. (The loudness itself is ridden by `LoudnessRider`, see
loudness.py.)

Curated mode (`Scenes` + `Curator`): instead of wandering, walk a list of presets, each
for a number of loops, morphing from one to the next through the preset player.

Two decks (`decks = 1`, `install --decks`): every move (a new selection, a scene) is made on
the deck off air, which dreams it for the whole wait while the deck on air holds its loop;
when the move is due, the crossfader fades to it over `fade_length` bars (`fade_bars`) and
the next move goes onto the deck that has just gone off air. Its wait starts when that fade is
over (`fading`: the session says whether one runs), since the deck holds until then. Visitors
never hear a cold start.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections import Counter, deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from immersions.control.hub import AUTOPILOT, ControlHub
from immersions.registry import CHOICE, REGISTRY
from immersions.errors import ImmersionsError
from immersions.install.loudness import ClipReading, read_clip, scalogram_change
from immersions.selection import layer_of_tap

log = logging.getLogger(__name__)

# -- what the autopilot may touch, and how far: the registry's `autopilot` ranges ----------------
# (low, high) for each numeric parameter it steers (checked there to lie inside the range), and
# choice -> weight for each choice it draws.
STEERING: dict[str, tuple[float, float]] = {p.name: p.autopilot for p in REGISTRY.steered() if p.scale != CHOICE}
CHOICES: dict[str, dict[str, float]] = {p.name: dict(zip(p.choices, p.autopilot))
                                        for p in REGISTRY.steered() if p.scale == CHOICE}

# region shapes: name -> (weight, {parameter: (low, high)}); positions are drawn over 0..1
REGION_SHAPES: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {
    "narrow": (0.35, {"channel_span": (0.0, 0.0), "pitch_span": (0.05, 0.25), "time_span": (0.5, 1.0)}),
    "medium": (0.40, {"channel_span": (0.05, 0.3), "pitch_span": (0.25, 0.6), "time_span": (0.75, 1.0)}),
    "wide": (0.25, {"channel_span": (0.3, 1.0), "pitch_span": (0.6, 1.0), "time_span": (1.0, 1.0)}),
}
POSITIONS = ("channel_pos", "pitch_pos", "time_pos")
# what a restart starts from, and how often; a move-on restarts from a starter clip only
RESTART_FROM: dict[str, float] = {"silence": 0.15, "noise": 0.25, "kick": 0.3, "groove": 0.3}
STARTERS = ("kick", "groove")


def _check_tables() -> None:
    """Every value the autopilot's own tables can produce is valid in the registry (a typo here
    fails at import; the steering ranges are checked where they are declared, in the registry)."""
    for _, shape in REGION_SHAPES.values():
        for name, (low, high) in shape.items():
            p = REGISTRY[name]
            p.validate(low), p.validate(high)
            if low > high:
                raise ValueError(f"autopilot range for {name}: {low} > {high}")
    for start in (*RESTART_FROM, *STARTERS):
        REGISTRY["start_clip"].validate(start)


_check_tables()


@dataclass(frozen=True)
class AutopilotConfig:
    """Pacing of the wandering and the guard's thresholds."""

    loops_per_selection: float = 4.0  # a new selection about every this many loops
    jitter: float = 0.3  # ... times 1 +- this (uniform), at least one loop
    jump_chance: float = 0.2  # leap to any tap instead of stepping to a neighbour
    recent_taps: int = 4  # taps remembered as recently heard (the walk avoids them)
    keep_chance: float = 0.2  # layer the new region over the old one
    max_layers: int = 3  # regions at most in a layered selection
    quiet_chance: float = 0.3  # a layered region is kept quiet: the ones before it rise while it falls
    restart_chance: float = 0.1  # restart the loop from RESTART_FROM with a new selection
    steer_chance: float = 0.5  # nudge the optimizer and regularizers with a new selection
    camera_ease: float = 6.0  # seconds the camera takes to glide to a new selection
    target_lufs: float = -16.0  # loudness the volume is ridden to
    silence_lufs: float = -50.0  # a loop below this is silent ...
    silence_loops: int = 2  # ... and this many silent loops in a row move on
    stuck_change: float = 0.004  # a loop that changed less than this (scalogram_change) is the same ...
    stuck_loops: int = 10  # ... and this many of those in a row move on
    noise_flatness: float = 0.6  # a loop flatter than this is pure noise ...
    noise_loops: int = 4  # ... and this many noisy loops in a row move on
    nan_loops: int = 2  # loops in a row with new NaN resets that move on
    grace_loops: int = 3  # after a restart, loops before silence and noise count
    listen_chance: float = 0.25  # with sound in: a new selection is spent listening to the room
    capture_chance: float = 0.1  # with sound in: a new selection restarts from the room's last bars
    decks: int = 0  # 1: each move is prepared on the deck off air and faded in when due (see the module docstring)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ImmersionsError(f"autopilot {f.name}: expected a number, got {value!r}")
        checks = {
            "loops_per_selection": 1 <= self.loops_per_selection <= 1000,
            "jitter": 0 <= self.jitter < 1,
            "jump_chance": 0 <= self.jump_chance <= 1,
            "keep_chance": 0 <= self.keep_chance <= 1,
            "quiet_chance": 0 <= self.quiet_chance <= 1,
            "restart_chance": 0 <= self.restart_chance <= 1,
            "steer_chance": 0 <= self.steer_chance <= 1,
            "listen_chance": 0 <= self.listen_chance <= 1,
            "capture_chance": 0 <= self.capture_chance <= 1,
            "noise_flatness": 0 < self.noise_flatness <= 1,
            "stuck_change": 0 <= self.stuck_change < 1,
            "recent_taps": self.recent_taps >= 0,
            "max_layers": self.max_layers >= 1,
            "decks": self.decks in (0, 1),
        }
        for name in ("silence_loops", "stuck_loops", "noise_loops", "nan_loops"):
            checks[name] = getattr(self, name) >= 1
        for name, ok in checks.items():
            if not ok:
                raise ImmersionsError(f"autopilot {name} = {getattr(self, name)!r} is out of range")
        REGISTRY["camera_ease"].validate(self.camera_ease)


# -- the guard ----------------------------------------------------------------------------------

class Guard:
    """Listens to each heard loop; `observe(frame)` returns why to move on, or None.

    Reasons: "silence" (below silence_lufs for silence_loops loops), "stuck" (changed less
    than stuck_change for stuck_loops loops, or the same clip again and again), "nan"
    (NaN resets rising for nan_loops loops), "objective" (not finite), "noise" (flatter
    than noise_flatness for noise_loops loops). Silence and noise wait `grace_loops` after a
    restart: a loop that starts from silence or noise needs a moment to become music."""

    def __init__(self, config: AutopilotConfig | None = None):
        self.config = config or AutopilotConfig()
        self.reading: ClipReading | None = None  # the last loop's measurement (the rider uses it)
        self.reasons: Counter[str] = Counter()
        self.restarted()

    def restarted(self, grace: int | None = None) -> None:
        """The loop starts over: forget the history, give it `grace` loops (default grace_loops)."""
        self._scalogram: np.ndarray | None = None
        self._nan_resets: int | None = None
        self._quiet = self._same = self._noisy = self._nans = 0
        self._grace = self.config.grace_loops if grace is None else grace

    def observe(self, frame) -> str | None:
        """One heard loop (a DreamFrame; None or a resume clip before dreaming): why to move on."""
        if frame is None or frame.serial <= 0:
            return None
        c = self.config
        if self.reading is None or self.reading.serial != frame.serial:
            self.reading = read_clip(frame)
        reading = self.reading
        change = 1.0 if self._scalogram is None else scalogram_change(self._scalogram, frame.scalogram)
        self._scalogram = frame.scalogram
        nan_rose = self._nan_resets is not None and frame.nan_resets > self._nan_resets
        self._nan_resets = frame.nan_resets
        self._same = self._same + 1 if change < c.stuck_change else 0
        self._nans = self._nans + 1 if nan_rose else 0
        if self._grace > 0:
            self._grace -= 1
        else:
            self._quiet = self._quiet + 1 if reading.loudness < c.silence_lufs else 0
            self._noisy = self._noisy + 1 if reading.flatness > c.noise_flatness else 0
        reason = ("objective" if not math.isfinite(frame.objective) else
                  "nan" if self._nans >= c.nan_loops else
                  "silence" if self._quiet >= c.silence_loops else
                  "noise" if self._noisy >= c.noise_loops else
                  "stuck" if self._same >= c.stuck_loops else None)
        if reason is not None:
            self.reasons[reason] += 1
            log.info("moving on: %s (loop %d: %.1f LUFS, flatness %.2f, change %.4f, %d NaN resets)", reason,
                     frame.serial, reading.loudness, reading.flatness, change, frame.nan_resets)
        return reason


# -- wandering ------------------------------------------------------------------------------------

class Pilot:
    """What the autopilot and the curator share: the guard, the seed, and the loop clock.

    `tick(loops_heard, frame)` once per display frame with the count of loops heard so far
    and the heard DreamFrame; it acts only when a new loop begins: the guard's verdict first
    (`move_on`), else the next move when it is due (`_advance`)."""

    def __init__(self, hub: ControlHub, seed: int, config: AutopilotConfig | None, guard: Guard | None):
        self.hub = hub
        self.config = config or AutopilotConfig()
        self.guard = guard or Guard(self.config)
        self.rng = np.random.default_rng(seed)
        # whether a layered region is quiet: its own stream, so the walk a seed gives stays as it was
        self.quiet_rng = np.random.default_rng([seed, 1])
        self.selections = self.restarts = self.fades = 0
        # two decks: told (on the main thread) when a move has been prepared, with its deck's
        # name, and when a fade to the prepared deck has begun (the session measures each fade)
        self.on_prepare: Callable[[str], None] | None = None
        self.on_fade: Callable[[], None] | None = None
        # two decks: whether a fade is still under way (the session tells). The deck a fade takes
        # off air holds its loop until the fade is over, so the wait of the move prepared on it
        # starts then: counted from the fade's start, the loops the fade itself is heard for
        # (the deck on air changing at its middle, the faded-in deck's newest clip) ate most of
        # a short wait, and a move dreamed for 3 s of a 3-loop wait.
        self.fading: Callable[[], bool] | None = None
        self._held: int | None = None  # the wait of the move prepared, in loops, while its fade runs
        self._due: int | None = None
        self._loop: int | None = None

    @property
    def reasons(self) -> Counter[str]:
        return self.guard.reasons

    def tick(self, loops_heard: int, frame) -> None:
        if self._due is None:
            self.hub.set("camera_follow", True, AUTOPILOT)  # smooth camera moves to each selection
            self.hub.set("camera_ease", self.config.camera_ease, AUTOPILOT)
            self._begin(loops_heard)
            if self.config.decks:
                self._prepare(loops_heard)
        if self._held is not None and not self.fading():  # the fade is over: the move's wait starts now
            self._due, self._held = loops_heard + self._held, None
        if loops_heard == self._loop:
            return
        self._loop = loops_heard
        reason = self.guard.observe(frame)
        if reason is not None and self.config.decks:
            self._fade(loops_heard)  # the prepared deck takes over; the one that went wrong is redone
            self._prepare(loops_heard, reason)
        elif reason is not None:
            self.move_on(reason, loops_heard)
        elif loops_heard >= self._due:
            if self.config.decks:
                self._fade(loops_heard)
                self._prepare(loops_heard)
            else:
                self._advance(loops_heard)

    def _prepare(self, loops: int, reason: str | None = None) -> None:
        """Two decks: the next move goes onto the deck off air, which dreams it until it is due."""
        self.hub.set("deck", "B" if self.hub.params["crossfader"] < 0.5 else "A", AUTOPILOT)
        if reason is None:
            self._advance(loops)
        else:
            self.move_on(reason, loops)
        if self.fading is not None and self.fading():
            self._held, self._due = self._due - loops, math.inf  # due once the fade is over, see __init__
        if self.on_prepare is not None:
            self.on_prepare(self.hub.params["deck"])

    def _fade(self, loops: int) -> None:
        """Two decks: fade to the deck off air (prepared since the last fade), bar line to bar line."""
        if self.hub.act("fade_bars", None, AUTOPILOT) is not None:
            self.fades += 1
            self.guard.restarted()  # the loop heard is another deck's
            if self.on_fade is not None:
                self.on_fade()

    def _begin(self, loops: int) -> None:
        raise NotImplementedError

    def _advance(self, loops: int) -> None:
        raise NotImplementedError

    def move_on(self, reason: str, loops: int) -> None:
        raise NotImplementedError


class Autopilot(Pilot):
    """Wanders through the network; see the module docstring.

    taps: the model's taps (only their number is used). room: the performance hears the room
    (sound in), so listening and capturing are among the moves. `tick(loops_heard, frame)`
    once per display frame with the count of loops heard so far and the heard DreamFrame; it
    acts only when a new loop begins."""

    def __init__(self, hub: ControlHub, taps: Sequence, seed: int = 0, config: AutopilotConfig | None = None,
                 guard: Guard | None = None, room: bool = False):
        if len(taps) < 1:
            raise ImmersionsError("the autopilot needs a model with at least one tap")
        super().__init__(hub, seed, config, guard)
        self.room = bool(room)
        self.listened = 0  # selections spent listening to the room
        self.captures = 0  # restarts from the room's last bars asked for
        self.taps = len(taps)
        self.tap: int | None = None
        self.recent: deque[int] = deque(maxlen=max(1, self.config.recent_taps))
        self.layers = 1
        self.visited: Counter[int] = Counter()

    def _begin(self, loops: int) -> None:
        self._select(int(self.rng.integers(self.taps)), self._region(), keep=False)
        self._due = loops + self._wait()

    def _advance(self, loops: int) -> None:
        self.wander(loops)

    def wander(self, loops: int) -> None:
        """The next musical move: a new region, sometimes layered, restarted or steered."""
        c, rng = self.config, self.rng
        keep = rng.random() < c.keep_chance and self.layers < c.max_layers
        self._select(self._next_tap(), self._region(), keep, quiet=keep and self.quiet_rng.random() < c.quiet_chance)
        if rng.random() < c.restart_chance:
            names = list(RESTART_FROM)
            weights = np.array([RESTART_FROM[n] for n in names])
            self._restart(names[int(rng.choice(len(names), p=weights / weights.sum()))])
        if rng.random() < c.steer_chance:
            self._steer()
        if self.room:  # drawn only with sound in, so a seed walks the same way without it
            self._listen(rng.random() < c.listen_chance)
            if rng.random() < c.capture_chance:
                self._capture()
        self._due = loops + self._wait()

    def move_on(self, reason: str, loops: int) -> None:
        """Leave a loop that went wrong: a new region elsewhere, from a starter clip."""
        self._select(self._next_tap(jump=True), self._region(), keep=False)
        self._restart(STARTERS[int(self.rng.integers(len(STARTERS)))])
        self._due = loops + self._wait()

    # -- decisions ------------------------------------------------------------------------------

    def _wait(self) -> int:
        c = self.config
        return max(1, int(round(c.loops_per_selection * (1.0 + self.rng.uniform(-c.jitter, c.jitter)))))

    def _next_tap(self, jump: bool = False) -> int:
        """A step to a neighbouring tap, or (sometimes, or when told) a leap; recent taps avoided."""
        n, here = self.taps, self.tap if self.tap is not None else 0
        leap = self.rng.random() < self.config.jump_chance or jump
        index = np.arange(n)
        weight = np.ones(n) if leap else np.exp(-np.abs(index - here) / 1.0)
        weight[here] *= 0.05 if leap else 0.3  # another region of the same tap, now and then
        for age, tap in enumerate(reversed(self.recent)):  # the most recent weighs least
            weight[tap] *= 0.1 + 0.6 * age / max(1, len(self.recent))
        return int(self.rng.choice(n, p=weight / weight.sum()))

    def _region(self) -> dict[str, float]:
        names = list(REGION_SHAPES)
        weights = np.array([REGION_SHAPES[n][0] for n in names])
        _, ranges = REGION_SHAPES[names[int(self.rng.choice(len(names), p=weights / weights.sum()))]]
        region = {name: round(float(self.rng.uniform(low, high)), 3) for name, (low, high) in ranges.items()}
        region.update({name: round(float(self.rng.uniform(0.0, 1.0)), 3) for name in POSITIONS})
        return region

    def _steer(self) -> None:
        """Drift one to three of the optimizer and regularizer parameters, within STEERING."""
        names = sorted(STEERING) + sorted(CHOICES)
        count = int(self.rng.integers(1, 4))
        for name in (names[int(i)] for i in self.rng.choice(len(names), size=count, replace=False)):
            if name in CHOICES:
                values = list(CHOICES[name])
                weights = np.array([CHOICES[name][v] for v in values])
                self._set(name, values[int(self.rng.choice(len(values), p=weights / weights.sum()))])
                continue
            low, high = STEERING[name]
            now = min(high, max(low, float(self.hub.params[name])))
            value = now + self.rng.normal(0.0, 0.3 * (high - low))
            self._set(name, round(min(high, max(low, value)), 3))

    # -- acting (through the hub only) ------------------------------------------------------------

    def _set(self, name: str, value) -> None:
        if not self.hub.set(name, value, AUTOPILOT):
            log.warning("autopilot: %s", self.hub.last_error)

    def _select(self, tap: int, region: dict[str, float], keep: bool, quiet: bool = False) -> None:
        """A new region on `tap`, alone or layered over the ones before (keep); `quiet`: the new
        region is kept quiet while the ones before it are excited."""
        hub = self.hub
        if keep:
            if hub.params["keep"]:
                hub.act("select", None, AUTOPILOT)  # commit the region being edited; edits start a new one
            else:
                self._set("keep", True)  # keep on commits the region being edited
            self.layers += 1
        else:
            if hub.params["keep"]:
                self._set("keep", False)  # only the region being edited stays
            self.layers = 1
        if hub.params["quiet"] != quiet:
            self._set("quiet", quiet)
        self._set("layer", layer_of_tap(tap, self.taps))
        for name, value in region.items():
            self._set(name, value)
        if self.tap is not None and self.tap != tap:
            self.recent.append(self.tap)
        self.tap = tap
        self.visited[tap] += 1
        self.selections += 1
        log.debug("autopilot: tap %d %s%s%s", tap, region, " (layered)" if keep else "", " (quiet)" if quiet else "")

    def _listen(self, on: bool) -> None:
        """Spend this selection listening to the room (or not); dreaming goes on either way."""
        if on:
            self.listened += 1
        if self.hub.params["listen"] != on:
            self._set("listen", on)

    def _capture(self) -> None:
        """Start the loop again from the room's last bars, taken on the next bar line."""
        self._set("capture_to", "start")
        if not self.hub.act("capture", None, AUTOPILOT):
            log.warning("autopilot: %s", self.hub.last_error or "capture refused")
            return
        self.guard.restarted()
        self.captures += 1
        self.restarts += 1

    def _restart(self, start: str) -> None:
        self._set("start_clip", start)
        self.hub.act("restart", None, AUTOPILOT)
        self.guard.restarted()
        self.restarts += 1


# -- curated mode ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    """One entry of a scene list: a preset (name or 1-based slot) held for `loops` loops."""

    preset: str | int
    loops: int
    morph_loops: int | None = None  # loops the preset takes to morph in (None: the list's or the current)


@dataclass(frozen=True)
class Scenes:
    """A curated scene list, read from TOML:

        morph_loops = 2            # optional, for every scene
        [[scene]]
        preset = "deep drift"      # a preset name, or its slot number (1-based)
        loops = 8                  # loops it plays, its morph included
        morph_loops = 4            # optional, this scene only
    """

    path: Path
    cues: tuple[Cue, ...]

    @classmethod
    def load(cls, path: str | Path) -> "Scenes":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ImmersionsError(f"no scene list at {path}: give a TOML file of [[scene]] entries "
                                  "(see assets/scenes/example.toml)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ImmersionsError(f"cannot read the scene list {path}: {err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ImmersionsError(f"{path}: not valid TOML ({err})") from None
        unknown = set(doc) - {"scene", "morph_loops"}
        if unknown:
            raise ImmersionsError(f"{path}: unknown setting '{sorted(unknown)[0]}' (known: scene, morph_loops)")
        default = _morph(doc.get("morph_loops"), f"{path}: morph_loops")
        entries = doc.get("scene")
        if not isinstance(entries, list) or not entries:
            raise ImmersionsError(f"{path}: no [[scene]] entries; add one, e.g. [[scene]] preset = \"calm\" loops = 8")
        return cls(path, tuple(_cue(entry, f"{path}: scene {i}", default) for i, entry in enumerate(entries, 1)))

    def __len__(self) -> int:
        return len(self.cues)


def _morph(value, where: str) -> int | None:
    if value is None:
        return None
    try:
        return REGISTRY["morph_loops"].validate(value)
    except ImmersionsError as err:
        raise ImmersionsError(f"{where}: {err}") from None


def _cue(entry, where: str, default: int | None) -> Cue:
    if not isinstance(entry, dict):
        raise ImmersionsError(f"{where}: expected a table like preset = \"calm\" loops = 8")
    unknown = set(entry) - {"preset", "loops", "morph_loops"}
    if unknown:
        raise ImmersionsError(f"{where}: unknown key '{sorted(unknown)[0]}' (known: preset, loops, morph_loops)")
    preset = entry.get("preset")
    named = isinstance(preset, str) and bool(preset.strip())
    slot = isinstance(preset, int) and not isinstance(preset, bool) and preset >= 1
    if not (named or slot):
        raise ImmersionsError(f"{where}: preset = {preset!r}: give a preset name or a slot number from 1")
    loops = entry.get("loops")
    if isinstance(loops, bool) or not isinstance(loops, int) or not 1 <= loops <= 10_000:
        raise ImmersionsError(f"{where}: loops = {loops!r}: give a whole number of loops from 1")
    morph = _morph(entry.get("morph_loops"), f"{where}: morph_loops")
    return Cue(preset.strip() if isinstance(preset, str) else preset, loops, morph if morph is not None else default)


class Curator(Pilot):
    """Curated mode: plays a scene list through a PresetPlayer, with the same guard.

    presets: a PresetPlayer on the same hub (its `tick(dt)` is called by the session);
    library: its PresetLibrary, to check every cue names a preset before the show starts."""

    def __init__(self, hub: ControlHub, scenes: Scenes, presets, library, seed: int = 0,
                 config: AutopilotConfig | None = None, guard: Guard | None = None):
        for i, cue in enumerate(scenes.cues, 1):
            try:
                library.get(cue.preset)
            except ImmersionsError as err:
                raise ImmersionsError(f"{scenes.path}: scene {i}: {err}") from None
        super().__init__(hub, seed, config, guard)
        self.scenes, self.presets, self.library = scenes, presets, library
        self.index = -1  # the cue playing now

    @property
    def cue(self) -> Cue | None:
        return self.scenes.cues[self.index] if self.index >= 0 else None

    def _begin(self, loops: int) -> None:
        self._next(loops)

    def _advance(self, loops: int) -> None:
        self._next(loops)

    def move_on(self, reason: str, loops: int) -> None:
        """Skip to the next scene and restart its loop from a starter clip."""
        self._next(loops)
        self.hub.set("start_clip", STARTERS[int(self.rng.integers(len(STARTERS)))], AUTOPILOT)
        self.hub.act("restart", None, AUTOPILOT)
        self.restarts += 1

    def _next(self, loops: int) -> None:
        self.index = (self.index + 1) % len(self.scenes)
        cue = self.scenes.cues[self.index]
        if cue.morph_loops is not None:
            self.hub.set("morph_loops", cue.morph_loops, AUTOPILOT)
        preset = self.presets.recall(cue.preset, AUTOPILOT)
        # a new scene is judged afresh; one that changes the start clip restarts when its morph ends
        restarts = "start_clip" in getattr(preset, "values", {})
        self.guard.restarted(self.config.grace_loops + (self.hub.params["morph_loops"] if restarts else 0))
        self.selections += 1
        self._due = loops + cue.loops
        log.info("scene %d of %d: preset %s for %d loops", self.index + 1, len(self.scenes), cue.preset, cue.loops)
