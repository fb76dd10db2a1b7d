"""The miniaudio shell every real-time device of ours shares: the loop player's output, a cue
output, the capture input.

- `backends(name)`: a backend's name -> miniaudio's backend list (None: miniaudio's order);
- `list_devices` / `list_inputs`: the names of the outputs and of the inputs (index = place
  in the list), `devices_report` (`immersions devices`) and `is_null_device`;
- `find_output` / `find_input`: a device asked for by index or by (part of) its name ->
  (id, name), through `pick_device`;
- `open_playback` / `open_null_playback`: a float32 playback device (not started);
- `quiet_alsa()`: ALSA's own error lines silenced while a device is probed or opened;
  `close_device`: close one that may be dead, never freezing the show; `why(err)`: one line
  for a miniaudio error;
- `silent_for`: how long a started device's callback has not run, once that means it is dead
  (STALL_S): the player's output and a cue output both judge their device by it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
import time
from typing import Callable

import miniaudio

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

CLOSE_S = 2.0  # how long a reopen waits for a dead device to close before leaving it behind
STALL_S = 1.5  # a started device whose callback has not run for this long is dead (check() acts)
RETRY_S = 30.0  # a device that is gone (or the output on the NULL fallback) is looked for this often
NULL_DEVICES = ("NULL Playback Device", "NULL Capture Device")  # miniaudio's null backend

_ALSA_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
_alsa_quiet = _ALSA_HANDLER(lambda *args: None)


def why(err: BaseException) -> str:
    """One line for a miniaudio or user error: MiniaudioError's args are (message, code)."""
    if isinstance(err, miniaudio.MiniaudioError):
        return ", code ".join(str(a) for a in err.args) or type(err).__name__
    return str(err) or type(err).__name__


@contextlib.contextmanager
def quiet_alsa():
    """ALSA prints its own errors to stderr when there is no card; silence them while we
    probe, so the user sees our one-line warning instead of thirty lines of ALSA."""
    lib = None
    name = ctypes.util.find_library("asound")
    if name:
        try:
            lib = ctypes.CDLL(name)
            lib.snd_lib_error_set_handler(_alsa_quiet)
        except (OSError, AttributeError):
            lib = None
    try:
        yield
    finally:
        if lib is not None:
            lib.snd_lib_error_set_handler(None)


def close_device(device: miniaudio.AbstractDevice) -> None:
    """Close a device that may be dead, from a helper thread: a driver that hangs in its close
    costs one device left behind (logged), never a frozen show."""
    def close() -> None:
        try:
            device.close()
        except Exception as err:  # a dead device may fail to stop; it is being dropped anyway
            log.debug("closing a dead audio device: %s", err)

    closer = threading.Thread(target=close, name="immersions-audio-close", daemon=True)
    closer.start()
    closer.join(CLOSE_S)
    if closer.is_alive():
        log.warning("audio: the old output did not close within %.0f s; it is left behind", CLOSE_S)


def silent_for(last_callback: Callable[[], float], now: float, period_ms: float) -> float | None:
    """Seconds a started device's callback has not run at `now`, when that is more than STALL_S
    and it stays so over a short grace (a callback only waiting for the GIL runs then); None
    while it runs. last_callback(): the perf_counter time of its last callback (or of the start)."""
    last = last_callback()
    if now - last <= STALL_S:
        return None
    time.sleep(max(0.05, 2.0 * period_ms / 1000.0))
    return None if last_callback() != last else now - last


# -- backends and the lists of devices -----------------------------------------------------------

def backends(name: str | None) -> list[miniaudio.Backend] | None:
    """miniaudio's backend list for one backend's name (None: miniaudio's own order); an
    unknown name is one line naming the choices."""
    if name is None:
        return None
    key = str(name).strip().upper()
    if key not in miniaudio.Backend.__members__:
        choices = ", ".join(b.lower() for b in miniaudio.Backend.__members__)
        raise ImmersionsError(f"unknown audio backend '{name}': choose one of {choices}")
    return [miniaudio.Backend[key]]


def playbacks(backend: str | None = None) -> list[dict]:
    """miniaudio's playback devices (dicts with "name" and "id"); raises MiniaudioError."""
    with quiet_alsa():
        return miniaudio.Devices(backends=backends(backend)).get_playbacks()


def captures(backend: str | None = None) -> list[dict]:
    """miniaudio's capture devices (dicts with "name" and "id"); raises MiniaudioError."""
    with quiet_alsa():
        return miniaudio.Devices(backends=backends(backend)).get_captures()


def list_devices(backend: str | None = None) -> list[str]:
    """Names of the playback devices (index = position in this list); [] when none can be listed."""
    try:
        return [d["name"] for d in playbacks(backend)]
    except miniaudio.MiniaudioError as err:
        log.debug("cannot list audio devices: %s", err)
        return []


def list_inputs(backend: str | None = None) -> list[str]:
    """Names of the capture devices (index = position in this list); [] when none can be listed."""
    try:
        return [d["name"] for d in captures(backend)]
    except miniaudio.MiniaudioError as err:
        log.debug("cannot list audio inputs: %s", err)
        return []


def is_null_device(name: str) -> bool:
    """miniaudio's NULL device, or ALSA's "null" plugin ("Discard all samples ..."): no sound card."""
    return name in NULL_DEVICES or name.startswith("Discard all samples")


def devices_report(backend: str | None = None) -> list[str]:
    """`immersions devices`: the outputs under their heading, then the inputs under theirs, and
    one line when the only devices are null ones (sound goes nowhere, input is silence)."""
    outputs, inputs = list_devices(backend), list_inputs(backend)
    lines = ["outputs (perform --audio-device):" if outputs
             else "no audio outputs found (immersions perform plays silently and says so)"]
    lines += [f"{i}: {name}" for i, name in enumerate(outputs)]
    lines.append("inputs (perform --input):" if inputs
                 else "no audio inputs found (perform --input warns and runs without)")
    lines += [f"{i}: {name}" for i, name in enumerate(inputs)]
    if outputs + inputs and all(is_null_device(name) for name in outputs + inputs):
        if str(backend).strip().lower() == "null":
            lines.append("only miniaudio's NULL device, as --audio-backend null asks: what is played goes nowhere "
                         "and the input is silence")
        else:
            lines.append("only a null device here, no sound card: what is played goes nowhere and the input is "
                         "silence (perform and install run, silently; check the sound card, or try --audio-backend)")
    return lines


# -- finding and opening a device -------------------------------------------------------------------

def pick_device(devices: list[dict], device: int | str, kind: str):
    """(id, name) of the device asked for by index or by (part of) its name; an exact name wins."""
    names = [d["name"] for d in devices]
    if isinstance(device, int) or str(device).strip().isdigit():
        index = int(device)
        if 0 <= index < len(devices):
            return devices[index]["id"], names[index]
    else:
        wanted = str(device).strip().lower()
        exact = [i for i, name in enumerate(names) if name.lower() == wanted]
        matches = exact or [i for i, name in enumerate(names) if wanted in name.lower()]
        if matches:
            return devices[matches[0]]["id"], names[matches[0]]
    listing = "; ".join(f"{i}: {name}" for i, name in enumerate(names)) or "none found"
    raise ImmersionsError(f"no audio {kind} '{device}'; pick an index or part of a name from: {listing}")


def find_output(device: int | str, backend: str | None):
    """(id, name) of an output by index or (part of) its name; ImmersionsError naming the outputs there are."""
    try:
        devices = playbacks(backend)
    except miniaudio.MiniaudioError as err:
        raise ImmersionsError(f"cannot list audio devices to find '{device}' ({err}); "
                              "leave the device unset to use the default output") from err
    return pick_device(devices, device, "output")


def find_input(device: int | str, backend: str | None):
    """(id, name) of an input by index or (part of) its name; ImmersionsError naming the inputs there are."""
    try:
        devices = captures(backend)
    except miniaudio.MiniaudioError as err:
        raise ImmersionsError(f"cannot list audio inputs to find '{device}' ({why(err)})") from err
    return pick_device(devices, device, "input")


def open_playback(device_id, channels: int, sample_rate: int, period_ms: int, periods: int,
                  backend_list: list[miniaudio.Backend] | None) -> miniaudio.PlaybackDevice:
    """A float32 playback device, not started (sample_rate 0: the device's own); raises MiniaudioError."""
    with quiet_alsa():
        return miniaudio.PlaybackDevice(miniaudio.SampleFormat.FLOAT32, channels, sample_rate, period_ms,
                                        device_id, periods, backend_list, app_name="immersions")


def callback_stream(callback):
    """miniaudio's stream generator around `callback(frames) -> bytes` (prime it with next())."""
    n = yield b""
    while True:
        n = yield callback(n)


def open_null_playback(channels: int, sample_rate: int, period_ms: int, periods: int) -> miniaudio.PlaybackDevice:
    """A float32 playback device on miniaudio's NULL backend (no sound card needed), not started."""
    return miniaudio.PlaybackDevice(miniaudio.SampleFormat.FLOAT32, channels, sample_rate, period_ms, None,
                                    periods, [miniaudio.Backend.NULL], app_name="immersions")
