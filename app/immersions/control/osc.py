"""OSC control: every registry parameter and hub action as an OSC address, over UDP.

Addresses (all under /immersions):

    /immersions/<name> <value>        set a parameter (toggles take 1/0 or true/false,
                                      choices a string, integers a whole number)
    /immersions/<name>                (no argument) query: the reply is /immersions/<name> <value>
    /immersions/state                 reply with one message per parameter
    /immersions/preset <n|name>       recall a preset; also /immersions/preset/<n>
    /immersions/preset/next, /immersions/preset/previous
    /immersions/record/start, /immersions/record/stop
    /immersions/action/<action> [arg] any hub action (see hub.ACTIONS)
    /immersions/subscribe [port]      send me every change from now on (to my port, or the
                                      given port on my host); /immersions/unsubscribe stops it

Replies and feedback leave from the server's own socket, so a client can listen on the
socket it sends from. Toggles are sent as 1/0 (not every OSC client reads T/F).

The server runs python-osc's blocking UDP server on a daemon thread: messages are handled
one at a time in arrival order, so "set, then query" from one client answers with the
value it set once the main thread has applied it. Handlers only validate and queue
(`hub.request`); the main thread applies the queue each frame. Queries read `hub.params`,
an immutable snapshot swapped by reference, which is safe from this thread. A bad value or
an unknown address is rejected in one log line (at most one a second, with a count of the
ones held back) and counted in `rejected`; the server keeps running.

It binds 127.0.0.1 unless another host is given: OSC has no authentication, so anyone
who can reach the port can play the instrument.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import build_msg
from pythonosc.osc_packet import OscPacket, ParseError
from pythonosc.osc_server import BlockingOSCUDPServer

from immersions.control.hub import ACTIONS, OSC, Change, ControlHub
from immersions.registry import CHOICE, TOGGLE, Parameter
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

PREFIX = "/immersions"
MAX_SUBSCRIBERS = 32

Address = tuple[str, int]


def osc_value(p: Parameter, value):
    """A parameter value as OSC sends it: toggles as 1/0, the rest as they are."""
    return int(value) if p.scale == TOGGLE else value


def from_osc(p: Parameter, value):
    """An OSC argument as the value `p` takes; ImmersionsError (one line) when it cannot be."""
    if isinstance(value, str) and p.scale in (TOGGLE, CHOICE):
        return p.parse(value)  # the registry's one parser: a typo is refused, never read as off
    if isinstance(value, str):
        raise ImmersionsError(f"{p.name}: expected a number, got the string {value!r}")
    return p.validate(value)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _RateLimitedLog:
    """At most one warning per `interval` seconds; the next one says how many were held back."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._last = -float("inf")
        self._held = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        more = f" (and {self._held} more rejected since the last report)" if self._held else ""
        log.warning("OSC rejected: %s%s", message, more)
        self._last, self._held = now, 0


class _Router(Dispatcher):
    """Hands every packet to the OscServer in arrival order (no pattern matching; bundle
    time tags are not waited for, so a bundle dated next year cannot stall the server)."""

    def __init__(self, owner: "OscServer"):
        super().__init__(strict_timing=False)
        self.owner = owner

    def call_handlers_for_packet(self, data: bytes, client_address: Address) -> list:
        self.owner._packet(data, client_address)
        return []


class _UDPServer(BlockingOSCUDPServer):
    def verify_request(self, request, client_address) -> bool:
        return True  # the router counts a datagram that is not OSC as rejected


class OscServer:
    """Receives OSC on `host:port` (port 0 picks a free one) and drives `hub`."""

    def __init__(self, hub: ControlHub, port: int, host: str = "127.0.0.1"):
        self.hub = hub
        self.host = host
        self.port = port
        self.registry = hub.params.registry
        self.rejected = 0  # messages refused: unknown address, bad value, not OSC
        self.received = 0  # messages handled, refused ones included
        self._server: _UDPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._subscribers: dict[Address, Address] = {}  # sender -> where its feedback goes
        self._origins: dict[str, tuple[Address, object]] = {}  # name -> (sender, value) of the last OSC set
        self._log = _RateLimitedLog()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        try:
            server = _UDPServer((self.host, self.port), _Router(self))
        except OSError as err:
            raise ImmersionsError(
                f"cannot listen for OSC on {self.host}:{self.port} ({err.strerror or err}); "
                "pick another port or stop the program using it") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="osc", daemon=True)
        self._thread.start()
        self.hub.listen(self._feedback)
        host, port = self.address
        if _is_loopback(host):
            log.info("OSC listening on %s:%d", host, port)
        else:
            log.warning("OSC listening on %s:%d — reachable from the network", host, port)

    def stop(self) -> None:
        """Stop receiving, close the socket and join the thread (the port is free afterwards)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.hub.unlisten(self._feedback)
        server.shutdown()
        if thread is not None:
            thread.join(timeout=5.0)
        with self._lock:
            self._server = None
            self._thread = None
            self._subscribers.clear()
            server.server_close()

    def __enter__(self) -> "OscServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> Address:
        """The (host, port) actually bound; the port is the real one when 0 was asked for."""
        if self._server is None:
            return self.host, self.port
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    @property
    def subscribers(self) -> list[Address]:
        with self._lock:
            return list(self._subscribers.values())

    # -- receiving (server thread) -----------------------------------------------------------------

    def _packet(self, data: bytes, client: Address) -> None:
        try:
            messages = [timed.message for timed in OscPacket(data).messages]
        except ParseError:
            self._reject(f"a datagram from {client[0]}:{client[1]} that is not OSC ({len(data)} bytes)")
            self.received += 1
            return
        for message in messages:
            self._receive(client, message.address, message.params)

    def _receive(self, client: Address, address: str, args: list) -> None:
        try:
            self._route(client, address, args)
        except ImmersionsError as err:
            self._reject(str(err))
        except Exception as err:  # whatever a client sends, the server keeps serving
            self._reject(f"{address}: {type(err).__name__}: {err}")
            log.debug("OSC message %s %r failed", address, args, exc_info=True)
        finally:
            self.received += 1  # handled (queued, answered or rejected)

    def _route(self, client: Address, address: str, args: list) -> None:
        if not address.startswith(PREFIX + "/"):
            raise ImmersionsError(f"unknown address {address} (everything lives under {PREFIX}/)")
        path = address[len(PREFIX) + 1:].strip("/").split("/")
        head, rest = path[0], path[1:]
        if head in self.registry and not rest:
            self._parameter(client, head, args)
        elif head == "state" and not rest:
            self._state(client)
        elif head == "preset":
            self._preset(address, rest, args)
        elif head == "record" and len(rest) == 1 and rest[0] in ("start", "stop"):
            self._action(f"record_{rest[0]}", args, address)
        elif head == "action" and len(rest) == 1:
            self._action(rest[0], args, address)
        elif head == "subscribe" and not rest:
            self._subscribe(client, args)
        elif head == "unsubscribe" and not rest:
            with self._lock:
                self._subscribers.pop(client, None)
        else:
            raise ImmersionsError(f"unknown address {address}")

    def _parameter(self, client: Address, name: str, args: list) -> None:
        p = self.registry[name]
        if not args:
            self._send(client, f"{PREFIX}/{name}", osc_value(p, self.hub.params[name]))
            return
        if len(args) != 1:
            raise ImmersionsError(f"{PREFIX}/{name}: expected one value, got {len(args)}")
        value = from_osc(p, args[0])
        with self._lock:
            self._origins[name] = (client, value)
        self.hub.request(name, value, OSC)

    def _state(self, client: Address) -> None:
        snapshot = self.hub.params  # one snapshot: the state is consistent
        for p in self.registry:
            self._send(client, f"{PREFIX}/{p.name}", osc_value(p, snapshot[p.name]))

    def _preset(self, address: str, rest: list[str], args: list) -> None:
        if rest == ["next"] or rest == ["previous"]:
            self._action(f"preset_{rest[0]}", args, address)
            return
        if len(rest) == 1 and rest[0].isdigit():
            if args:
                raise ImmersionsError(f"{address}: takes no argument")
            slot = int(rest[0])
        elif not rest and len(args) == 1:
            slot = args[0]
            if isinstance(slot, float) and slot.is_integer():
                slot = int(slot)
            if isinstance(slot, bool) or not isinstance(slot, (int, str)):
                raise ImmersionsError(f"{address}: expected a slot number or a preset name, got {slot!r}")
        else:
            raise ImmersionsError(f"{address}: use {PREFIX}/preset/<n> or {PREFIX}/preset <n or name>")
        if isinstance(slot, int) and slot < 1:
            raise ImmersionsError(f"{address}: preset slots start at 1, got {slot}")
        self.hub.request_action("preset", slot, OSC)

    def _action(self, action: str, args: list, address: str) -> None:
        if action not in ACTIONS and not self.hub.handles(action):
            raise ImmersionsError(f"{address}: unknown action '{action}' (known: {', '.join(sorted(ACTIONS))})")
        if len(args) > 1:
            raise ImmersionsError(f"{address}: expected at most one argument, got {len(args)}")
        argument = args[0] if args else None
        if isinstance(argument, float) and argument.is_integer():
            argument = int(argument)  # a fader or a Max number box sends 3.0 for model 3
        self.hub.request_action(action, argument, OSC)

    def _subscribe(self, client: Address, args: list) -> None:
        if len(args) > 1 or (args and (isinstance(args[0], bool) or not isinstance(args[0], int)
                                       or not 0 < args[0] < 65536)):
            raise ImmersionsError(f"{PREFIX}/subscribe: takes nothing or a port number (1 .. 65535)")
        destination = (client[0], args[0]) if args else client
        with self._lock:
            self._subscribers.pop(client, None)
            if len(self._subscribers) >= MAX_SUBSCRIBERS:
                dropped = next(iter(self._subscribers))
                del self._subscribers[dropped]
                log.info("OSC: %d subscribers at most; dropped %s:%d", MAX_SUBSCRIBERS, *dropped)
            self._subscribers[client] = destination
        log.info("OSC: %s:%d subscribed to changes", *destination)

    def _reject(self, message: str) -> None:
        with self._lock:
            self.rejected += 1
        self._log.warning(message)

    # -- sending -----------------------------------------------------------------------------------

    def _send(self, destination: Address, address: str, value) -> None:
        """Send one message from the server's socket (any thread; a UDP send is one datagram)."""
        server = self._server
        if server is None:
            return
        try:
            server.socket.sendto(build_msg(address, value).dgram, destination)
        except OSError as err:  # a client that went away must not disturb the show
            log.debug("OSC send to %s failed: %s", destination, err)

    def _feedback(self, change: Change) -> None:
        """(main thread, hub listener) Tell subscribers about an applied change."""
        if change.name not in self.registry:
            return
        with self._lock:
            subscribers = list(self._subscribers.items())
            origin = self._origins.get(change.name) if change.source == OSC else None
        if not subscribers:
            return
        value = osc_value(self.registry[change.name], change.value)
        for sender, destination in subscribers:
            if origin is not None and origin[0] == sender and origin[1] == change.value:
                continue  # that client sent this value: no echo
            self._send(destination, f"{PREFIX}/{change.name}", value)

