"""The wire format of remote dreaming: versioned, schema'd messages in msgpack with raw
array buffers. Nothing is ever pickled: a message is data, never code.

One message is one ZeroMQ multipart message:

    part 0    msgpack map {"v": PROTOCOL_VERSION, "type": "frame", <fields>,
                           "arrays": [[name, dtype, shape], ...]}
    part 1..  one raw little-endian buffer per entry of "arrays", in that order

`decode` checks, in this order, and raises `ProtocolError` with a one-line reason at the
first problem: the number of parts; the total size against the largest message there is;
the header's size; the header itself (unpacked with msgpack's own length limits); the
protocol version (`VersionMismatch` names both); the type, and whether it may travel in
this direction; the type's own size limit (commands are small, only frames and start clips
may be large) -- all before any payload is looked at; then every field against its type
and every array's dtype (an allow-list, and the one the field expects) and shape (against
its byte length). The sockets also set ZMQ_MAXMSGSIZE, so an oversized part never even
reaches this code.

Frames (server -> client), for the default model (20 992 nodes x 64 frames, a 4-s loop at
16 kHz) about 1.78 MB:
- clip: float32, exactly as dreamed. The clip is what the audience hears; int16 would add
  a -96 dBFS noise floor under quiet, EQ'd loops and would not be the clip that was
  dreamed. It costs 128 kB more per frame than int16 (7 %), and stays in budget.
- activations: uint8, quantized per node row between the row's min and max, with the
  row's min and step as float32 (error <= step / 2 = range / 510). The picture only
  needs brightness; float16 would be twice the size.
- selection: packed bits; scalogram (the overlay's little image): uint8 as it is.

Decks (version 3): every message that changes one deck's dream (params, select, edit,
set_start, switch_model, pause, resume) and every frame names its deck ("A" or "B"); the
server keeps a dream per deck and the client plays each frame on the deck it names.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import PurePath
from typing import Callable, ClassVar, Sequence

import msgpack
import numpy as np

from immersions.frames import DreamFrame
from immersions.registry import DECK_NAMES
from immersions.selection import Region
from immersions.errors import ImmersionsError

PROTOCOL_VERSION = 3  # 2: regions carry a weight (negative quiets), frames the quieted neurons; 3: the deck

FRAME_LIMIT = 8 * 2**20  # frames and start clips (a 32-s loop at 44.1 kHz is 5.6 MB of float32)
COMMAND_LIMIT = 16 * 2**10  # everything else: parameters (~1.5 kB today), selections, hello, heartbeats
HEADER_LIMIT = 64 * 2**10  # part 0 of any message
MAX_PARTS = 8
SOCKET_MAX_PART = FRAME_LIMIT  # ZMQ_MAXMSGSIZE: a peer sending a bigger part is disconnected

# the allow-list: wire name -> little-endian dtype
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "uint8": np.dtype("u1"),
          "int16": np.dtype("<i2")}
_WIRE_NAME = {dt: name for name, dt in DTYPES.items()}


class ProtocolError(ImmersionsError):
    """A message that breaks the protocol; the text is the one-line reason."""


class VersionMismatch(ProtocolError):
    def __init__(self, theirs: object):
        self.theirs = theirs
        super().__init__(f"protocol version {theirs!r}, this side speaks {PROTOCOL_VERSION}")


# -- field checks: each takes the decoded value and returns it typed, or raises ----------------

Check = Callable[[str, object], object]


def _text(limit: int = 256) -> Check:
    def check(name, v):
        if not isinstance(v, str) or len(v) > limit:
            raise ProtocolError(f"field '{name}' must be text of at most {limit} characters")
        return v
    return check


def _integer(lo: int = -2**63, hi: int = 2**63 - 1) -> Check:
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ProtocolError(f"field '{name}' must be a whole number in {lo} .. {hi}")
        return v
    return check


def _number(finite: bool = True) -> Check:
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (finite and not math.isfinite(v)):
            raise ProtocolError(f"field '{name}' must be a {'finite ' if finite else ''}number")
        return float(v)
    return check


def _flag(name, v):
    if not isinstance(v, bool):
        raise ProtocolError(f"field '{name}' must be true or false")
    return v


def _texts(items: int = 64, limit: int = 256) -> Check:
    def check(name, v):
        if not isinstance(v, list) or len(v) > items or not all(isinstance(s, str) and len(s) <= limit for s in v):
            raise ProtocolError(f"field '{name}' must be a list of at most {items} texts")
        return list(v)
    return check


def _pair(name, v):
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        raise ProtocolError(f"field '{name}' must be a (position, span) pair of finite numbers")
    return (float(v[0]), float(v[1]))


def _deck(name, v):
    if not isinstance(v, str) or v not in DECK_NAMES:
        raise ProtocolError(f"field '{name}' must name a deck: {' or '.join(DECK_NAMES)}")
    return v


def _deck_list(name, v):
    if not isinstance(v, list) or not all(isinstance(d, str) and d in DECK_NAMES for d in v):
        raise ProtocolError(f"field '{name}' must be a list of decks ({', '.join(DECK_NAMES)})")
    return list(v)


DECK = {"deck": _deck}  # the field of every message that changes or carries one deck's dream


def _values(name, v):
    """A parameter snapshot's values: names to plain scalars (the registry validates them)."""
    if not isinstance(v, dict) or len(v) > 512:
        raise ProtocolError(f"field '{name}' must be a map of at most 512 parameters")
    for key, value in v.items():
        if not isinstance(key, str) or len(key) > 64:
            raise ProtocolError(f"field '{name}' has a parameter name that is not short text")
        if not isinstance(value, (bool, int, float, str)) or (isinstance(value, str) and len(value) > 256):
            raise ProtocolError(f"parameter '{key}' must be a number, a flag or short text")
    return dict(v)


# -- messages -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""
    LIMIT: ClassVar[int] = COMMAND_LIMIT
    FIELDS: ClassVar[dict[str, Check]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ()  # fields a message must carry although they have a default here
    ARRAYS: ClassVar[dict[str, tuple[str, int]]] = {}  # name -> (wire dtype, ndim)

    def validate(self) -> None:
        """Checks across fields (shapes that must agree); raises ProtocolError."""


def _region_fields() -> dict[str, Check]:
    return {"tap": _integer(0, 4096), "channel": _pair, "pitch": _pair, "time": _pair, "weight": _number()}


# client -> server

@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    FIELDS: ClassVar[dict[str, Check]] = {"model": _text(), "client": _text(), "session": _text(64),
                                          "seed": _integer(0, 2**31 - 1)}
    model: str
    client: str
    session: str  # the same for every reconnection of one RemoteEngine: the server resumes it
    seed: int = 0


@dataclass(frozen=True)
class Params(Message):
    TYPE: ClassVar[str] = "params"
    FIELDS: ClassVar[dict[str, Check]] = {"values": _values, **DECK}
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    values: dict
    deck: str = "A"


@dataclass(frozen=True)
class Select(Message):
    TYPE: ClassVar[str] = "select"
    FIELDS: ClassVar[dict[str, Check]] = {**_region_fields(), "keep": _flag, **DECK}
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    tap: int
    channel: tuple[float, float]
    pitch: tuple[float, float]
    time: tuple[float, float]
    keep: bool = False
    weight: float = 1.0  # negative: the region is kept quiet
    deck: str = "A"

    @property
    def region(self) -> Region:
        return _region(self)


@dataclass(frozen=True)
class Edit(Message):
    TYPE: ClassVar[str] = "edit"
    FIELDS: ClassVar[dict[str, Check]] = {**_region_fields(), **DECK}
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    tap: int
    channel: tuple[float, float]
    pitch: tuple[float, float]
    time: tuple[float, float]
    weight: float = 1.0
    deck: str = "A"

    @property
    def region(self) -> Region:
        return _region(self)


def _region(m) -> Region:
    try:
        return Region(m.tap, m.channel, m.pitch, m.time, m.weight)
    except ImmersionsError as err:  # a weight of 0 or beyond the range: the message is refused
        raise ProtocolError(str(err)) from None


def select_message(region: Region, keep: bool, deck: str = "A") -> Select:
    return Select(region.tap, tuple(region.channel), tuple(region.pitch), tuple(region.time), bool(keep),
                  float(region.weight), deck)


def edit_message(region: Region, deck: str = "A") -> Edit:
    return Edit(region.tap, tuple(region.channel), tuple(region.pitch), tuple(region.time), float(region.weight),
                deck)


@dataclass(frozen=True, eq=False)
class SetStart(Message):
    TYPE: ClassVar[str] = "set_start"
    LIMIT: ClassVar[int] = FRAME_LIMIT
    FIELDS: ClassVar[dict[str, Check]] = DECK
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    ARRAYS: ClassVar[dict[str, tuple[str, int]]] = {"clip": ("float32", 1)}
    clip: np.ndarray
    deck: str = "A"

    def validate(self) -> None:
        if len(self.clip) == 0:
            raise ProtocolError("the start clip is empty")


@dataclass(frozen=True)
class SwitchModel(Message):
    TYPE: ClassVar[str] = "switch_model"
    FIELDS: ClassVar[dict[str, Check]] = {"name": _text(), **DECK}
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    name: str
    deck: str = "A"


@dataclass(frozen=True)
class Ack(Message):
    """The client has the frame `serial`: the server may send more (at most CREDIT unacked)."""
    TYPE: ClassVar[str] = "ack"
    FIELDS: ClassVar[dict[str, Check]] = {"serial": _integer(0)}
    serial: int


@dataclass(frozen=True)
class Pause(Message):
    """The deck holds its loop (the server rests its engines)."""
    TYPE: ClassVar[str] = "pause"
    FIELDS: ClassVar[dict[str, Check]] = DECK
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    deck: str = "A"


@dataclass(frozen=True)
class Resume(Message):
    TYPE: ClassVar[str] = "resume"
    FIELDS: ClassVar[dict[str, Check]] = DECK
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    deck: str = "A"


@dataclass(frozen=True)
class Bye(Message):
    TYPE: ClassVar[str] = "bye"


@dataclass(frozen=True)
class Heartbeat(Message):
    """Both ways, every second: each side notices a dead link within a few."""
    TYPE: ClassVar[str] = "heartbeat"


# server -> client

@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    FIELDS: ClassVar[dict[str, Check]] = {"server": _text(), "workers": _integer(0, 1024),
                                          "devices": _texts(1024), "models": _texts(), "model": _text(),
                                          "resumed": _flag, "decks": _deck_list}
    REQUIRED: ClassVar[tuple[str, ...]] = ("decks",)
    server: str
    workers: int
    devices: list
    models: list
    model: str
    resumed: bool  # the server still dreams this session's loops: their start clips need not be re-sent
    decks: list = field(default_factory=list)  # the decks whose loops it dreams (resumed: the others need theirs)


@dataclass(frozen=True)
class Refusal(Message):
    """The server will not talk to this client at all (another protocol version)."""
    TYPE: ClassVar[str] = "refusal"
    FIELDS: ClassVar[dict[str, Check]] = {"reason": _text(1024), "server_version": _integer()}
    reason: str
    server_version: int = PROTOCOL_VERSION


ERROR_CODES = ("rejected", "unknown_model", "taken_over", "not_ready")


@dataclass(frozen=True)
class Error(Message):
    TYPE: ClassVar[str] = "error"
    FIELDS: ClassVar[dict[str, Check]] = {"message": _text(1024), "code": _text(32)}
    message: str
    code: str = "rejected"  # one of ERROR_CODES


@dataclass(frozen=True, eq=False)
class Frame(Message):
    """A DreamFrame on the wire (see the module docstring for the encoding)."""
    TYPE: ClassVar[str] = "frame"
    LIMIT: ClassVar[int] = FRAME_LIMIT
    FIELDS: ClassVar[dict[str, Check]] = {
        "serial": _integer(0), "worker": _integer(0, 4096), "sample_rate": _integer(1, 10**6),
        "objective": _number(finite=False), "step": _integer(0), "steps_per_second": _number(),
        "nan_resets": _integer(0), "model": _text(), "nodes": _integer(0, 2**24), **DECK}
    REQUIRED: ClassVar[tuple[str, ...]] = ("deck",)
    ARRAYS: ClassVar[dict[str, tuple[str, int]]] = {
        "clip": ("float32", 1), "act_q": ("uint8", 2), "act_lo": ("float32", 1), "act_step": ("float32", 1),
        "selection": ("uint8", 1), "scalogram": ("uint8", 2), "quieted": ("uint8", 1)}
    serial: int
    worker: int
    sample_rate: int
    objective: float
    step: int
    steps_per_second: float
    nan_resets: int
    model: str
    nodes: int
    clip: np.ndarray
    act_q: np.ndarray
    act_lo: np.ndarray
    act_step: np.ndarray
    selection: np.ndarray
    scalogram: np.ndarray
    quieted: np.ndarray  # packed bits: the selected neurons that are kept quiet
    deck: str = "A"  # the deck that dreamed it: the client plays it there

    def validate(self) -> None:
        n = self.nodes
        if self.act_q.shape[0] != n or self.act_lo.shape != (n,) or self.act_step.shape != (n,):
            raise ProtocolError(f"frame activations do not match its {n} nodes")
        if self.selection.shape != ((n + 7) // 8,) or self.quieted.shape != ((n + 7) // 8,):
            raise ProtocolError(f"frame selection is not {n} packed bits")
        if len(self.clip) == 0:
            raise ProtocolError("frame clip is empty")

    def to_dream_frame(self, serial: int, model_name: str | None = None) -> "RemoteFrame":
        """The DreamFrame the engine published, activations back to float16. `model_name`:
        what this side calls the model (a DreamFrame names it by its local folder)."""
        activations = dequantize_rows(self.act_q, self.act_lo, self.act_step).astype(np.float16)
        selection = np.unpackbits(self.selection, count=self.nodes).astype(bool)
        quieted = np.unpackbits(self.quieted, count=self.nodes).astype(bool)
        return RemoteFrame(serial, self.clip.copy(), self.sample_rate, activations, selection, self.objective,
                           self.step, self.steps_per_second, self.nan_resets, self.scalogram.copy(),
                           model_name or self.model, quieted=quieted, worker=self.worker, server_serial=self.serial,
                           deck=self.deck)


@dataclass(frozen=True)
class RemoteFrame(DreamFrame):
    """A DreamFrame that came over the network: which worker dreamed it, for which deck, and its
    server serial (`serial` is the client's own, counting up across reconnections)."""
    worker: int = 0
    server_serial: int = 0
    deck: str = "A"


def quantize_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[rows, cols] -> uint8 codes, each row's min and step (float32): a = lo + q * step."""
    a = np.nan_to_num(np.asarray(a, np.float32), nan=0.0, posinf=65504.0, neginf=-65504.0)
    lo = a.min(axis=1)
    step = (a.max(axis=1) - lo) / np.float32(255)
    inverse = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    q = np.rint((a - lo[:, None]) * inverse[:, None])
    return np.clip(q, 0, 255).astype(np.uint8), lo, step.astype(np.float32)


def dequantize_rows(q: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    return lo[:, None] + q.astype(np.float32) * step[:, None]


def frame_message(frame: DreamFrame, worker: int = 0, serial: int | None = None, deck: str = "A") -> Frame:
    """On the wire the model is named by its folder's name, as in hello and switch_model
    (a DreamFrame holds the server's whole path, which means nothing on the laptop)."""
    q, lo, step = quantize_rows(frame.activations)
    selection = np.asarray(frame.selection, bool)
    quieted = np.zeros_like(selection) if frame.quieted is None else np.asarray(frame.quieted, bool)
    return Frame(int(frame.serial if serial is None else serial), int(worker), int(frame.sample_rate),
                 float(frame.objective), int(frame.step), float(frame.steps_per_second), int(frame.nan_resets),
                 PurePath(str(frame.model_name)).name, int(len(selection)), np.asarray(frame.clip, np.float32), q,
                 lo, step, np.packbits(selection), np.asarray(frame.scalogram, np.uint8), np.packbits(quieted), deck)


MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (
    Hello, Params, Select, Edit, SetStart, SwitchModel, Ack, Pause, Resume, Bye, Heartbeat,
    Welcome, Refusal, Error, Frame)}
FROM_CLIENT = frozenset({"hello", "params", "select", "edit", "set_start", "switch_model", "ack", "pause",
                         "resume", "bye", "heartbeat"})
FROM_SERVER = frozenset({"welcome", "refusal", "error", "frame", "heartbeat"})
LARGEST = max(m.LIMIT for m in MESSAGES.values())


# -- encode / decode ----------------------------------------------------------------------------

def encode(message: Message) -> list:
    """The message as multipart parts: a msgpack header, then the arrays (zero-copy buffers)."""
    header: dict = {"v": PROTOCOL_VERSION, "type": message.TYPE}
    for name in message.FIELDS:
        value = getattr(message, name)
        header[name] = list(value) if isinstance(value, tuple) else value
    parts: list = [None]
    if message.ARRAYS:
        header["arrays"] = []
        for name, (wire, ndim) in message.ARRAYS.items():
            array = np.ascontiguousarray(getattr(message, name), dtype=DTYPES[wire])
            if array.ndim != ndim:
                raise ProtocolError(f"array '{name}' must have {ndim} dimensions, not {array.ndim}")
            header["arrays"].append([name, wire, list(array.shape)])
            parts.append(array)
    parts[0] = msgpack.packb(header, use_bin_type=True)
    if len(parts[0]) > HEADER_LIMIT:
        raise ProtocolError(f"{message.TYPE} header of {len(parts[0])} bytes exceeds {HEADER_LIMIT}")
    size = message_bytes(parts)
    if size > message.LIMIT:
        raise ProtocolError(f"{message.TYPE} message of {size} bytes exceeds its limit of {message.LIMIT} bytes")
    return parts


def _view(part) -> memoryview:
    view = part.buffer if hasattr(part, "buffer") else memoryview(part)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def message_bytes(parts: Sequence) -> int:
    return sum(_view(p).nbytes for p in parts)


def decode(parts: Sequence, allowed: frozenset[str] | None = None) -> Message:
    """Parts as received (bytes, memoryviews or zmq Frames) -> a Message, or ProtocolError.
    `allowed`: the message types that may arrive in this direction (FROM_CLIENT, FROM_SERVER)."""
    if not 1 <= len(parts) <= MAX_PARTS:
        raise ProtocolError(f"message of {len(parts)} parts (1 .. {MAX_PARTS} allowed)")
    views = [_view(p) for p in parts]
    size = sum(v.nbytes for v in views)
    if size > LARGEST:
        raise ProtocolError(f"message of {size} bytes exceeds the largest allowed ({LARGEST} bytes)")
    if views[0].nbytes > HEADER_LIMIT:
        raise ProtocolError(f"header of {views[0].nbytes} bytes exceeds {HEADER_LIMIT} bytes")
    try:
        header = msgpack.unpackb(views[0], raw=False, strict_map_key=True, max_str_len=HEADER_LIMIT,
                                 max_bin_len=0, max_array_len=4096, max_map_len=1024, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise ProtocolError(f"header is not valid msgpack ({type(err).__name__}: {err})") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a msgpack map")
    version, kind = header.get("v"), header.get("type")
    if version is None:
        raise ProtocolError("message carries no protocol version ('v')")
    if version != PROTOCOL_VERSION:
        if kind == "refusal" and isinstance(header.get("reason"), str):  # readable across versions, on purpose
            return Refusal(header["reason"][:1024], version if isinstance(version, int) else -1)
        raise VersionMismatch(version)
    if not isinstance(kind, str) or kind not in MESSAGES:
        raise ProtocolError(f"unknown message type {kind!r}")
    if allowed is not None and kind not in allowed:
        raise ProtocolError(f"a '{kind}' message may not travel in this direction")
    cls = MESSAGES[kind]
    if size > cls.LIMIT:
        raise ProtocolError(f"{kind} message of {size} bytes exceeds its limit of {cls.LIMIT} bytes")
    values: dict = {}
    unexpected = set(header) - {"v", "type", "arrays"} - set(cls.FIELDS)
    if unexpected:
        raise ProtocolError(f"{kind} message has unexpected field '{sorted(unexpected)[0]}'")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    required.update(cls.REQUIRED)
    for name, check in cls.FIELDS.items():
        if name not in header:
            if name in required:
                raise ProtocolError(f"{kind} message lacks field '{name}'")
            continue
        values[name] = check(name, header[name])
    values.update(_arrays(kind, cls, header.get("arrays", []), views[1:]))
    message = cls(**values)
    message.validate()
    return message


def _arrays(kind: str, cls: type[Message], specs, buffers: list[memoryview]) -> dict[str, np.ndarray]:
    if not isinstance(specs, list) or len(specs) != len(buffers) or len(specs) != len(cls.ARRAYS):
        raise ProtocolError(f"{kind} message needs {len(cls.ARRAYS)} arrays, got {len(buffers)} buffers "
                            f"described by {len(specs) if isinstance(specs, list) else 'no'} entries")
    out = {}
    for spec, buffer, (name, (wire, ndim)) in zip(specs, buffers, cls.ARRAYS.items()):
        if not (isinstance(spec, list) and len(spec) == 3 and spec[0] == name):
            raise ProtocolError(f"{kind} message: expected array '{name}' here")
        _, dtype_name, shape = spec
        if dtype_name not in DTYPES:
            raise ProtocolError(f"array '{name}': dtype {dtype_name!r} is not allowed ({', '.join(DTYPES)})")
        if dtype_name != wire:
            raise ProtocolError(f"array '{name}' must be {wire}, not {dtype_name}")
        if (not isinstance(shape, list) or len(shape) != ndim
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in shape)):
            raise ProtocolError(f"array '{name}' needs a shape of {ndim} non-negative whole numbers")
        dtype = DTYPES[dtype_name]
        expected = math.prod(shape) * dtype.itemsize
        if expected != buffer.nbytes:
            raise ProtocolError(f"array '{name}' of shape {tuple(shape)} needs {expected} bytes, got {buffer.nbytes}")
        out[name] = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return out


__all__ = ["PROTOCOL_VERSION", "FRAME_LIMIT", "COMMAND_LIMIT", "ProtocolError", "VersionMismatch", "encode",
           "decode", "Hello", "Params", "Select", "Edit", "SetStart", "SwitchModel", "Ack", "Pause", "Resume",
           "Bye", "Heartbeat", "Welcome", "Refusal", "Error", "Frame", "RemoteFrame", "frame_message",
           "select_message", "edit_message", "quantize_rows", "dequantize_rows", "FROM_CLIENT", "FROM_SERVER"]
