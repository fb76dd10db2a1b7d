"""RemoteEngine: the DreamEngine interface, dreaming on a server (`immersions serve`).

    make = functools.partial(RemoteEngine, address="tcp://gpu-box:5555", keys="~/immersions-keys/laptop")
    Performance(ctx, size, clock, engine_factory=make)   # everything else stays on the laptop

Callers use it exactly as a DreamEngine: `update`, `submit`, `select`, `edit`, `set_start`,
`switch_model` only validate, record and enqueue; `latest()` is the newest frame; `on_frame`
is called (from the link thread) for every frame that arrives.

Decks: a RemoteEngine is the link and deck A on it. `another_deck(...)` makes deck B, a
`RemoteDeck` on the same link (one performer, one session: a second link would take the
server over from the first). Each deck's state is a `DeckLink`; every command names its
deck, and each frame from the server goes to the deck it names. Which deck dreams is the
performance's to say (pause and resume, per deck): by default the one off air.

The link thread owns the DEALER socket (a CURVE client). Its states:
- connecting: ZeroMQ retries the TCP connection (0.25 s, doubling to 1 s: a SYN a second
  costs nothing, and a server that comes back is found within a second); the hello goes out
  as soon as a connection (with a completed CURVE handshake) is up;
- connected (after the welcome): it sends each deck's whole state once -- parameters, model,
  selection, start clip (skipped when the server still dreams that deck's loop), pause -- then
  parameters only when they change and commands as they come; heartbeats every second;
  every frame is acknowledged (the server keeps at most two in flight);
- back to connecting when the socket monitor sees the connection close, or nothing is heard
  for LINK_TIMEOUT_S (a cable pulled: no close ever comes), with a fresh socket in that case;
- stopped: another protocol version, or another performer took the server over; no retries.
While the link is down the music keeps looping the last clip (simply: no new frames), and
`status` / `error` say so in one line. Commands given meanwhile are not queued up: they are
part of the state that is sent whole on reconnection.

fallback=True: after `fallback_after` s without a server, a local DreamEngine for each deck
dreams from the same state (the start clip, parameters, selection) until the server is back; its
frames continue the same serial numbers, and the server takes over again at its welcome.
With a fallback, a server that is away or unreachable is not an `error` (clips come all the
same; `status` says what the link does): `error` is left for what stops the dreaming (a
refusal, a take-over, a model the server does not have), so that whoever waits for the
first clip (`perform --headless`) waits for the local engine's.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import platform
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import zmq
from zmq.utils.monitor import recv_monitor_message

from immersions import __version__
from immersions.registry import DECK_NAMES, REGISTRY, Snapshot
from immersions.dream.engine import DreamEngine, Steered
from immersions.frames import DreamFrame
from immersions.selection import Region, Selection, check_region, fits
from immersions.errors import ImmersionsError
from immersions.model.ear import Ear
from immersions.remote import protocol as P
from immersions.remote.keys import ClientKeys, is_loopback, load_client_keys, parse_address, secure_client

log = logging.getLogger(__name__)

CONNECTING, CONNECTED, REJECTED, STOPPED = "connecting", "connected", "rejected", "stopped"
HEARTBEAT_S = 1.0
LINK_TIMEOUT_S = 3.0  # nothing heard for this long: the link is down
WELCOME_TIMEOUT_S = 3.0  # connected but no welcome: try a fresh socket
RECONNECT_IVL_MS, RECONNECT_IVL_MAX_MS = 250, 1000  # one SYN a second at most: cheap, and quick to recover
REFUSED_RETRY_S = 2.0  # ZeroMQ gives up on a refused handshake; we ask again this often
FALLBACK_AFTER_S = 10.0
POLL_MS = 10
_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def model_name(model: Ear) -> str:
    """A model is named by its folder, on the laptop and on the server alike."""
    folder = getattr(model, "folder", None)
    if folder is None:
        raise ImmersionsError("only a model loaded from a folder can dream remotely (the server loads it by name)")
    return Path(folder).name


@dataclass(eq=False)
class DeckLink:
    """What one deck has told the link: the state a server needs, sent whole at each welcome
    (changed together with the command queue, under the link's lock), and what came back."""
    name: str  # "A" or "B"
    model: Ear
    stats: object
    params: Snapshot
    start: np.ndarray
    seed: int
    on_frame: Callable[[DreamFrame], None] | None
    selection: Selection = field(default_factory=Selection)
    paused: bool = False
    stopped: bool = False
    start_version: int = 0
    sent_start_version: int = -1  # the start clip the server has (it resumes a session with it)
    sent_values: dict | None = None  # the parameters the server has
    frame: DreamFrame | None = None
    frames: int = 0  # frames received for this deck
    local: DreamEngine | None = None  # --fallback-local: the engine standing in while the server is away
    local_params: Snapshot | None = None

    @property
    def model_name(self) -> str:
        return model_name(self.model)


class DeckCommands(Steered):
    """The DreamEngine interface of one deck dreamed on a server: `_deck` is its state and
    `_link` the RemoteEngine that carries its commands (for deck A, itself)."""

    _link: "RemoteEngine"
    _deck: DeckLink

    @property
    def params(self) -> Snapshot:
        return self._deck.params

    @params.setter
    def params(self, snapshot: Snapshot) -> None:
        self._deck.params = snapshot  # one reference swap: the link thread sends it when it changes

    @property
    def deck(self) -> str:
        return self._deck.name

    @property
    def model(self) -> Ear:
        return self._deck.model

    @property
    def stats(self):
        return self._deck.stats

    @property
    def model_name(self) -> str:
        return self._deck.model_name

    @property
    def frames_of_deck(self) -> int:
        """Frames received for this deck (`frames_received` counts the link's)."""
        return self._deck.frames

    def select(self, region: Region, keep: bool = False) -> None:
        check_region(self.model.taps, region)
        deck = self._deck
        with self._link._lock:
            deck.selection = deck.selection.add(region, keep)
            self._link._commands.append(P.select_message(region, keep, deck.name))

    def edit(self, region: Region) -> None:
        check_region(self.model.taps, region)
        deck = self._deck
        with self._link._lock:
            deck.selection = deck.selection.edit(region)
            self._link._commands.append(P.edit_message(region, deck.name))

    def set_start(self, clip: np.ndarray) -> None:
        clip = np.array(clip, np.float32)
        if clip.ndim != 1 or not 0 < clip.nbytes <= P.FRAME_LIMIT - P.HEADER_LIMIT:
            self.rejected += 1
            log.warning("rejected a start clip of shape %s: a mono clip of at most %d samples can be sent",
                        clip.shape, (P.FRAME_LIMIT - P.HEADER_LIMIT) // 4)
            return
        deck = self._deck
        with self._link._lock:
            deck.start, deck.start_version = clip, deck.start_version + 1
            self._link._commands.append(P.SetStart(clip, deck.name))

    def set_blend(self, clip: np.ndarray) -> None:
        raise ImmersionsError("remote dreaming cannot take a clip to blend in yet; set capture_to = start")

    def switch_model(self, model: Ear, stats) -> None:
        name, deck = model_name(model), self._deck
        with self._link._lock:
            deck.model, deck.stats = model, stats
            self._link._model_keys[name] = str(model.folder)
            if not fits(model.taps, deck.selection):  # as the engine does
                deck.selection = Selection()
            self._link._commands.append(P.SwitchModel(name, deck.name))

    def pause(self) -> None:
        self._paused_as(True)

    def resume(self) -> None:
        self._paused_as(False)

    def _paused_as(self, paused: bool) -> None:
        deck = self._deck
        with self._link._lock:
            deck.paused = paused
            self._link._commands.append(P.Pause(deck.name) if paused else P.Resume(deck.name))

    @property
    def selection(self) -> Selection:
        return self._deck.selection

    @property
    def paused(self) -> bool:
        return self._deck.paused

    def latest(self) -> DreamFrame | None:
        return self._deck.frame

    def another_deck(self, model: Ear, stats, start: np.ndarray, params: Snapshot, seed: int,
                     on_frame: Callable[[DreamFrame], None], deck: str) -> "RemoteDeck":
        """The engine for another deck of the same performance: a deck on the same link (one
        performer, one session on the server, which keeps a dream per deck)."""
        return self._link._add_deck(model, stats, start, params, seed, on_frame, deck)


class RemoteDeck(DeckCommands):
    """A deck other than A on a RemoteEngine's link (made by `another_deck`): what the link
    says (status, error, connected) is the link's."""

    def __init__(self, link: "RemoteEngine", deck: DeckLink):
        self._link, self._deck = link, deck
        self.rejected = 0

    @property
    def status(self) -> str | None:
        return self._link.status

    @property
    def error(self) -> str | None:
        return self._link.error

    @property
    def connected(self) -> bool:
        return self._link.connected

    def start(self) -> None:
        self._link.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._link._stop_deck(self._deck, timeout)


class RemoteEngine(DeckCommands):
    """See the module docstring: the link to the server, and deck A on it. `address`:
    tcp://HOST:PORT; `keys`: a client key folder (see immersions.remote.keys) or None for a
    plain link to 127.0.0.1."""

    def __init__(self, model: Ear, stats, start: np.ndarray, params: Snapshot | None = None,
                 device: str | torch.device | None = None, seed: int = 0, on_frame=None, *, address: str,
                 keys: str | Path | ClientKeys | None = None, fallback: bool = False,
                 fallback_after: float = FALLBACK_AFTER_S, copies: int = 4, link_timeout: float = LINK_TIMEOUT_S):
        parse_address(address)
        if keys is None and not is_loopback(address):
            raise ImmersionsError(f"connecting to {address} needs keys: pass --keys FOLDER (see docs/remote.md); "
                                  "unencrypted links are for 127.0.0.1 only")
        self.keys = keys if keys is None or isinstance(keys, ClientKeys) else load_client_keys(keys)
        self.address = address
        self._link = self
        self._deck = DeckLink(DECK_NAMES[0], model, stats, params or REGISTRY.defaults(), np.array(start, np.float32),
                              int(seed), on_frame)
        self._decks: dict[str, DeckLink] = {self._deck.name: self._deck}
        self._model_keys = {self.model_name: str(model.folder)}  # wire name -> DreamFrame.model_name here
        self.device, self.seed, self.copies = device or "cpu", int(seed), copies
        self.fallback, self.fallback_after, self.link_timeout = fallback, fallback_after, link_timeout
        self.session = uuid.uuid4().hex
        self.rejected = 0
        self.error: str | None = None
        self.status = f"connecting to {address}"
        self.state = CONNECTING
        self.server: P.Welcome | None = None  # what the server said in its welcome
        self.frames_received = 0
        self.worker_frames: dict[int, int] = {}
        self.frame_bytes = 0  # the last frame's size on the wire
        self.welcomes = 0
        self._refused_key = self._bad_handshake = False  # what the last handshake said, until one succeeds
        self._lock = threading.Lock()  # the decks' state and the command queue change together under it
        self._commands: deque[P.Message] = deque()
        self._serials = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: str | None = None  # the kind of link trouble last logged

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    @property
    def dreaming_locally(self) -> bool:
        """Whether local engines stand in for the server (--fallback-local)."""
        return any(d.local is not None for d in self._live_decks())

    def deck_link(self, name: str) -> DeckLink | None:
        return self._decks.get(name)

    def _live_decks(self) -> list[DeckLink]:
        with self._lock:
            return [d for d in self._decks.values() if not d.stopped]

    def _add_deck(self, model: Ear, stats, start: np.ndarray, params: Snapshot, seed: int, on_frame,
                  name: str) -> RemoteDeck:
        if name not in DECK_NAMES or name in self._decks:
            raise ImmersionsError(f"deck {name}: the link has decks {', '.join(self._decks)} of "
                                  f"{', '.join(DECK_NAMES)}; each deck is made once")
        deck = DeckLink(name, model, stats, params, np.array(start, np.float32), int(seed), on_frame,
                        start_version=1)
        with self._lock:
            self._decks[name] = deck
            self._model_keys[deck.model_name] = str(model.folder)
            # the server begins the deck on deck A's model: the model first, then the loop
            self._commands.extend((P.SwitchModel(deck.model_name, name), P.SetStart(deck.start, name)))
        return RemoteDeck(self, deck)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="dream-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Deck A stops; the link ends when no deck on it dreams any more."""
        self._stop_deck(self._deck, timeout)

    def _stop_deck(self, deck: DeckLink, timeout: float) -> None:
        with self._lock:
            deck.stopped = True
            deck.on_frame = None
            done = all(d.stopped for d in self._decks.values())
            if not done:
                self._commands.append(P.Pause(deck.name))  # the server rests it
        if not done:
            engine, deck.local = deck.local, None
            if engine is not None:
                engine.stop()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "RemoteEngine":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the link thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._ctx = zmq.Context()
        self._sock = self._monitor = None
        self._open()
        self._down_since = time.monotonic()
        self._heard = 0.0
        self._rejected_model: str | None = None
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                for sock in dict(self._poller.poll(POLL_MS)):
                    if sock is self._monitor:
                        self._monitor_events()
                    else:
                        self._receive_all()
                now = time.monotonic()
                if self.state == CONNECTED:
                    self._flush()
                    if self.state == CONNECTED and now >= next_beat:
                        self._send(P.Heartbeat())
                        next_beat = now + HEARTBEAT_S
                    if self.state == CONNECTED and now - self._heard > self.link_timeout:
                        self._lost(f"nothing heard for {self.link_timeout:.0f} s")
                        self._open()  # a dead connection that never closed: start afresh
                elif self.state == CONNECTING:
                    self._connecting(now)
                else:
                    self._idle()
        finally:
            if self.state == CONNECTED:
                self._send(P.Bye())
            self._close()
            self._ctx.term()
            self._stop_local("the local engine stopped")  # the performance ended: nothing came back

    def _open(self) -> None:
        self._close()
        sock = self._ctx.socket(zmq.DEALER)
        for option, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.MAXMSGSIZE, P.SOCKET_MAX_PART),
                              (zmq.SNDHWM, 64), (zmq.RCVHWM, 8), (zmq.RECONNECT_IVL, RECONNECT_IVL_MS),
                              (zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS),
                              (zmq.HEARTBEAT_IVL, int(HEARTBEAT_S * 1000)),
                              (zmq.HEARTBEAT_TIMEOUT, int(self.link_timeout * 1000))):
            sock.setsockopt(option, value)
        if self.keys is not None:
            secure_client(sock, self.keys)
        self._monitor = sock.get_monitor_socket(_EVENTS)
        sock.connect(self.address)
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._hello_at: float | None = None
        self._opened_at = time.monotonic()
        if self.state == CONNECTED:
            self.state = CONNECTING

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._monitor.close(0)
            self._sock.close(0)
            self._sock = self._monitor = None

    def _send(self, message: P.Message) -> bool:
        """Send now or not at all (no connection, or a full queue: the link is down)."""
        try:
            self._sock.send_multipart(P.encode(message), zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            if self.state == CONNECTED:
                self._lost("the connection is gone")
            return False

    def _monitor_events(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused_key = True
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._bad_handshake = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._refused_key = self._bad_handshake = False
            elif event == zmq.EVENT_DISCONNECTED and self.state == CONNECTED:
                self._lost("the connection closed")

    def _receive_all(self) -> None:
        for _ in range(16):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                message = P.decode(parts, P.FROM_SERVER)
            except P.ProtocolError as err:
                self.rejected += 1
                log.warning("rejected a message from the server: %s", err)
                continue
            self._heard = time.monotonic()
            if isinstance(message, P.Frame):
                self._frame_in(message, P.message_bytes(parts))
            elif isinstance(message, P.Welcome):
                if self.state in (CONNECTING, REJECTED):
                    self._welcome(message)
            elif isinstance(message, (P.Refusal, P.Error)):
                self._trouble(message)

    def _trouble(self, m: P.Refusal | P.Error) -> None:
        if isinstance(m, P.Refusal):
            self._give_up(f"server {self.address} refused this client: {m.reason}")
        elif m.code == "taken_over":
            self._give_up(f"server {self.address}: {m.message}; restart to take it back")
        elif m.code == "unknown_model":
            self.state, self._rejected_model = REJECTED, self.model_name
            self.error = self.status = f"server {self.address} {m.message.removeprefix('rejected: this server ')}"
            log.error("%s", self.error)
        elif m.code == "not_ready" and self.state == CONNECTED:
            self._lost("the server no longer knows this session")  # it restarted or timed us out: hello again
        else:
            self.rejected += 1
            log.warning("server %s %s", self.address, m.message)

    def _give_up(self, why: str) -> None:
        self.state = STOPPED
        self.error = self.status = why
        log.error("%s", why)

    def _lost(self, why: str) -> None:
        self.state, self._hello_at, self._down_since = CONNECTING, None, time.monotonic()
        self.status = f"lost server {self.address} ({why}), retrying every {RECONNECT_IVL_MAX_MS / 1000:g} s"
        self.error = None if self.fallback else self.status  # with a fallback, clips come all the same
        log.warning("%s", self.status)

    def _connecting(self, now: float) -> None:
        if self.dreaming_locally:
            self._to_local()
        else:
            with self._lock:
                self._commands.clear()  # the state is sent whole at the welcome
        if self._hello_at is None:
            hello = P.Hello(self.model_name, f"immersions {__version__} on {platform.node()}", self.session,
                            self.seed % 2**31)
            if self._send(hello):
                self._hello_at = now
        elif now - self._hello_at > WELCOME_TIMEOUT_S:
            self._open()  # connected, yet no welcome: a hung server or not ours; try a fresh connection
            return
        refused = self._refused_key or self._bad_handshake
        if refused and self._hello_at is None and now - self._opened_at > REFUSED_RETRY_S:
            self._open()  # ZeroMQ does not retry a refused handshake by itself (keys may be authorized meanwhile)
        down = now - self._down_since
        if down > self.link_timeout:
            if self._refused_key:
                why = "refused this laptop's key (is its client.key in the server's authorized/ folder?)"
            elif self._bad_handshake:
                why = "refused the handshake (is server.key the server's public key?)"
            else:
                why = f"refused or unreachable (no answer for {down:.0f} s)"
            local = ", dreaming locally meanwhile" if self.dreaming_locally else ""
            every = REFUSED_RETRY_S if refused else RECONNECT_IVL_MAX_MS / 1000
            status = f"server {self.address} {why}{local}, retrying every {every:g} s"
            if why.split(" (")[0] != self._said:  # once per kind of trouble, not per second
                self._said = why.split(" (")[0]
                log.warning("%s", status)
            self.status = status
            self.error = None if self.fallback else status  # with a fallback, clips come all the same
        if self.fallback and not self.dreaming_locally and down > self.fallback_after:
            self._start_local()

    def _idle(self) -> None:
        with self._lock:
            self._commands.clear()
        if self.state == REJECTED and self.model_name != self._rejected_model:
            self.state, self._hello_at, self._down_since = CONNECTING, None, time.monotonic()  # ask again

    def _welcome(self, m: P.Welcome) -> None:
        self._stop_local(f"server {self.address} is back: the local engine stopped")
        with self._lock:
            self._commands.clear()
            decks = [(d, d.params, d.model_name, d.selection, d.start, d.start_version, d.paused)
                     for d in self._decks.values() if not d.stopped]
        self.state, self.server, self.error, self._said = CONNECTED, m, None, None
        self.welcomes += 1
        devices = ", ".join(sorted(set(m.devices)))
        self.status = f"connected to {self.address}: {m.server}, {m.workers} worker{'s' if m.workers != 1 else ''} ({devices})"
        log.info("%s%s", self.status, " (resumed)" if m.resumed else "")
        sent = True
        for deck, params, name, selection, start, version, paused in decks:  # each deck's whole state
            deck.sent_values = dict(params.values())
            sent = sent and self._send(P.Params(deck.sent_values, deck.name))
            sent = sent and self._send(P.SwitchModel(name, deck.name))  # the server keeps a model it has on
            for i, region in enumerate(selection.regions):
                sent = sent and self._send(P.select_message(region, i > 0, deck.name))
            if not m.resumed or deck.name not in m.decks or version != deck.sent_start_version:
                sent = sent and self._send(P.SetStart(start, deck.name))
                deck.sent_start_version = version
            sent = sent and self._send(P.Pause(deck.name) if paused else P.Resume(deck.name))

    def _flush(self) -> None:
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
            decks = [(d, d.params, d.start_version) for d in self._decks.values() if not d.stopped]
        for deck, params, _ in decks:
            values = params.values()
            if values != deck.sent_values:
                if not self._send(P.Params(dict(values), deck.name)):
                    return
                deck.sent_values = dict(values)
        for message in commands:
            if not self._send(message):
                return
        for deck, _, version in decks:
            deck.sent_start_version = version

    def _frame_in(self, m: P.Frame, nbytes: int) -> None:
        if self.state == CONNECTED:
            self._send(P.Ack(m.serial))  # first: the server may send the next one while we decode
        deck = self._decks.get(m.deck)
        if deck is None or deck.stopped or deck.local is not None:
            return  # a deck this laptop no longer plays, or a local engine stands in for it
        frame = m.to_dream_frame(next(self._serials), self._model_keys.get(m.model))
        self.frames_received += 1
        self.worker_frames[m.worker] = self.worker_frames.get(m.worker, 0) + 1
        self.frame_bytes = nbytes
        deck.frames += 1
        self._deliver(deck, frame)

    def _deliver(self, deck: DeckLink, frame: DreamFrame) -> None:
        deck.frame = frame
        on_frame = deck.on_frame
        if on_frame is not None:
            try:
                on_frame(frame)
            except Exception:  # the link must outlive a failing consumer
                log.exception("on_frame failed for frame %d of deck %s", frame.serial, deck.name)

    # -- fallback: dreaming locally while the server is away ---------------------------------------

    def _start_local(self) -> None:
        with self._lock:
            self._commands.clear()  # each deck's state holds them
        for deck in self._live_decks():
            self._begin_local(deck)
        log.warning("server %s away for %g s: dreaming locally on %s until it is back", self.address,
                    self.fallback_after, self.device)

    def _begin_local(self, deck: DeckLink) -> None:
        """A local engine for `deck`, from its whole state (its queued commands are in it)."""
        with self._lock:
            start, selection, paused, params = deck.start, deck.selection, deck.paused, deck.params
            self._commands = deque(c for c in self._commands if getattr(c, "deck", None) != deck.name)
        engine = DreamEngine(deck.model, deck.stats, start, params, device=self.device, seed=deck.seed,
                             copies=self.copies)
        engine.on_frame = lambda frame: self._local_frame(deck, engine, frame)
        for i, region in enumerate(selection.regions):
            engine.select(region, keep=i > 0)
        engine.start()
        if paused:
            engine.pause()
        deck.local, deck.local_params = engine, params

    def _to_local(self) -> None:
        """Commands and parameter changes go to the local engines while they stand in (a deck
        made meanwhile gets one of its own)."""
        for deck in self._live_decks():
            if deck.local is None:
                self._begin_local(deck)
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
        for deck in self._live_decks():
            if deck.params is not deck.local_params and deck.local is not None:
                deck.local.submit(deck.params)
                deck.local_params = deck.params
        for m in commands:
            deck = self._decks[m.deck]  # every queued command names its deck
            engine = deck.local
            if engine is None:
                continue  # a deck stopped meanwhile
            if isinstance(m, P.Select):
                engine.select(m.region, m.keep)
            elif isinstance(m, P.Edit):
                engine.edit(m.region)
            elif isinstance(m, P.SetStart):
                engine.set_start(m.clip)
            elif isinstance(m, P.SwitchModel):
                engine.switch_model(deck.model, deck.stats)
            elif isinstance(m, P.Pause):
                engine.pause()
            elif isinstance(m, P.Resume):
                engine.resume()

    def _local_frame(self, deck: DeckLink, engine: DreamEngine, frame: DreamFrame) -> None:
        """(a local dream thread) Serials continue the remote ones, so the player sees a new clip."""
        if engine is deck.local:
            self._deliver(deck, dataclasses.replace(frame, serial=next(self._serials)))

    def _stop_local(self, why: str) -> None:
        engines = []
        for deck in self._decks.values():
            engine, deck.local = deck.local, None
            if engine is not None:
                engines.append(engine)
        for engine in engines:
            engine.stop()
        if engines:
            log.info("%s", why)
