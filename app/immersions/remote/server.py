"""The dream server: DreamEngines on a GPU box, dreaming for one performing laptop.

    immersions serve --bind tcp://0.0.0.0:5555 --keys ~/immersions-keys --gpus all --model default

Threads: the server thread owns the ROUTER socket (CURVE server; nothing else touches it).
It decodes what the client sends, forwards every command to every worker, and sends
heartbeats and frames. Each worker is a DreamEngine with its own dream thread; its
`on_frame` only drops the frame into a one-slot mailbox that the server thread empties.

Policies (docs/remote.md says the same for performers):
- Workers: one DreamEngine per device and `--workers` (default one per GPU, or one on the
  CPU), for each deck the client dreams (A, and B once the performer makes it). All of a
  deck's engines get its parameters, selection, start clip and model; worker i of deck d
  dreams with seed + i + d * workers, so their loops drift apart and the client hears a
  fresh clip more often.
- Decks: each deck has its own dream (`DeckDream`), and the client says which deck dreams
  (pause and resume name the deck: by default the one on air holds and the one off air
  dreams). A worker's engines take their steps in turn (`Turns`): one dream at a time on a
  device, and two dreaming decks alternate steps. Every frame names its deck.
- Delivery: newest wins, for each deck. A frame from any worker goes out as soon as the
  link has room; at most CREDIT frames are unacknowledged in flight, a newer frame of a
  deck replaces its frame still waiting (counted as dropped), the deck whose frame waited
  longest goes first, and SNDHWM bounds ZeroMQ's own queue, so nothing queues without bound
  and the client never hears a stale clip on a slow link. Sends never block; what ZeroMQ
  cannot take is counted (`unsent`), and an unsent frame waits for the next try.
- One performing client. A hello with a new session takes over the server: the previous
  client is told (error `taken_over`) and stops. A hello with the session the server already
  dreams (a client that reconnected after a network drop) resumes the same loop.
- Keys: only clients whose public key is in the keys folder's authorized/ are let in (the
  ZAP handler); the folder is re-read when it changes, so adding or revoking a laptop needs
  no restart (a revoked laptop that is connected stays until it reconnects). Refused
  handshakes are logged and counted.
- A client silent for CLIENT_TIMEOUT s (no heartbeat, ack or command): dreaming pauses (the
  GPU rests; there is no one to hear it), the session is kept, and its hello resumes it.
- Bad messages (malformed, oversized, another version, out of order) are rejected with one
  logged line, counted, and answered with an error (or a refusal naming both protocol
  versions); the server runs on.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import zmq
from zmq.utils.monitor import recv_monitor_message

from immersions import __version__
from immersions.registry import DECK_NAMES, REGISTRY, Snapshot, loop_length
from immersions.dream.engine import DreamEngine, Turns
from immersions.frames import DreamFrame
from immersions.selection import Region, Selection, check_region
from immersions.errors import ImmersionsError
from immersions.model.ear import Ear
from immersions.model.stats import TapStats
from immersions.remote import protocol as P
from immersions.remote.keys import (
    ServerKeys, is_loopback, load_server_keys, parse_address, secure_server, start_authenticator,
)

log = logging.getLogger(__name__)

READY = "immersions server ready"  # the log line that says the server listens
HEARTBEAT_S = 1.0
CLIENT_TIMEOUT_S = 3.0
CREDIT = 2  # frames in flight before the client acknowledges one
CONTROL_QUEUE = 32  # room in ZeroMQ's send queue for control messages beside the frames
POLL_MS = 5
KEYS_RELOAD_S = 2.0  # how often the authorized/ folder is looked at
_HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def worker_devices(gpus: str | None) -> list[str]:
    """--gpus: None (every GPU, else the CPU), 'all', 'cpu', or indices like '0,1'."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus is None:
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    if gpus.strip().lower() == "cpu":
        return ["cpu"]
    if count == 0:
        raise ImmersionsError(f"--gpus {gpus}: no CUDA GPU is visible here; leave --gpus out to dream on the CPU")
    if gpus.strip().lower() == "all":
        return [f"cuda:{i}" for i in range(count)]
    try:
        indices = [int(s) for s in gpus.split(",") if s.strip()]
    except ValueError:
        raise ImmersionsError(f"--gpus {gpus}: give 'all' or GPU indices like 0,1") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad or not indices:
        raise ImmersionsError(f"--gpus {gpus}: this machine has GPUs 0 .. {count - 1}")
    return [f"cuda:{i}" for i in dict.fromkeys(indices)]


def _stats_on(stats: dict[str, TapStats] | None, device: str) -> dict[str, TapStats] | None:
    if stats is None:
        return None
    return {k: TapStats(s.silence_mean.to(device), s.data_mean.to(device), s.data_std.to(device))
            for k, s in stats.items()}


@dataclass
class Worker:
    index: int
    device: str
    models: dict[str, Ear]  # this worker's own copy of every served model, on its device
    stats: dict[str, dict[str, TapStats] | None]
    engines: dict[str, DreamEngine] = field(default_factory=dict)  # deck name -> its engine on this worker
    turns: Turns = field(default_factory=Turns)  # this worker's engines step one at a time
    frames: int = 0  # frames of this worker sent to the client


@dataclass
class DeckDream:
    """One deck's dream as the client described it: enough to rebuild its engines."""
    model: str
    params: Snapshot = field(default_factory=REGISTRY.defaults)
    selection: Selection = field(default_factory=Selection)
    start: np.ndarray | None = None  # None: no start clip yet, so no engines yet
    paused: bool = False


@dataclass
class Session:
    """What one performer's RemoteEngine has told the server: enough to rebuild the workers."""
    id: str
    client: str
    seed: int
    decks: dict[str, DeckDream]

    @property
    def model(self) -> str:
        """Deck A's model: the one the hello named."""
        return self.decks[DECK_NAMES[0]].model

    def deck(self, name: str) -> DeckDream:
        """Deck `name`'s dream, begun on deck A's model when the client first names it."""
        if name not in self.decks:
            self.decks[name] = DeckDream(self.model)
        return self.decks[name]


class DreamServer:
    """See the module docstring. `start()` serves from a thread, `serve_forever()` from this one."""

    def __init__(self, bind: str = "tcp://127.0.0.1:5555", models: Sequence[str | Path] | None = None,
                 devices: Sequence[str] = ("cpu",), workers_per_device: int = 1,
                 keys: str | Path | ServerKeys | None = None, insecure: bool = False, copies: int = 4,
                 heartbeat_s: float = HEARTBEAT_S, client_timeout_s: float = CLIENT_TIMEOUT_S,
                 warmup: bool = True):
        from immersions.model.checkpoint import load_model
        from immersions.model.stats import load_stats

        parse_address(bind)
        if keys is not None and insecure:
            raise ImmersionsError("give --keys or --insecure, not both")
        if keys is None and not insecure:
            raise ImmersionsError("serving needs keys: make them with `immersions keys generate DIR` and pass "
                                  "--keys DIR (an unencrypted server needs --insecure and --bind tcp://127.0.0.1:PORT)")
        if insecure and not is_loopback(bind):
            raise ImmersionsError(f"--insecure serves only on the loopback interface, not {bind}; "
                                  "use --keys DIR to serve other machines")
        if not (isinstance(workers_per_device, int) and 1 <= workers_per_device <= 64):
            raise ImmersionsError(f"--workers {workers_per_device}: choose 1 .. 64 engines per device")
        self.keys = load_server_keys(keys) if isinstance(keys, (str, Path)) else keys
        self.bind, self.copies, self.warmup = bind, copies, warmup
        self.heartbeat_s, self.client_timeout_s = heartbeat_s, client_timeout_s
        # models: loaded once on the CPU, then one copy per worker on its device
        loaded: dict[str, tuple[Ear, dict | None]] = {}
        for name in models or [None]:
            model = load_model(name)
            key = Path(model.folder).name
            if key in loaded:
                raise ImmersionsError(f"two served models are called '{key}'; rename one folder")
            loaded[key] = (model, load_stats(model))
        self.models = list(loaded)
        self.workers = []
        for device in devices:
            for _ in range(workers_per_device):
                self.workers.append(Worker(
                    len(self.workers), str(device),
                    {k: copy.deepcopy(m).to(device) for k, (m, _) in loaded.items()},
                    {k: _stats_on(s, str(device)) for k, (_, s) in loaded.items()}))
        self._served = {k: m for k, (m, _) in loaded.items()}  # for checking regions
        # counters
        self.rejected = 0
        self.frames_sent = 0
        self.deck_frames: dict[str, int] = {}  # frames sent, by deck
        self.frames_dropped = 0
        self.unsent = 0  # messages ZeroMQ could not take (peer's queue full or peer gone)
        self._link_ok = True
        self.takeovers = 0
        self.refused_handshakes = 0
        # state owned by the server thread
        self.session: Session | None = None
        self._client: bytes | None = None
        self._heard = 0.0
        self._sent_serial = 0
        self._acked = 0
        self._generation = 0
        self._mail_lock = threading.Lock()
        self._mailbox: dict[str, tuple[int, int, DreamFrame]] = {}  # deck -> (arrival, worker, frame)
        self._arrivals = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._auth = None
        self.endpoint: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> str:
        """Bind the socket (errors surface here, in the caller's thread); the bound endpoint."""
        if self._socket is not None:
            return self.endpoint
        if self.warmup:
            self._warm_up()
        self._context = zmq.Context()
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, P.SOCKET_MAX_PART)
        # Frames are bounded by CREDIT; the rest of the queue is for small control messages
        # (welcome, errors, refusals, heartbeats). ZeroMQ learns that the wire took a message
        # only in batches, so a queue just CREDIT + 2 deep looked full under load and ROUTER
        # dropped replies without a word. MANDATORY makes a full or departed peer an error
        # that _send sees (sends never block: NOBLOCK).
        sock.setsockopt(zmq.SNDHWM, CREDIT + CONTROL_QUEUE)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RCVHWM, 64)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(self.heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(self.client_timeout_s * 1000))
        if self.keys is not None:
            self._auth = start_authenticator(self._context, self.keys)
            secure_server(sock, self.keys)
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as err:
            sock.close(0)
            self._close_context()
            raise ImmersionsError(f"cannot listen on {self.bind} ({err}); is another server running there?") from None
        self._socket = sock
        self._monitor = sock.get_monitor_socket(_HANDSHAKE_FAILURES)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        security = f"CURVE, clients from {self.keys.authorized}" if self.keys else "INSECURE (loopback only)"
        log.info("%s: %d worker%s (%s) on %s; models: %s; %s", READY, len(self.workers),
                 "s" if len(self.workers) != 1 else "", ", ".join(w.device for w in self.workers), self.endpoint,
                 ", ".join(self.models), security)
        return self.endpoint

    def _warm_up(self, timeout: float = 120.0) -> None:
        """One dream step and frame per worker and model before listening: the first frame a
        client waits for is then a plain step, not the first one of a cold process."""
        began = time.perf_counter()
        for name in self.models:
            rate = self._served[name].sample_rate
            params = REGISTRY.defaults()
            clip = 0.1 * np.random.default_rng(0).standard_normal(
                loop_length(params, rate)).astype(np.float32)
            engines = [DreamEngine(w.models[name], w.stats[name], clip, params, device=w.device, copies=self.copies)
                       for w in self.workers]
            for e in engines:
                e.select(Region(len(self._served[name].taps) // 2))
                e.start()
            deadline = time.perf_counter() + timeout
            while any(e.latest() is None and e.error is None for e in engines) and time.perf_counter() < deadline:
                time.sleep(0.01)
            stoppers = [threading.Thread(target=e.stop) for e in engines]
            for t in stoppers:
                t.start()
            for t in stoppers:
                t.join()
        log.info("warmed up %d worker%s in %.1f s", len(self.workers), "s" if len(self.workers) != 1 else "",
                 time.perf_counter() - began)

    def start(self) -> str:
        endpoint = self.open()
        self._thread = threading.Thread(target=self._run, name="dream-server", daemon=True)
        self._thread.start()
        return endpoint

    def serve_forever(self, seconds: float | None = None) -> None:
        self.open()
        if seconds is not None:
            timer = threading.Timer(seconds, self._stop.set)
            timer.daemon = True
            timer.start()
        self._run()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10.0)
            self._thread = None

    def __enter__(self) -> "DreamServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _close_context(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            self._context.destroy(linger=0)  # closes any socket still open first: term() alone would wait for it
            self._context = None

    # -- the server thread --------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        next_beat = next_keys = 0.0
        keys_seen = self._authorized_stamp()
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if self._monitor in ready:
                    self._handshake_failures()
                if self._socket in ready:
                    for _ in range(64):  # a burst at most, then frames and heartbeats get their turn
                        try:
                            parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._receive(parts)
                now = time.monotonic()
                if self._auth is not None and now >= next_keys:  # keys added or removed: in force at once
                    next_keys = now + KEYS_RELOAD_S
                    stamp = self._authorized_stamp()
                    if stamp != keys_seen:
                        keys_seen = stamp
                        self._auth.configure_curve(domain="*", location=str(self.keys.authorized))
                        log.info("reloaded the authorized client keys: %d in %s", len(stamp), self.keys.authorized)
                if self._client is not None and now - self._heard > self.client_timeout_s:
                    log.warning("client silent for %.0f s: dreaming paused until it returns", now - self._heard)
                    self._drop_client()
                self._send_frame()
                if self._client is not None and now >= next_beat:
                    self._send(self._client, P.Heartbeat())
                    next_beat = now + self.heartbeat_s
        finally:
            log.info("server on %s stopping: the dream steps under way finish first", self.endpoint)
            self._stop_engines()
            self._socket.disable_monitor()
            self._monitor.close(0)
            self._socket.close(0)
            self._socket = None
            self._close_context()
            log.info("server on %s stopped (%d frames sent, %d rejected messages, %d unsent)", self.endpoint,
                     self.frames_sent, self.rejected, self.unsent)

    def _authorized_stamp(self) -> tuple:
        """The authorized keys' names and change times: a change means reload."""
        if self.keys is None:
            return ()
        try:
            return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.keys.authorized.glob("*.key")))
        except OSError:
            return ()

    def _handshake_failures(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self.refused_handshakes += 1
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                log.warning("refused a client whose key is not in %s", self.keys.authorized if self.keys else "-")
            else:
                log.warning("a client failed the handshake (%s): wrong server key, or not an immersions client",
                            zmq.Event(event).name)

    def _send(self, identity: bytes, message: P.Message) -> str:
        """Send without blocking: 'sent'; 'invalid' (it can never go out, said why); or 'busy'
        (the peer's queue is full or the peer is gone: counted; the client hears of it by heartbeat)."""
        try:
            self._socket.send_multipart([identity, *P.encode(message)], flags=zmq.NOBLOCK, copy=False)
            self._link_ok = True
            return "sent"
        except P.ProtocolError as err:  # e.g. a frame over the limit (a very long loop)
            log.warning("not sent: %s", err)
            return "invalid"
        except zmq.ZMQError as err:
            self.unsent += 1
            if self._link_ok:  # once per stall, not on every retry
                log.debug("could not send %s to client %s: %s", message.TYPE, identity.hex(), err)
            self._link_ok = False
            return "busy"

    def _reject(self, identity: bytes, reason: str, code: str = "rejected") -> None:
        self.rejected += 1
        log.warning("rejected a message from client %s: %s", identity.hex(), reason)
        self._send(identity, P.Error(f"rejected: {reason}"[:1024], code))

    def _receive(self, parts: list) -> None:
        identity = parts[0].bytes
        try:
            message = P.decode(parts[1:], P.FROM_CLIENT)
        except P.VersionMismatch as err:
            self.rejected += 1
            reason = (f"client speaks protocol version {err.theirs!r}, this server speaks {P.PROTOCOL_VERSION}: "
                      f"run the same immersions version on both machines")
            log.warning("refused client %s: %s", identity.hex(), reason)
            self._send(identity, P.Refusal(reason))
            return
        except P.ProtocolError as err:
            self._reject(identity, str(err))
            return
        if isinstance(message, P.Hello):
            self._hello(identity, message)
            return
        if identity != self._client:
            if not isinstance(message, (P.Heartbeat, P.Ack, P.Bye)):
                self._reject(identity, f"'{message.TYPE}' before hello: say hello first", "not_ready")
            return
        self._heard = time.monotonic()
        try:
            self._command(message)
        except ImmersionsError as err:
            self._reject(identity, str(err))

    # -- commands (server thread) ---------------------------------------------------------------

    def _hello(self, identity: bytes, hello: P.Hello) -> None:
        if hello.model not in self.models:
            self._reject(identity, f"this server has no model '{hello.model}' (it serves {', '.join(self.models)}); "
                                   f"start it with --model {hello.model}", "unknown_model")
            return
        if self._client is not None and self._client != identity:
            self.takeovers += 1
            log.info("client %s takes over from client %s", identity.hex(), self._client.hex())
            self._send(self._client, P.Error(f"another performer ({hello.client}) took over this server", "taken_over"))
        self._client, self._heard = identity, time.monotonic()
        self._sent_serial = self._acked = 0
        with self._mail_lock:
            self._mailbox.clear()
        s = self.session
        dreaming = [d for d in DECK_NAMES if self.deck_engines(d)]
        resumed = s is not None and s.id == hello.session and bool(dreaming)
        if resumed:
            self._switch(DECK_NAMES[0], hello.model)
            for name in dreaming:
                if not s.decks[name].paused:
                    for e in self.deck_engines(name):
                        e.resume()
        else:
            self._stop_engines()
            dreaming = []
            self.session = Session(hello.session, hello.client, hello.seed, {DECK_NAMES[0]: DeckDream(hello.model)})
        log.info("%s client %s (%s) on model %s", "resumed" if resumed else "new", identity.hex(),
                 hello.client, hello.model)
        self._send(identity, P.Welcome(f"immersions {__version__} on {platform.node()}", len(self.workers),
                                       [w.device for w in self.workers], list(self.models), self.session.model,
                                       resumed, dreaming))

    def _command(self, m: P.Message) -> None:
        if isinstance(m, (P.Heartbeat,)):
            return
        if isinstance(m, P.Ack):
            self._acked = min(self._sent_serial, max(self._acked, m.serial))
            return
        if isinstance(m, P.Bye):
            log.info("client %s said bye: dreaming paused", self._client.hex())
            self._drop_client()
            return
        # every other command changes one deck's dream: the one it names
        deck, engines = self.session.deck(m.deck), self.deck_engines(m.deck)
        if isinstance(m, P.Params):
            deck.params = Snapshot(REGISTRY, m.values)
            for e in engines:
                e.submit(deck.params)
        elif isinstance(m, (P.Select, P.Edit)):
            check_region(self._served[deck.model].taps, m.region)
            if isinstance(m, P.Select):
                deck.selection = deck.selection.add(m.region, m.keep)
                for e in engines:
                    e.select(m.region, m.keep)
            else:
                deck.selection = deck.selection.edit(m.region)
                for e in engines:
                    e.edit(m.region)
        elif isinstance(m, P.SetStart):
            deck.start = np.array(m.clip, np.float32)
            if engines:
                for e in engines:
                    e.set_start(deck.start)
            else:
                self._start_engines(m.deck)
        elif isinstance(m, P.SwitchModel):
            if m.name not in self.models:
                raise ImmersionsError(f"this server has no model '{m.name}' (it serves {', '.join(self.models)})")
            self._switch(m.deck, m.name)
        elif isinstance(m, (P.Pause, P.Resume)):
            deck.paused = isinstance(m, P.Pause)
            for e in engines:
                e.pause() if deck.paused else e.resume()

    def _switch(self, name: str, model: str) -> None:
        """Deck `name` dreams on `model` from its engines' next step (nothing to do if it does)."""
        deck = self.session.deck(name)
        if deck.model == model:
            return
        deck.model = model
        taps = len(self._served[model].taps)
        if not all(r.tap < taps for r in deck.selection.regions):  # as the engine does
            deck.selection = Selection()
        for w in self.workers:
            if name in w.engines:
                w.engines[name].switch_model(w.models[model], w.stats[model])

    def _drop_client(self) -> None:
        self._client = None
        for w in self.workers:
            for engine in w.engines.values():
                engine.pause()

    # -- workers ----------------------------------------------------------------------------------

    def _start_engines(self, name: str) -> None:
        """Deck `name`'s engines, one per worker, from its start clip (the first one it was sent)."""
        s, deck = self.session, self.session.decks[name]
        offset = DECK_NAMES.index(name) * len(self.workers)
        for w in self.workers:
            engine = DreamEngine(w.models[deck.model], w.stats[deck.model], deck.start, deck.params, device=w.device,
                                 seed=(s.seed + w.index + offset) % 2**31, copies=self.copies,
                                 on_frame=functools.partial(self._on_frame, self._generation, w.index, name),
                                 turns=w.turns)
            for i, region in enumerate(deck.selection.regions):
                engine.select(region, keep=i > 0)
            engine.start()
            if deck.paused:
                engine.pause()
            w.engines[name] = engine
        log.info("deck %s dreaming on %d worker%s from a %.1f-s start clip", name, len(self.workers),
                 "s" if len(self.workers) != 1 else "", len(deck.start) / self._served[deck.model].sample_rate)

    def _stop_engines(self) -> None:
        self._generation += 1  # frames still on their way from the old engines are dropped
        engines = [e for w in self.workers for e in w.engines.values()]
        stoppers = [threading.Thread(target=e.stop) for e in engines]  # each finishes its step: in parallel
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        for w in self.workers:
            w.engines.clear()

    def _on_frame(self, generation: int, worker: int, deck: str, frame: DreamFrame) -> None:
        """(a dream thread) Newest wins, for each deck: its frame still waiting is replaced."""
        if generation != self._generation:
            return
        with self._mail_lock:
            if deck in self._mailbox:
                self.frames_dropped += 1
            self._mailbox[deck] = (next(self._arrivals), worker, frame)

    def _send_frame(self) -> None:
        if self._client is None or self._sent_serial - self._acked >= CREDIT or not self._mailbox:
            return
        if not self._socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
            return  # no peer's queue has room (MANDATORY): building the frame now would be wasted
        with self._mail_lock:  # the deck whose frame waited longest goes first
            deck = min(self._mailbox, key=lambda d: self._mailbox[d][0])
            mail = self._mailbox.pop(deck)
        _, worker, frame = mail
        outcome = self._send(self._client, P.frame_message(frame, worker, self._sent_serial + 1, deck))
        if outcome == "busy":
            with self._mail_lock:  # keep the frame for the next try unless a newer one came
                self._mailbox.setdefault(deck, mail)
        if outcome != "sent":  # an unsent frame takes no serial and no credit
            return
        self._sent_serial += 1
        self.frames_sent += 1
        self.deck_frames[deck] = self.deck_frames.get(deck, 0) + 1
        self.workers[worker].frames += 1

    # -- for tests and the bench ----------------------------------------------------------------

    def deck_engines(self, deck: str) -> list[DreamEngine]:
        """Deck `deck`'s engines, one per worker (none before its start clip came)."""
        return [w.engines[deck] for w in self.workers if deck in w.engines]

    @property
    def engines(self) -> list[DreamEngine]:
        """Deck A's engines (the only deck of a performer who never made deck B)."""
        return self.deck_engines(DECK_NAMES[0])
