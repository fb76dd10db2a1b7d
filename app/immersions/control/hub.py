"""The control hub: the one door through which every control source changes a performance.

Sources: the overlay, keys, MIDI (live and automation replay), OSC, presets and morphs,
the autopilot. Each may run on its own thread (mido and python-osc call back on theirs),
so they only *request* changes; the main thread calls `apply()` once per frame, which
validates each change against the registry (through the target's `set`), keeps the last
good value on a bad one, and tells the listeners what actually changed and who changed it.
A listener (MIDI feedback, OSC) uses the source to avoid echoing a change back to where it
came from.

Actions are named commands with an optional argument ("preset" 3, "record_start",
"model_next" ...). Whoever provides an action registers a handler for it; an action
nobody handles is rejected in one line, like a bad value.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from immersions.registry import Snapshot

log = logging.getLogger(__name__)

GUI, KEYS, MIDI, AUTOMATION, OSC, PRESET, AUTOPILOT, REMOTE = (
    "gui", "keys", "midi", "automation", "osc", "preset", "autopilot", "remote")
DECK_SWITCH = "deck"  # the edited deck changed: its own values are announced to every listener
FADE = "fade"  # a fade (fade_bars) moves the crossfader: every control shows where it goes

# actions a map, a key or an OSC address may name (their handlers are registered by the
# parts that provide them; see Performance and the window)
ACTIONS = {
    "select": "commit the selected region (with keep on, the next edit starts a new region)",
    "restart": "start the loop again from the chosen start clip",
    "pause": "pause or resume dreaming (the loop keeps playing)",
    "preset": "recall preset N (1-based slot) or by name",
    "preset_next": "recall the next preset",
    "preset_previous": "recall the previous preset",
    "record": "start or stop recording the output",
    "record_start": "start recording the output to WAV",
    "record_stop": "stop recording",
    "export_clip": "write the clip heard now to WAV",
    "model": "switch to model N (0-based) or by name",
    "model_next": "switch to the next loaded model",
    "model_previous": "switch to the previous loaded model",
    "capture": "take the last capture_bars bars of the room's sound, on the next bar line, as capture_to says",
    "deck": "edit deck A or B (by name), or the other deck (no argument)",
    "fade_bars": "move the crossfader to the deck off air over N bars (default fade_length), bar line to bar line",
}


class Target(Protocol):
    params: Snapshot

    def set(self, name: str, value) -> bool: ...


class Values:
    """A target that only holds validated values: for tools that steer no performance (a MIDI
    monitor, a map check) and for exercising control sources against the real registry."""

    def __init__(self, params: Snapshot | None = None):
        from immersions.registry import REGISTRY
        from immersions.errors import ImmersionsError

        self._error_type = ImmersionsError
        self.params = params or REGISTRY.defaults()
        self.last_error: str | None = None

    def set(self, name: str, value) -> bool:
        try:
            self.params = self.params.replace(**{name: value})
        except self._error_type as err:
            self.last_error = str(err)
            return False
        return True


@dataclass(frozen=True)
class Change:
    name: str
    value: object
    source: str


Listener = Callable[[Change], None]
Handler = Callable[[object, str], object]  # (argument, source) -> anything


class ControlHub:
    def __init__(self, target: Target):
        self.target = target
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._listeners: list[Listener] = []
        self._handlers: dict[str, Handler] = {}
        self._main = threading.get_ident()
        self.rejected = 0
        self.last_error: str | None = None

    # -- wiring ------------------------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """Call `listener(change)` on the main thread after every applied change."""
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def handle(self, action: str, handler: Handler) -> None:
        """Provide an action: `handler(argument, source)` runs on the main thread."""
        self._handlers[action] = handler

    def handles(self, action: str) -> bool:
        return action in self._handlers

    @property
    def params(self) -> Snapshot:
        return self.target.params

    # -- requests (any thread) -----------------------------------------------------------------

    def request(self, name: str, value, source: str) -> None:
        """Ask for a parameter change; applied (or rejected) at the next `apply()`."""
        self._pending.put(("set", name, value, source))

    def request_action(self, action: str, argument=None, source: str = GUI) -> None:
        self._pending.put(("act", action, argument, source))

    # -- immediate changes (main thread: overlay, keys) --------------------------------------

    def set(self, name: str, value, source: str = GUI) -> bool:
        """Apply one change now (main thread only); False when it was rejected."""
        before = self.target.params
        if not self.target.set(name, value):
            # the target has said why in the log; keep the reason for the overlay
            self.rejected += 1
            self.last_error = getattr(self.target, "last_error", None) or f"{name}: bad value {value!r}"
            return False
        after = self.target.params
        if after is not before and after[name] != before[name]:
            self._tell(Change(name, after[name], source))
        return True

    def announce(self, name: str, value, source: str) -> None:
        """(main thread) Tell the listeners of a value the target changed on its own (the edited
        deck's values when the controls move to the other deck), so motor faders follow."""
        self._tell(Change(name, value, source))

    def _tell(self, change: Change) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken listener must not stop the others or the show
                log.exception("control listener failed on %s", change)

    def act(self, action: str, argument=None, source: str = GUI):
        """Run an action now (main thread only); None when nobody provides it or it failed."""
        handler = self._handlers.get(action)
        if handler is None:
            self._reject(f"unknown action '{action}' (known: {', '.join(sorted(self._handlers))})")
            return None
        try:
            result = handler(argument, source)
            if result is False:  # the handler refused (and logged why); keep the reason for the overlay
                self.rejected += 1
                self.last_error = getattr(self.target, "last_error", None) or f"{action}: refused"
            return result
        except Exception as err:  # an action that fails is reported, the performance runs on
            self._reject(f"{action}: {err}")
            log.debug("action %s failed", action, exc_info=True)
            return None

    def apply(self) -> int:
        """(main thread, once per frame) Apply everything requested since the last call."""
        done = 0
        while True:
            try:
                kind, name, value, source = self._pending.get_nowait()
            except queue.Empty:
                return done
            if kind == "set":
                self.set(name, value, source)
            else:
                self.act(name, value, source)
            done += 1

    def _reject(self, message: str) -> None:
        self.rejected += 1
        self.last_error = message
        log.warning("rejected: %s", message)
