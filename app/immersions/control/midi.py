"""MIDI control: maps, learn, feedback, soft takeover, hot-plug, and the `immersions midi` commands.

A *map* (TOML in assets/controllers/) binds each control of a device -- a CC or a note on
a channel -- to a registry parameter by name or to a hub action by name. Value ranges are
never written in a map: a fader at CC v sets `Parameter.from_unit(v / 127)`, so log,
integer, toggle and choice scales come from the registry, the one place they are declared.

    name = "Behringer BCF2000"
    port = "BCF2000"            # part of the input port name this map is meant for
    channel = 1                 # default MIDI channel, 1-16
    program_change = "preset"   # Program Change n recalls preset n + 1 ("model": model n)

    [[control]]
    cc = 81                     # or note = 36; optional channel = 1-16
    parameter = "learning_rate" # or action = "select" (with optional argument = 3)
    kind = "fader"              # fader | knob | button | switch
    motor = true                # the device shows the value it is sent (motor fader, LED ring, LED)

Kinds: a fader or knob moves a parameter over its range; a switch sets a toggle parameter
(on at CC >= 64; with `momentary = true` each press flips it, for buttons that send 127 on
press and 0 on release); a button triggers its action on press. `soft_takeover = false`
turns soft takeover off for one control.

`MidiController` lives on the main thread: `poll(now)` once a frame drains the input port
and turns messages into hub requests. It keeps, per control, where the device stands:
- feedback: a hub listener sends a changed value to every motor control of that
  parameter, unless the change came from MIDI, and never resends a CC value the device
  already shows; the CC a motor fader echoes back is swallowed, so there is no loop;
- soft takeover: a control that cannot be moved by the program (no motor, or feedback
  off) is ignored after the value changed elsewhere until it passes the current value;
- hot-plug: every 2 s it looks for its device when it has none, or checks that the port
  it has is still there; unplugging and plugging back in needs no restart;
- learn: `learn("volume")`, then the next control moved is bound to it.

Ports are listed and opened through `MidiPorts` (mido's backend by default), so tests and
other backends can pass their own.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable

import mido
import tomli_w

from immersions.control.hub import ACTIONS, MIDI, Change, ControlHub
from immersions.registry import REGISTRY, TOGGLE, Parameter
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

FADER, KNOB, BUTTON, SWITCH = "fader", "knob", "button", "switch"
KINDS = (FADER, KNOB, BUTTON, SWITCH)
CONTINUOUS = (FADER, KNOB)
PROGRAM_ACTIONS = {"preset": 1, "model": 0}  # Program Change n -> action argument n + offset
RESCAN_SECONDS = 2.0  # how often a missing device is looked for, or a present one checked
BACKEND_RETRY_MAX = 60.0  # a backend that cannot start at all is retried ever more slowly
WATCH_SECONDS = 0.5  # how often a watched map file's mtime is checked

Key = tuple[int, str, int]  # (channel 1-16, "cc" | "note", number): one physical control


# -- the map --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Binding:
    """One control of the device and what it moves."""

    kind: str
    cc: int | None = None
    note: int | None = None
    parameter: str | None = None
    action: str | None = None
    argument: int | str | None = None
    channel: int | None = None  # None: the map's channel
    motor: bool = False
    soft_takeover: bool | None = None  # None: the controller's setting
    momentary: bool = False  # switches only: each press flips the parameter

    @property
    def control(self) -> str:
        return f"cc {self.cc}" if self.cc is not None else f"note {self.note}"

    @property
    def target(self) -> str:
        return self.parameter if self.parameter is not None else str(self.action)

    def value(self, position: int):
        """The parameter value this control sets at `position` (0..127); faders and knobs only."""
        return REGISTRY[self.parameter].from_unit(position / 127)


_TOP_KEYS = {"name", "port", "channel", "program_change", "control"}
_CONTROL_KEYS = {"cc", "note", "parameter", "action", "argument", "channel", "kind", "motor",
                 "soft_takeover", "momentary"}


def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_int(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number {lo}-{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} {value} is outside {lo}-{hi}")
    return value


def _check_bool(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def _binding(doc, map_channel: int) -> Binding:
    """One [[control]] table as a Binding; ValueError says what is wrong with it."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a [[control]] table, got {doc!r}")
    unknown = sorted(set(doc) - _CONTROL_KEYS)
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}'{_suggest(unknown[0], _CONTROL_KEYS)}")
    if ("cc" in doc) == ("note" in doc):
        raise ValueError("give exactly one of cc = 0-127 or note = 0-127")
    cc = _check_int(doc["cc"], "cc", 0, 127) if "cc" in doc else None
    note = _check_int(doc["note"], "note", 0, 127) if "note" in doc else None
    channel = _check_int(doc["channel"], "channel", 1, 16) if "channel" in doc else None
    if ("parameter" in doc) == ("action" in doc):
        raise ValueError("give exactly one of parameter = \"name\" or action = \"name\"")
    parameter, action = doc.get("parameter"), doc.get("action")
    for what, name, known in (("parameter", parameter, [p.name for p in REGISTRY]), ("action", action, ACTIONS)):
        if name is None:
            continue
        if not isinstance(name, str):
            raise ValueError(f"{what} must be a name in quotes, got {name!r}")
        if name not in known:
            raise ValueError(f"unknown {what} '{name}'{_suggest(name, known)}")
    argument = doc.get("argument")
    if argument is not None:
        if action is None:
            raise ValueError("argument goes with an action, not a parameter")
        if isinstance(argument, bool) or not isinstance(argument, (int, str)):
            raise ValueError(f"argument must be a whole number or a name, got {argument!r}")
    param = REGISTRY[parameter] if parameter else None
    default_kind = BUTTON if action else SWITCH if param.scale == TOGGLE else KNOB
    kind = doc.get("kind", default_kind)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == BUTTON and action is None:
        raise ValueError(f"a button triggers an action; use kind = \"fader\", \"knob\" or \"switch\" for {parameter}")
    if kind != BUTTON and action is not None:
        raise ValueError(f"an action is triggered by kind = \"button\", not \"{kind}\"")
    if kind == SWITCH and param.scale != TOGGLE:
        raise ValueError(f"a switch sets an on/off parameter; {parameter} is not one (use a knob or fader)")
    if note is not None and kind in CONTINUOUS:
        raise ValueError(f"a note cannot be a {kind}; notes are buttons or switches")
    motor = _check_bool(doc.get("motor", False), "motor")
    takeover = doc.get("soft_takeover")
    if takeover is not None:
        _check_bool(takeover, "soft_takeover")
        if kind not in CONTINUOUS:
            raise ValueError("soft_takeover applies to faders and knobs only")
    momentary = _check_bool(doc.get("momentary", False), "momentary")
    if momentary and kind != SWITCH:
        raise ValueError("momentary applies to switches only")
    return Binding(kind=kind, cc=cc, note=note, parameter=parameter, action=action, argument=argument,
                   channel=channel, motor=motor, soft_takeover=takeover, momentary=momentary)


@dataclass(frozen=True)
class MidiMap:
    """What each control of one device does; immutable (learning makes a new map)."""

    name: str
    controls: tuple[Binding, ...] = ()
    port: str = ""  # part of the input port names this map is meant for
    channel: int = 1
    program_change: str | None = None  # an action in PROGRAM_ACTIONS, or None: ignored
    path: Path | None = field(default=None, compare=False)

    # -- lookups --------------------------------------------------------------------------------

    def key(self, b: Binding) -> Key:
        return (b.channel or self.channel, "cc" if b.cc is not None else "note", b.cc if b.cc is not None else b.note)

    @cached_property
    def _by_key(self) -> dict[Key, Binding]:
        return {self.key(b): b for b in self.controls}

    def find(self, key: Key) -> Binding | None:
        return self._by_key.get(key)

    def bound_to(self, parameter: str) -> list[Binding]:
        return [b for b in self.controls if b.parameter == parameter]

    def bind(self, binding: Binding) -> "MidiMap":
        """A new map with `binding`, replacing whatever that control did before."""
        key = self.key(binding)
        if binding.channel == self.channel:
            binding = replace(binding, channel=None)
        kept = tuple(b for b in self.controls if self.key(b) != key)
        return replace(self, controls=kept + (binding,))

    # -- files ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MidiMap":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ImmersionsError(f"no MIDI map at {path} (shipped maps: {', '.join(shipped_maps())})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ImmersionsError(f"cannot read MIDI map {path}: {err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ImmersionsError(f"MIDI map {path} is not valid TOML: {err}") from None
        return cls.from_doc(doc, path)

    @classmethod
    def named(cls, name_or_path: str | os.PathLike) -> "MidiMap":
        """A map file, or the name of a shipped one ("bcf2000", "generic8")."""
        path = Path(name_or_path)
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            path = controllers_dir() / f"{path}.toml"
        return cls.load(path)

    @classmethod
    def from_doc(cls, doc: dict, origin: str | os.PathLike | None = None) -> "MidiMap":
        """Validate a parsed map; ImmersionsError (one line, naming file and control) on any problem."""
        where = str(origin) if origin is not None else "<map>"
        try:
            unknown = sorted(set(doc) - _TOP_KEYS)
            if unknown:
                raise ValueError(f"unknown key '{unknown[0]}'{_suggest(unknown[0], _TOP_KEYS)}")
            name = doc.get("name", Path(where).stem)
            port = doc.get("port", "")
            for what, value in (("name", name), ("port", port)):
                if not isinstance(value, str):
                    raise ValueError(f"{what} must be text in quotes, got {value!r}")
            channel = _check_int(doc.get("channel", 1), "channel", 1, 16)
            program = doc.get("program_change")
            if program is not None and program not in PROGRAM_ACTIONS:
                raise ValueError(f"program_change must be one of {', '.join(PROGRAM_ACTIONS)}, got {program!r}")
            controls = doc.get("control", [])
            if not isinstance(controls, list):
                raise ValueError("controls are [[control]] tables")
        except ValueError as err:
            raise ImmersionsError(f"MIDI map {where}: {err}") from None
        midi_map = cls(name=name, port=port, channel=channel, program_change=program,
                       path=Path(origin) if origin is not None else None)
        seen: dict[Key, tuple[int, Binding]] = {}
        bindings = []
        for i, entry in enumerate(controls, 1):
            label = f"control {i}"
            if isinstance(entry, dict) and ("cc" in entry or "note" in entry):
                label += f" ({'cc ' + str(entry['cc']) if 'cc' in entry else 'note ' + str(entry['note'])})"
            try:
                b = _binding(entry, channel)
            except ValueError as err:
                raise ImmersionsError(f"MIDI map {where}: {label}: {err}") from None
            key = midi_map.key(b)
            if key in seen:
                j, other = seen[key]
                raise ImmersionsError(f"MIDI map {where}: {label}: {b.control} on channel {key[0]} is already "
                                      f"bound to {other.target} (control {j}); bind each control once")
            seen[key] = (i, b)
            bindings.append(b)
        return replace(midi_map, controls=tuple(bindings))

    def to_doc(self) -> dict:
        doc: dict = {"name": self.name, "port": self.port, "channel": self.channel}
        if self.program_change:
            doc["program_change"] = self.program_change
        rows = []
        for b in self.controls:
            row = {"cc": b.cc} if b.cc is not None else {"note": b.note}
            if b.channel is not None:
                row["channel"] = b.channel
            row.update({"parameter": b.parameter} if b.parameter else {"action": b.action})
            if b.argument is not None:
                row["argument"] = b.argument
            row["kind"] = b.kind
            if b.motor:
                row["motor"] = True
            if b.soft_takeover is not None:
                row["soft_takeover"] = b.soft_takeover
            if b.momentary:
                row["momentary"] = True
            rows.append(row)
        doc["control"] = rows
        return doc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map as TOML that loads back equal (comments are not kept)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "# Immersions MIDI map (see assets/controllers/*.toml for the format)\n" + tomli_w.dumps(self.to_doc())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a watching controller never reads half a file
        return path


def controllers_dir() -> Path:
    from immersions.paths import assets_dir

    return assets_dir() / "controllers"


def shipped_maps() -> list[str]:
    try:
        return sorted(p.stem for p in controllers_dir().glob("*.toml"))
    except ImmersionsError:
        return []


GENERIC_MAP = "generic8"  # the map for a port no shipped map is made for


def map_label(midi_map: MidiMap) -> str:
    """How a take names its map: a shipped map by its name, any other by its file."""
    path = midi_map.path
    if path is not None and path.parent.resolve() == controllers_dir().resolve():
        return path.stem
    return str(path) if path is not None else midi_map.name


def map_for_port(name: str | None) -> MidiMap:
    """The one default every MIDI command uses (perform, `midi monitor`, `midi record`, and the
    replay of a take that names no map): the shipped map made for the input called `name` (by
    the map's `port`), else generic8."""
    if name:
        for shipped in shipped_maps():
            candidate = MidiMap.named(shipped)
            if candidate.port and match_port(candidate.port, [name]):
                return candidate
    return MidiMap.named(GENERIC_MAP)


def default_input(names: list[str]) -> str | None:
    """The input used when none is named: the first a shipped map is made for, else the first
    that is not a loopback ("Midi Through")."""
    for shipped in shipped_maps():
        pattern = MidiMap.named(shipped).port
        found = match_port(pattern, names) if pattern else None
        if found is not None:
            return found
    return next((n for n in names if not _bare(n).startswith(_LOOPBACKS)), None)


def describe(midi_map: MidiMap, msg: mido.Message) -> str:
    """One line saying what a message does under `midi_map` (for `immersions midi monitor`)."""
    if msg.type == "program_change":
        head = f"program {msg.program} ch{msg.channel + 1}"
        if midi_map.program_change and msg.channel + 1 == midi_map.channel:
            return f"{head} -> {midi_map.program_change} {msg.program + PROGRAM_ACTIONS[midi_map.program_change]}"
        return f"{head} (not in the map)"
    key, position = _control_of(msg)
    if key is None:
        return str(msg)
    head = f"{key[1]} {key[2]} ch{key[0]} {'value' if key[1] == 'cc' else 'velocity'} {position}"
    b = midi_map.find(key)
    if b is None:
        return f"{head} (not in the map)"
    if b.kind == BUTTON:
        if position == 0:
            return f"{head} -> {b.action} (released)"
        return f"{head} -> {b.action}" + (f" {b.argument}" if b.argument is not None else "")
    if b.kind == SWITCH:
        if b.momentary:
            return f"{head} -> {'flip ' + b.parameter if position else '(released)'}"
        return f"{head} -> {b.parameter} = {'on' if position >= 64 else 'off'}"
    return f"{head} -> {b.parameter} = {_show(b.value(position))}"


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _control_of(msg: mido.Message) -> tuple[Key | None, int]:
    """The control a message comes from and its position (0..127; a released note is 0)."""
    if msg.type == "control_change":
        return (msg.channel + 1, "cc", msg.control), msg.value
    if msg.type in ("note_on", "note_off"):
        return (msg.channel + 1, "note", msg.note), msg.velocity if msg.type == "note_on" else 0
    return None, 0


# -- ports ----------------------------------------------------------------------------------

@dataclass
class MidiPorts:
    """How this machine's MIDI ports are listed and opened (mido's backend unless given)."""

    inputs: Callable[[], list[str]]
    outputs: Callable[[], list[str]]
    open_input: Callable[[str], mido.ports.BaseInput]
    open_output: Callable[[str], mido.ports.BaseOutput]

    @classmethod
    def from_mido(cls, backend: str | None = None) -> "MidiPorts":
        """mido's backend: `backend` like "mido.backends.rtmidi/UNIX_JACK", else $MIDO_BACKEND or rtmidi."""
        b = mido.Backend(backend, load=False) if backend else mido.backend
        if _needs_alsa_sequencer(b.name, b.api):
            # without the sequencer device, rtmidi's ALSA client prints C-library errors on
            # stderr at every rescan; asking for the device first keeps the log to our one line
            def names(what):
                _require_alsa_sequencer()
                return list(what())

            return cls(inputs=lambda: names(b.get_input_names), outputs=lambda: names(b.get_output_names),
                       open_input=b.open_input, open_output=b.open_output)
        return cls(inputs=lambda: list(b.get_input_names()), outputs=lambda: list(b.get_output_names()),
                   open_input=b.open_input, open_output=b.open_output)


ALSA_SEQUENCER = "/dev/snd/seq"


def _needs_alsa_sequencer(backend: str, api: str | None) -> bool:
    """rtmidi on Linux talks to the ALSA sequencer unless told to use JACK."""
    return sys.platform.startswith("linux") and backend.endswith("rtmidi") and (api or "").upper() != "UNIX_JACK"


def _require_alsa_sequencer(device: str = ALSA_SEQUENCER) -> None:
    if not os.path.exists(device):
        raise OSError(f"no ALSA sequencer ({device} is missing)")


_TIMING = ("clock", "active_sensing", "quarter_frame")  # a monitor does not print these 24+ a second
_ALSA_NUMBERS = re.compile(r"\s+\d+:\d+$")  # ALSA appends "client:port", which changes on replug
_LOOPBACKS = ("midi through",)  # virtual ports a fallback must not pick


def _bare(name: str) -> str:
    return _ALSA_NUMBERS.sub("", name).casefold()


def match_port(pattern: str, names: list[str]) -> str | None:
    """The port called `pattern`, else the first whose name contains it (any case, ALSA numbers ignored)."""
    if pattern in names:
        return pattern
    bare = _bare(pattern)
    if not bare:
        return None
    return next((n for n in names if bare in _bare(n)), None)


def _backend_problem(err: Exception) -> str:
    text = (str(err).strip() or type(err).__name__).rstrip(".")
    if "ALSA" in text:
        text += "; on Linux load the ALSA sequencer: sudo modprobe snd-seq"
    return text


# -- the controller -------------------------------------------------------------------------

@dataclass
class _Control:
    """What we know about one physical control."""

    position: int | None = None  # where the device stands (last received or sent)
    echo: int | None = None  # the value we last sent, until the device echoes it or moves
    picked: bool = False  # soft takeover: this control follows the device


class MidiController:
    """One MIDI device driving a ControlHub through a map (main thread: call `poll` every frame)."""

    def __init__(self, hub: ControlHub, midi_map: MidiMap, port: str | None = None, *,
                 soft_takeover: bool = True, feedback: bool = True, backend: MidiPorts | str | None = None):
        self.hub = hub
        self.midi_map = midi_map
        self.port = port
        self.soft_takeover = soft_takeover
        self.feedback = feedback
        self.ports = backend if isinstance(backend, MidiPorts) else MidiPorts.from_mido(backend)
        self._input: mido.ports.BaseInput | None = None
        self._output: mido.ports.BaseOutput | None = None
        self._controls: dict[Key, _Control] = {}
        self._learning: str | None = None
        self._next_scan: float | None = None
        self._backend_wait = RESCAN_SECONDS
        self._backend_failed = False
        self._said: set[str] = set()  # connection problems already logged since the last connect
        self._watched: Path | None = None
        self._watched_mtime: float | None = None
        self._next_watch = 0.0
        hub.listen(self._on_change)
        self._connect()

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._input is not None

    @property
    def status(self) -> str:
        head = self._input.name if self._input is not None else "no controller"
        return f"{head}; learning {self._learning}: move a control" if self._learning else head

    @property
    def learning(self) -> str | None:
        return self._learning

    def close(self) -> None:
        self.hub.unlisten(self._on_change)
        self._close_ports()

    # -- the frame ---------------------------------------------------------------------------

    def poll(self, now: float) -> int:
        """(main thread, once a frame) Handle what the device sent; look after the connection.

        Returns the number of messages handled."""
        if self._watched is not None and now >= self._next_watch:
            self._next_watch = now + WATCH_SECONDS
            self._check_watch()
        if self._next_scan is None:
            self._next_scan = now + RESCAN_SECONDS
        elif now >= self._next_scan:
            if self._input is None:
                self._connect()
            else:
                self._check_still_there()
            self._next_scan = now + (self._backend_wait if self._backend_failed else RESCAN_SECONDS)
        if self._input is None:
            return 0
        handled = 0
        try:
            for msg in self._input.iter_pending():
                self.handle(msg)
                handled += 1
        except (OSError, EOFError) as err:
            self._disconnect(f"input failed: {err}")
        return handled

    def handle(self, msg: mido.Message, source: str = MIDI) -> bool:
        """Turn one message into a hub request; False when the map does nothing with it.

        `source` is MIDI for the device and AUTOMATION for a replayed file: only the device's
        own messages move soft-takeover and echo state or answer a learn."""
        if msg.type == "program_change":
            action = self.midi_map.program_change
            if action is None or msg.channel + 1 != self.midi_map.channel:
                return False
            self.hub.request_action(action, msg.program + PROGRAM_ACTIONS[action], source)
            return True
        key, position = _control_of(msg)
        if key is None:
            return False
        live = source == MIDI
        if live and self._learning is not None:
            return self._learn_from(key, position)
        b = self.midi_map.find(key)
        if b is None:
            return False
        state = self._controls.setdefault(key, _Control())
        previous = state.position
        if live:
            if state.echo is not None:
                echoed, state.echo = state.echo == position, None
                if echoed:  # a motor fader repeating what we sent it
                    return False
            state.position = position
        if b.kind == BUTTON:
            if position > 0:
                self.hub.request_action(b.action, b.argument, source)
            return position > 0
        name = b.parameter
        if b.kind == SWITCH:
            if b.momentary:
                if position == 0:
                    return False
                value = not self.hub.params[name]
            else:
                value = position >= 64
        else:
            value = b.value(position)
            if live and self._needs_takeover(b) and not state.picked:
                if not _passes(REGISTRY[name], self.hub.params[name], position, previous):
                    return False
                state.picked = True
                log.debug("soft takeover: %s picked up %s", b.control, name)
        # another control of the same parameter no longer stands where the value is
        for other in self.midi_map.bound_to(name):
            other_key = self.midi_map.key(other)
            if other_key != key and other_key in self._controls:
                self._controls[other_key].picked = False
        self.hub.request(name, value, source)
        return True

    # -- feedback ----------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        """(hub listener) A value changed: move motor controls, drop soft takeover."""
        if change.source == MIDI:
            return  # the device set it: never echo it back
        for b in self.midi_map.bound_to(change.name):
            self._controls.setdefault(self.midi_map.key(b), _Control()).picked = False
            if b.motor:  # a momentary switch's last position is a press, not its LED: always send
                self._send(b, change.value, force=b.momentary)

    def send_all(self) -> int:
        """Push every mapped value to the device's motor controls (on connect); returns messages sent."""
        sent = 0
        for b in self.midi_map.controls:
            if b.motor and b.parameter is not None:
                sent += self._send(b, self.hub.params[b.parameter], force=True)
        return sent

    def _send(self, b: Binding, value, force: bool) -> bool:
        if not self.feedback or self._output is None:
            return False
        key = self.midi_map.key(b)
        state = self._controls.setdefault(key, _Control())
        position = round(REGISTRY[b.parameter].to_unit(value) * 127)
        if position == state.position and not force:
            return False
        channel = key[0] - 1
        if b.cc is not None:
            msg = mido.Message("control_change", channel=channel, control=b.cc, value=position)
        else:
            msg = mido.Message("note_on", channel=channel, note=b.note, velocity=position)
        try:
            self._output.send(msg)
        except (OSError, EOFError) as err:
            self._disconnect(f"output failed: {err}")
            return False
        state.position = position
        # a motor fader may repeat what it is sent; a momentary switch's press must always count
        state.echo = None if b.momentary else position
        state.picked = True  # the device now stands at the value
        return True

    def _needs_takeover(self, b: Binding) -> bool:
        wanted = self.soft_takeover if b.soft_takeover is None else b.soft_takeover
        follows = b.motor and self.feedback and self._output is not None
        return wanted and not follows

    # -- learn -------------------------------------------------------------------------------

    def learn(self, target: str) -> None:
        """Bind the next control the performer moves to a parameter or an action."""
        if target not in REGISTRY and target not in ACTIONS:
            known = [p.name for p in REGISTRY] + list(ACTIONS)
            raise ImmersionsError(f"cannot learn '{target}': not a parameter or an action{_suggest(target, known)}")
        self._learning = target
        log.info("MIDI learn: move a control for %s", target)

    def cancel_learn(self) -> None:
        if self._learning is not None:
            log.info("MIDI learn for %s cancelled", self._learning)
        self._learning = None

    def _learn_from(self, key: Key, position: int) -> bool:
        target = self._learning
        channel, kind, number = key
        if kind == "note" and position == 0:
            return False  # a note's release is not a new control
        old = self.midi_map.find(key)
        number_field = {"cc": number} if kind == "cc" else {"note": number}
        if target in ACTIONS:
            b = Binding(kind=BUTTON, action=target, channel=channel, motor=bool(old and old.motor), **number_field)
        elif REGISTRY[target].scale == TOGGLE:
            b = Binding(kind=SWITCH, parameter=target, channel=channel, motor=bool(old and old.motor),
                        momentary=kind == "note" or bool(old and old.momentary), **number_field)
        elif kind == "note":
            log.info("MIDI learn: a note cannot move %s; move a knob or fader", target)
            return False
        else:
            b = Binding(kind=old.kind if old and old.kind in CONTINUOUS else KNOB, parameter=target,
                        channel=channel, motor=bool(old and old.motor), **number_field)
        self.midi_map = self.midi_map.bind(b)
        self._controls[key] = _Control(position=position)
        self._learning = None
        log.info("MIDI learn: %s ch%d -> %s", b.control, channel, target)
        if b.motor and b.parameter is not None:
            self._send(b, self.hub.params[b.parameter], force=True)
        return True

    # -- map files -------------------------------------------------------------------------------

    def save_map(self, path: str | os.PathLike) -> Path:
        path = self.midi_map.save(path)
        if self._watched is not None and path.resolve() == self._watched.resolve():
            self._watched_mtime = path.stat().st_mtime  # our own write is not an edit to reload
        return path

    def load_map(self, path: str | os.PathLike) -> bool:
        """Switch to the map in `path`; on a bad file log one line and keep the current map."""
        try:
            new = MidiMap.load(path)
        except ImmersionsError as err:
            log.warning("%s; keeping the MIDI map '%s'", err, self.midi_map.name)
            return False
        self.midi_map = new
        self._controls.clear()
        log.info("MIDI map '%s' loaded from %s (%d controls)", new.name, path, len(new.controls))
        if self.connected:
            self.send_all()
        return True

    def watch(self, path: str | os.PathLike) -> None:
        """Reload the map from `path` whenever the file changes (checked in poll)."""
        self._watched = Path(path)
        self._watched_mtime = self._mtime(self._watched)

    def _check_watch(self) -> None:
        mtime = self._mtime(self._watched)
        if mtime is None or mtime == self._watched_mtime:
            return
        self._watched_mtime = mtime
        self.load_map(self._watched)

    @staticmethod
    def _mtime(path: Path) -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    # -- connection --------------------------------------------------------------------------

    def _list(self, what: Callable[[], list[str]]) -> list[str] | None:
        try:
            if self._backend_failed:  # said once already: a retry adds nothing to the log
                with _quiet_c_stderr():
                    names = list(what())
            else:
                names = list(what())
        except Exception as err:  # rtmidi raises its own types when it cannot even start
            if not self._backend_failed:
                log.info("the MIDI backend cannot start (%s); running without a controller", _backend_problem(err))
            self._backend_failed = True
            self._backend_wait = min(BACKEND_RETRY_MAX, self._backend_wait * 2)
            return None
        if self._backend_failed:
            log.info("MIDI is available again")
        self._backend_failed = False
        self._backend_wait = RESCAN_SECONDS
        return names

    def _connect(self) -> None:
        names = self._list(self.ports.inputs)
        if names is None:
            return
        pattern = self.port if self.port is not None else self.midi_map.port
        name = match_port(pattern, names)
        if name is None and self.port is None:
            name = next((n for n in names if not _bare(n).startswith(_LOOPBACKS)), None)
        if name is None:
            self._say_once(f"no MIDI input matching '{pattern}' (found: {', '.join(names) or 'none'}); "
                           "running without a controller")
            return
        try:
            self._input = self.ports.open_input(name)
        except Exception as err:
            self._say_once(f"cannot open MIDI input '{name}' ({err}); trying again every {RESCAN_SECONDS:g} s")
            return
        self._said.clear()
        self._output = None
        outputs = self._list(self.ports.outputs) or []
        out_name = match_port(name, outputs) or (match_port(pattern, outputs) if pattern else None)
        if out_name is not None and self.feedback:
            try:
                self._output = self.ports.open_output(out_name)
            except Exception as err:
                log.warning("cannot open MIDI output '%s' (no feedback): %s", out_name, err)
        self._controls.clear()
        log.info("MIDI controller '%s' connected (map '%s'; %s)", name, self.midi_map.name,
                 f"feedback to '{out_name}'" if self._output is not None else "no feedback")
        self.send_all()

    def _say_once(self, line: str) -> None:
        """Log a connection problem once, not at every rescan."""
        if line not in self._said:
            self._said.add(line)
            log.info("%s", line)

    def _check_still_there(self) -> None:
        names = self._list(self.ports.inputs)
        if names is not None and self._input is not None and self._input.name not in names:
            self._disconnect("unplugged")

    def _disconnect(self, why: str) -> None:
        if self._input is None:
            return
        log.info("MIDI controller '%s' disconnected (%s); looking for it every %g s",
                 self._input.name, why, RESCAN_SECONDS)
        self._close_ports()

    def _close_ports(self) -> None:
        for port in (self._input, self._output):
            if port is not None:
                with contextlib.suppress(Exception):
                    port.close()
        self._input = self._output = None
        self._controls.clear()


def _passes(param: Parameter, current, position: int, previous: int | None) -> bool:
    """Soft takeover: has the control reached (within one step) or crossed the current value?"""
    if param.from_unit(position / 127) == current:
        return True
    target = param.to_unit(current) * 127
    if abs(position - target) <= 1:
        return True
    return previous is not None and (previous - target) * (position - target) <= 0


# -- watching and recording a controller (`immersions midi monitor | record`, cli/midi.py) ---

@contextlib.contextmanager
def _quiet_c_stderr():
    """Hide what C libraries (ALSA) print on stderr while a backend is probed: they write to
    file descriptor 2 whatever Python's sys.stderr is."""
    fd = 2
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no stderr at all (a service): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def port_names(ports: MidiPorts) -> tuple[list[str], list[str]]:
    with _quiet_c_stderr():
        try:
            return list(ports.inputs()), list(ports.outputs())
        except Exception as err:
            raise ImmersionsError(f"the MIDI backend cannot start: {_backend_problem(err)}") from None


def _open_for_cli(ports: MidiPorts, pattern: str | None, midi_map: MidiMap | None):
    """The input asked for (`pattern`), else the one `midi_map` is made for, else `default_input`."""
    inputs, _ = port_names(ports)
    want = pattern if pattern is not None else (midi_map.port if midi_map else "")
    name = match_port(want, inputs) if want else None
    if name is None and pattern is None:
        name = default_input(inputs) if midi_map is None else \
            next((n for n in inputs if not _bare(n).startswith(_LOOPBACKS)), None)
    if name is None:
        raise ImmersionsError(f"no MIDI input matching '{want}' (found: {', '.join(inputs) or 'none'}); "
                              "see `immersions midi ports`")
    with _quiet_c_stderr():
        return ports.open_input(name)


def monitor(ports: MidiPorts, midi_map: MidiMap | None = None, port: str | None = None, seconds: float | None = None,
            out: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> int:
    """Print each incoming message decoded against the map until `seconds` pass; returns the count.
    No map: the one made for the port (`map_for_port`), as `perform` chooses."""
    with _open_for_cli(ports, port, midi_map) as midi_in:
        midi_map = midi_map or map_for_port(midi_in.name)
        out(f"listening to '{midi_in.name}' with map '{map_label(midi_map)}' ({midi_map.name})"
            + (f" for {seconds:g} s" if seconds is not None else " (Ctrl-C stops)"))
        end = None if seconds is None else clock() + seconds
        count = 0
        while end is None or clock() < end:
            for msg in midi_in.iter_pending():
                if msg.type not in _TIMING:
                    out(describe(midi_map, msg))
                    count += 1
            time.sleep(0.005)
        return count


def record(ports: MidiPorts, path: str | os.PathLike, port: str | None = None, seconds: float | None = None,
           out: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic,
           midi_map: MidiMap | None = None) -> int:
    """Record what a controller sends into a MIDI file (automation for replay); returns the count.
    The file names its map (`midi_map`, else the one made for the port), and replay uses it."""
    from immersions.control.automation import write_automation

    events: list[tuple[float, mido.Message]] = []
    with _open_for_cli(ports, port, midi_map) as midi_in:
        label = map_label(midi_map or map_for_port(midi_in.name))
        out(f"recording '{midi_in.name}' to {path} with map '{label}'"
            + (f" for {seconds:g} s" if seconds else " (Ctrl-C stops)"))
        start = clock()
        try:
            while seconds is None or clock() - start < seconds:
                for msg in midi_in.iter_pending():
                    if not msg.is_meta and hasattr(msg, "channel"):
                        events.append((clock() - start, msg))
                time.sleep(0.002)
        except KeyboardInterrupt:
            pass
    write_automation(path, events, midi_map=label)
    out(f"wrote {len(events)} messages to {path} (replayed through map '{label}' unless --map says otherwise)")
    return len(events)
