"""Presets (scenes): named sets of parameter values, recalled by a morph over whole loops.

A preset is a small TOML file a person can read and edit:

    name = "kick pressure"
    description = "shallow encoder tap, low pitches: the kick pushes"
    [values]
    layer = 0.125
    pitch_span = 0.2
    start_clip = "kick"

`[values]` holds registry names (see parameters.py). A preset may name only some
parameters: recalling it moves those and leaves the rest as the performer has them (the
shipped scenes leave tempo, loop length, volume and morph time alone). `save` writes every
parameter. A file with an unknown name or a bad value still loads: the rest is used and
one warning line names what was skipped, so an old preset survives a registry change.

The library is the shipped `assets/presets/` folder followed by the user's folder
(`user_presets_dir()`); slots 1..N follow that order (file names sorted in each folder),
and a user preset with the name of a shipped one takes its slot. Keys 1-9, MIDI Program
Change and OSC recall slots through the hub's `preset` action.

Recalling starts a `Morph`: from the current snapshot to the preset over `morph_loops`
loops, continuous parameters gliding in the registry's unit space with a smoothstep ease
(log parameters glide geometrically), integers rounded on the way, toggles and choices
switching at the end. The `PresetPlayer` pushes the morph through the hub once per frame;
a parameter the performer touches during a morph leaves the morph (the performer wins).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import tomli_w

from immersions.control.hub import PRESET, Change, ControlHub
from immersions.registry import CHOICE, DECK_GROUP, LINEAR, LOG, REGISTRY, TOGGLE, Registry, Snapshot
from immersions.errors import ImmersionsError
from immersions.paths import assets_dir, config_dir
from immersions.selection import NamedRegion

log = logging.getLogger(__name__)

SUFFIX = ".toml"


def user_presets_dir() -> Path:
    """Where a performer's own presets live: $IMMERSIONS_PRESETS, else the XDG config folder."""
    env = os.environ.get("IMMERSIONS_PRESETS")
    if env:
        return Path(env).expanduser()
    return config_dir() / "presets"


def shipped_presets_dir() -> Path:
    return assets_dir() / "presets"


# -- one preset file --------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    values: dict  # registry name -> validated value (only what the file names)
    skipped: list[str] = field(default_factory=list)  # "foo (unknown)", "bars=9 (outside 1 .. 8)"
    path: Path | None = None
    description: str = ""
    # the regions frozen before the one the faders edit (keep), each with its weight: a
    # compound selection ("excite here, quiet there"); empty: the preset leaves them alone
    regions: tuple[NamedRegion, ...] = ()


def _reason(name: str, err: ImmersionsError) -> str:
    # "learning_rate: 9 is outside -5 .. 2" -> "outside -5 .. 2"
    message = str(err).removeprefix(f"{name}: ")
    return re.sub(r"^\S+ is ", "", message)


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def load_preset(path: str | os.PathLike, registry: Registry = REGISTRY) -> Preset:
    """Read a preset file; unknown names and bad values are skipped (and named), the rest kept.

    An unreadable or malformed file raises a one-line ImmersionsError naming the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ImmersionsError(f"cannot read preset file '{path}': {err.strerror or err}") from None
    except ValueError as err:  # TOMLDecodeError, or bytes that are not UTF-8
        detail = " ".join(str(err).split())
        raise ImmersionsError(f"preset file '{path}' is not valid TOML ({detail}); fix or delete it") from None
    name = data.get("name", path.stem)
    description = data.get("description", "")
    values = data.get("values", {})
    if not isinstance(name, str) or not name.strip():
        raise ImmersionsError(f"preset file '{path}': name must be a non-empty string, e.g. name = \"my scene\"")
    if not isinstance(description, str):
        raise ImmersionsError(f"preset file '{path}': description must be a string")
    if not isinstance(values, dict):
        raise ImmersionsError(f"preset file '{path}': [values] must be a table of parameter = value")
    name = name.strip()
    skipped = [f"{key} (not in [values])" for key in data if key not in ("name", "description", "values", "region")]
    tables = data.get("region", [])
    regions = []
    for number, table in enumerate(tables if isinstance(tables, list) else [tables], start=1):
        try:
            regions.append(NamedRegion.from_table(table))
        except ImmersionsError as err:
            skipped.append(f"region {number} ({err})")
    good: dict = {}
    for key, value in values.items():
        if key not in registry:
            skipped.append(f"{key} (unknown)")
            continue
        try:
            good[key] = registry[key].validate(value)
        except ImmersionsError as err:
            skipped.append(f"{key}={_value_text(value)} ({_reason(key, err)})")
    if skipped:
        log.warning("preset '%s' (%s): skipped %s", name, path, ", ".join(skipped))
    return Preset(name, good, skipped, path, description, tuple(regions))


def write_preset(path: str | os.PathLike, name: str, values: Mapping[str, object], description: str = "",
                 regions: Sequence[NamedRegion] = ()) -> Path:
    """Write a preset file (atomically: a half-written preset never replaces a good one)."""
    path = Path(path)
    data: dict = {"name": name}
    if description:
        data["description"] = description
    data["values"] = dict(values)
    if regions:
        data["region"] = [r.as_table() for r in regions]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(tomli_w.dumps(data).encode("utf-8"))
        tmp.replace(path)
    except OSError as err:
        raise ImmersionsError(f"cannot write preset '{path}': {err.strerror or err}") from None
    return path


def slug(name: str) -> str:
    """A file name for a preset name: 'My Scene #2' -> 'my-scene-2'."""
    text = re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")
    if not text:
        raise ImmersionsError(f"preset name '{name}' needs at least one letter or digit")
    return text


# -- the library: shipped scenes, then the user's -----------------------------------------------


class PresetLibrary:
    """Presets in slots 1..N: each folder's files sorted by name, folders in order.

    The default folders are the shipped `assets/presets/` and `user_presets_dir()`; `save`
    writes into the last folder. A preset in a later folder with the name of an earlier one
    replaces it in its slot. A file that cannot be read is skipped with a warning.
    """

    def __init__(self, folders: Sequence[str | os.PathLike] | None = None, registry: Registry = REGISTRY):
        if folders is None:
            folders = [shipped_presets_dir(), user_presets_dir()]
        if not folders:
            raise ValueError("a preset library needs at least one folder")
        self.folders = [Path(f) for f in folders]
        self.registry = registry
        self.presets: list[Preset] = []
        self.reload()

    @property
    def user_folder(self) -> Path:
        return self.folders[-1]

    def reload(self) -> None:
        """Read the folders again (after a save, or files edited by hand)."""
        presets: list[Preset] = []
        slot_of: dict[str, int] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*" + SUFFIX)):
                try:
                    preset = load_preset(path, self.registry)
                except ImmersionsError as err:
                    log.warning("skipped preset: %s", err)
                    continue
                key = preset.name.casefold()
                if key in slot_of:
                    presets[slot_of[key]] = preset
                else:
                    slot_of[key] = len(presets)
                    presets.append(preset)
        self.presets = presets

    def __len__(self) -> int:
        return len(self.presets)

    def names(self) -> list[str]:
        return [p.name for p in self.presets]

    def slot(self, name: str) -> int | None:
        """The 1-based slot of the preset called `name` (case-insensitive), or None."""
        key = name.casefold()
        for i, preset in enumerate(self.presets):
            if preset.name.casefold() == key:
                return i + 1
        return None

    def get(self, name_or_slot: int | str) -> Preset:
        """A preset by 1-based slot or by name; ImmersionsError when there is none."""
        if not self.presets:
            raise ImmersionsError(f"no presets found in {', '.join(str(f) for f in self.folders)}; save one first")
        if isinstance(name_or_slot, str):
            found = self.slot(name_or_slot.strip())
            if found is not None:
                return self.presets[found - 1]
            if not name_or_slot.strip().isdigit():
                raise ImmersionsError(f"no preset called '{name_or_slot}' (have: {', '.join(self.names())})")
            name_or_slot = int(name_or_slot)
        if isinstance(name_or_slot, float) and name_or_slot.is_integer():
            name_or_slot = int(name_or_slot)
        if isinstance(name_or_slot, bool) or not isinstance(name_or_slot, int):
            raise ImmersionsError(f"preset: give a slot number 1 .. {len(self)} or a name, not {name_or_slot!r}")
        if not 1 <= name_or_slot <= len(self):
            raise ImmersionsError(f"no preset in slot {name_or_slot}: slots are 1 .. {len(self)}")
        return self.presets[name_or_slot - 1]

    def next(self, current_name: str | None) -> Preset:
        """The preset after `current_name`, wrapping around (the first one if it is unknown)."""
        return self._step(current_name, +1)

    def previous(self, current_name: str | None) -> Preset:
        """The preset before `current_name`, wrapping around (the last one if it is unknown)."""
        return self._step(current_name, -1)

    def _step(self, current_name: str | None, step: int) -> Preset:
        if not self.presets:
            return self.get(1)  # raises the "no presets" error
        slot = self.slot(current_name) if current_name else None
        if slot is None:
            return self.presets[0 if step > 0 else -1]
        return self.presets[(slot - 1 + step) % len(self.presets)]

    def save(self, name: str, snapshot: Snapshot, description: str = "", regions: Sequence[NamedRegion] = ()) -> Path:
        """Write every parameter of `snapshot` as preset `name` into the user folder.

        A user preset of the same name is overwritten; call `reload()` to see it in a slot.
        """
        name = name.strip()
        base = slug(name)
        path = self.user_folder / (base + SUFFIX)
        existing = [p for p in self.presets if p.path is not None and p.path.parent == self.user_folder]
        same = next((p for p in existing if p.name.casefold() == name.casefold()), None)
        if same is not None:
            path = same.path
        else:
            # another preset owns this file name ("My scene" vs "my scene!"): never overwrite it
            n = 2
            while path.exists() and _name_in(path) != name.casefold():
                path = self.user_folder / f"{base}-{n}{SUFFIX}"
                n += 1
        # a preset is a deck's scene: the decks' own controls (which deck, the fader) stay out of it
        values = {p.name: snapshot[p.name] for p in snapshot.registry if p.group != DECK_GROUP}
        out = write_preset(path, name, values, description, regions)
        log.info("saved preset '%s' to %s", name, out)
        return out


def _name_in(path: Path) -> str | None:
    try:
        return load_preset(path).name.casefold()
    except ImmersionsError:
        return None


# -- morphing ---------------------------------------------------------------------------------


def smoothstep(t: float) -> float:
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


class Morph:
    """A glide from a snapshot to target values over `seconds`.

    Rule: linear and log parameters move in the registry's unit space (`to_unit` /
    `from_unit`, so a log parameter passes its geometric midpoint halfway) along a smoothstep
    ease; integers follow the same path rounded to whole numbers; toggles and choices keep
    their start value until the end and switch when the morph is done. At the end every
    parameter is exactly its target. `seconds <= 0` means everything at once.
    """

    def __init__(self, start: Snapshot, target: Mapping[str, object], seconds: float):
        registry = start.registry
        self.start = start
        self.seconds = max(0.0, float(seconds))
        self.target: dict[str, object] = {}
        for name, value in target.items():
            value = registry[name].validate(value)
            if value != start[name]:
                self.target[name] = value
        self._units = {name: (registry[name].to_unit(start[name]), registry[name].to_unit(value))
                       for name, value in self.target.items()}

    @property
    def names(self) -> list[str]:
        return list(self.target)

    def done(self, elapsed: float) -> bool:
        return elapsed >= self.seconds

    def progress(self, elapsed: float) -> float:
        return 1.0 if self.seconds <= 0 else min(1.0, max(0.0, elapsed / self.seconds))

    def values_at(self, elapsed: float) -> dict[str, object]:
        """The value of every parameter that differs between start and target, `elapsed` s in."""
        if self.done(elapsed):
            return dict(self.target)
        if elapsed <= 0:
            return {name: self.start[name] for name in self.target}
        s = smoothstep(elapsed / self.seconds)
        registry = self.start.registry
        out: dict[str, object] = {}
        for name, value in self.target.items():
            p = registry[name]
            if p.scale in (TOGGLE, CHOICE):
                out[name] = self.start[name]
                continue
            u0, u1 = self._units[name]
            v = p.from_unit(u0 + s * (u1 - u0))
            if p.scale in (LINEAR, LOG):
                v = min(p.maximum, max(p.minimum, v))  # rounding must never step outside the range
            out[name] = v
        return out


# -- the player: recall through the hub, one morph step per frame --------------------------------


class PresetPlayer:
    """Recalls presets through a ControlHub and runs the morph, one `tick` per frame.

    Provides the hub actions `preset` (1-based slot or name), `preset_next`, `preset_previous`.
    A morph lasts `morph_loops` (the value in force when the preset is recalled) times
    `loop_seconds()`. A change from any other source to a morphing parameter takes it out of
    the morph. When a preset changes `start_clip`, the hub's `restart` action runs once the
    morph is done, so the loop starts again from the new clip.
    """

    def __init__(self, hub: ControlHub, library: PresetLibrary, loop_seconds: Callable[[], float],
                 kept: Callable[[], Sequence[NamedRegion]] | None = None):
        self.hub = hub
        self.library = library
        self.loop_seconds = loop_seconds
        self.kept = kept  # the frozen regions of the selection now, for `save` (None: none are saved)
        self.current: str | None = None
        self._morph: Morph | None = None
        self._elapsed = 0.0
        self._pushed: dict[str, object] = {}
        self._released: set[str] = set()
        hub.handle("preset", lambda arg, source: self.recall(arg, source))
        hub.handle("preset_next", lambda arg, source: self.recall(self.library.next(self.current).name, source))
        hub.handle("preset_previous",
                   lambda arg, source: self.recall(self.library.previous(self.current).name, source))
        hub.listen(self._on_change)

    @property
    def morphing(self) -> bool:
        return self._morph is not None

    @property
    def progress(self) -> float:
        """0..1 through the running morph (1 when none runs)."""
        return 1.0 if self._morph is None else self._morph.progress(self._elapsed)

    def recall(self, name_or_slot: int | str, source: str = PRESET) -> Preset:
        """(main thread) Start morphing to a preset; ImmersionsError for an unknown one."""
        if name_or_slot is None:
            raise ImmersionsError(f"preset: give a slot number 1 .. {len(self.library)} or a name")
        preset = self.library.get(name_or_slot)
        start = self.hub.params
        seconds = start["morph_loops"] * max(0.0, float(self.loop_seconds()))
        self._morph = Morph(start, preset.values, seconds)
        self._elapsed = 0.0
        self._pushed = {name: start[name] for name in self._morph.target}
        self._released = set()
        self.current = preset.name
        if preset.regions and self.hub.handles("regions"):
            # the frozen regions take over at once; the faders then morph the edited one
            if preset.values.get("keep") is True and not start["keep"]:
                self.hub.set("keep", True, PRESET)
            self.hub.act("regions", preset.regions, PRESET)
        log.info("preset %s '%s' (%s): %d parameters over %.1f s",
                 self.library.slot(preset.name), preset.name, source, len(self._morph.target), seconds)
        self.tick(0.0)  # a zero-length morph lands now
        return preset

    def tick(self, dt: float) -> None:
        """(main thread, once per frame) Push the morph's values that moved since the last tick."""
        morph = self._morph
        if morph is None:
            return
        self._elapsed += max(0.0, dt)
        for name, value in morph.values_at(self._elapsed).items():
            if name in self._released or self._pushed.get(name) == value:
                continue
            self._pushed[name] = value
            if not self.hub.set(name, value, PRESET):
                self._released.add(name)  # the target refused it and said why; do not insist
        if morph.done(self._elapsed):
            self._morph = None
            if ("start_clip" in morph.target and "start_clip" not in self._released
                    and self.hub.handles("restart")):
                self.hub.act("restart", None, PRESET)

    def save(self, name: str, description: str = "") -> Path:
        """Save the current values as a user preset and make it the current one."""
        path = self.library.save(name, self.hub.params, description, tuple(self.kept()) if self.kept else ())
        self.library.reload()
        self.current = name.strip()
        return path

    def _on_change(self, change: Change) -> None:
        if self._morph is not None and change.source != PRESET and change.name in self._morph.target:
            if change.name not in self._released:
                log.debug("%s left the morph: changed by %s", change.name, change.source)
            self._released.add(change.name)

