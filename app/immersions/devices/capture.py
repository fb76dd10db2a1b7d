"""The room's sound in: a capture device (or a file standing in for one) writing into a ring.

What happens to the input, in order:
- the capture callback copies the device's block into a preallocated buffer, downmixes it
  to mono and writes it into `InputRing`, a fixed array at the device's rate; then it
  publishes how many samples were ever written and when (a pair guarded by a sequence
  counter, as the loop player publishes its clock);
- any other thread asks the ring for a window of input, by sample index or by the
  `time.perf_counter()` moment it ended, and gets a copy, resampled to the model's rate.

The callback takes no locks, logs nothing and allocates no buffers (a test proves it with
tracemalloc, as for the loop player). miniaudio's own capture callback builds a bytearray
for every block, so `_RingCapture` replaces it with a copy into our buffer.

`FileSource` plays an audio file into the same ring at the real rate (or as fast as asked),
so tests, benchmarks and a rehearsal without a microphone take exactly the device's path.
No input device, or one that does not open: `open_sound_in` says so in one line and
returns None; everything else runs on. Finding an input by name or index, and the list of
inputs (`list_inputs`, `devices_report`), are the device shell's (devices/shell.py).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

import miniaudio
import numpy as np

from immersions.audio.io import AUDIO_EXTENSIONS, load_audio, resample
from immersions.devices.shell import backends, find_input, quiet_alsa, why
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

RING_SECONDS = 40.0  # the longest capture (8 bars at 60 BPM, 32 s) and the longest listen window fit
CHANNELS = 2  # asked of the device; miniaudio converts a mono or multichannel input to it
PERIOD_MS = 10  # capture callback period: input reaches the ring within about this long
CAPACITY = 16384  # frames per callback before the buffers have to grow


# -- the math: pure functions ----------------------------------------------------------------

def downmix_into(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The mean of the channels of an [n, channels] float32 block, written into out[:n]."""
    n, channels = block.shape
    mono = out[:n]
    np.copyto(mono, block[:, 0])
    for c in range(1, channels):
        np.add(mono, block[:, c], out=mono)
    if channels > 1:
        np.multiply(mono, 1.0 / channels, out=mono)
    return mono


def to_model_rate(samples: np.ndarray, rate_in: int, rate_out: int, length: int) -> np.ndarray:
    """Input at the device rate -> exactly `length` samples at the model's rate (band-limited)."""
    out = resample(np.asarray(samples, np.float32), int(rate_in), int(rate_out))
    if len(out) >= length:
        return np.ascontiguousarray(out[len(out) - length:])  # keep the newest end exact
    return np.concatenate([np.zeros(length - len(out), np.float32), out])


# -- the ring --------------------------------------------------------------------------------

class InputRing:
    """Mono input at the device's rate, the newest `seconds` of it. One writer (the capture
    callback, or a FileSource's thread) calls `write`; any thread reads."""

    def __init__(self, sample_rate: int, seconds: float = RING_SECONDS, channels: int = CHANNELS,
                 capacity: int = CAPACITY):
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.size = int(math.ceil(seconds * self.sample_rate))
        self._ring = np.zeros(self.size, np.float32)
        self._mono = np.zeros(capacity, np.float32)
        self._seq = 0  # odd while write() publishes (written, written_t)
        self._written = 0  # samples ever written
        self._written_t = 0.0  # time.perf_counter() when the newest sample was written
        self.blocks = 0
        self.latency = 0.0  # seconds from a sound in the room to its sample reaching the ring (device)

    def write(self, block: np.ndarray, t: float | None = None) -> None:
        """(the writer's thread) Append an [n, channels] (or mono [n]) float32 block captured up to
        time t (default: now). Copies only; allocates no buffers."""
        if block.ndim == 1:
            n = len(block)
            if n > len(self._mono):
                self._mono = np.zeros(2 * n, np.float32)  # only for a huge block, never in steady state
            mono = self._mono[:n]
            np.copyto(mono, block)
        else:
            n = block.shape[0]
            if n > len(self._mono):
                self._mono = np.zeros(2 * n, np.float32)
            mono = downmix_into(block, self._mono)
        size, start = self.size, self._written % self.size
        if n >= size:  # a block longer than the ring: only its newest part survives anyway
            mono, start = mono[n - size:], (self._written + n - size) % size
        k = min(len(mono), size - start)
        np.copyto(self._ring[start:start + k], mono[:k])
        if k < len(mono):
            np.copyto(self._ring[:len(mono) - k], mono[k:])
        when = time.perf_counter() if t is None else t
        self._seq += 1
        self._written += n
        self._written_t = when
        self._seq += 1
        self.blocks += 1

    def clock(self) -> tuple[int, float]:
        """(samples ever written, perf_counter time of the newest one): a consistent pair."""
        while True:
            seq = self._seq
            written, when = self._written, self._written_t
            if seq % 2 == 0 and seq == self._seq:
                return written, when
            time.sleep(0)

    @property
    def written(self) -> int:
        return self._written

    def index_at(self, t: float) -> int:
        """The ring index (samples ever written) of the input heard in the room at time t."""
        written, when = self.clock()
        return int(round(written + (t - when - self.latency) * self.sample_rate))

    def time_of(self, index: int) -> float:
        """The perf_counter time at which sample `index` was heard in the room (inverse of index_at)."""
        written, when = self.clock()
        return when + self.latency + (index - written) / self.sample_rate

    def read(self, end: int, n: int) -> np.ndarray:
        """A copy of samples end-n .. end-1 (ring indexes). Samples before the first write are
        silence; ImmersionsError when `end` lies in the future or the window was overwritten."""
        n, end = int(n), int(end)
        if n > self.size:
            raise ImmersionsError(f"{n / self.sample_rate:.1f} s of input asked for; the ring keeps "
                                  f"{self.size / self.sample_rate:.1f} s: ask for less")
        written = self._written
        if end > written:
            raise ImmersionsError(f"input up to sample {end} asked for, only {written} captured yet")
        out = np.zeros(n, np.float32)
        first = max(end - n, 0)
        if first < end:
            idx = np.arange(first, end) % self.size
            out[n - (end - first):] = self._ring[idx]
        if self._written - self.size > first:  # the writer lapped the window while it was copied
            raise ImmersionsError("the input window was overwritten while it was read; ask for a newer one")
        return out


# -- sources: a device, or a file standing in for one ----------------------------------------

class _RingCapture(miniaudio.CaptureDevice):
    """A miniaudio capture device whose callback copies straight into an InputRing: no
    bytearray per block (miniaudio's own callback builds one), no generator."""

    def __init__(self, ring_factory, device_id, backends, period_ms: int):
        super().__init__(miniaudio.SampleFormat.FLOAT32, CHANNELS, 0, period_ms, device_id, 0, backends,
                         app_name="immersions")
        self.sample_rate = int(self._device.sampleRate)  # 0 asked for the device's own; this is what it runs at
        self.ring: InputRing = ring_factory(self.sample_rate)
        self._buffer = np.zeros((CAPACITY, CHANNELS), np.float32)
        self._dst = miniaudio.ffi.from_buffer(self._buffer)
        self.callbacks = 0
        self.faults = 0
        self.fault: BaseException | None = None

    def _data_callback(self, device, output, input, framecount: int) -> None:
        try:
            if framecount > len(self._buffer):  # only if a device hands over a huge block
                self._buffer = np.zeros((2 * framecount, CHANNELS), np.float32)
                self._dst = miniaudio.ffi.from_buffer(self._buffer)
            miniaudio.ffi.memmove(self._dst, input, framecount * (CHANNELS * 4))
            self.ring.write(self._buffer[:framecount])
            self.callbacks += 1
        except Exception as err:  # never raise into miniaudio: the show goes on without this block
            self.faults += 1
            self.fault = err

    def start_capture(self) -> None:
        # AbstractDevice.start wants a generator; ours is never sent anything
        self.start(iter(()))


class FileSource:
    """An audio file (or samples) played into an InputRing in blocks, looping, paced to the wall
    clock (or as fast as possible with realtime=False): the capture device's path, without one."""

    def __init__(self, source: str | Path | np.ndarray, sample_rate: int = 48000, period_ms: float = PERIOD_MS,
                 realtime: bool = True, loop: bool = True, channels: int = 1, ring: InputRing | None = None):
        self.sample_rate = int(sample_rate)
        if isinstance(source, np.ndarray):
            audio, self.name = np.asarray(source, np.float32), "samples"
        else:
            audio, self.name = load_audio(source, self.sample_rate), Path(source).name
        if audio.ndim == 1:
            audio = np.repeat(audio[:, None], channels, axis=1)
        if len(audio) == 0:
            raise ImmersionsError(f"input {self.name} holds no samples")
        self.audio = np.ascontiguousarray(audio, np.float32)
        self.ring = ring or InputRing(self.sample_rate, channels=self.audio.shape[1])
        self.block = max(1, int(round(period_ms * self.sample_rate / 1000.0)))
        self.realtime, self.loop = realtime, loop
        self.position = 0  # next frame of the file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = np.zeros((self.block, self.audio.shape[1]), np.float32)

    def pump(self, frames: int) -> int:
        """Write the next `frames` frames (looping) into the ring now; frames written."""
        done = 0
        while done < frames and not (not self.loop and self.position >= len(self.audio)):
            n = min(self.block, frames - done, len(self.audio) - self.position)
            block = self._buffer[:n]
            np.copyto(block, self.audio[self.position:self.position + n])
            self.ring.write(block)
            self.position += n
            done += n
            if self.position >= len(self.audio) and self.loop:
                self.position = 0
        return done

    def start_capture(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="immersions-file-input", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        began, sent = time.perf_counter(), 0
        period = self.block / self.sample_rate
        while not self._stop.is_set():
            due = int((time.perf_counter() - began) * self.sample_rate) if self.realtime else sent + self.block
            if due > sent:
                written = self.pump(due - sent)
                sent += written
                if written == 0:
                    return  # a file played once has ended
            if self.realtime:
                self._stop.wait(period)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None


class SoundIn:
    """The room's sound: a source (capture device or FileSource) and the ring it fills.
    `window(...)` hands any thread the input of a span of time at the model's rate."""

    def __init__(self, source, name: str, backend: str):
        self.source = source
        self.ring: InputRing = source.ring
        self.sample_rate = self.ring.sample_rate
        self.name, self.backend = name, backend
        self._closed = False

    @classmethod
    def from_file(cls, source: str | Path | np.ndarray, sample_rate: int = 48000, realtime: bool = True,
                  start: bool = True, **kwargs) -> "SoundIn":
        files = FileSource(source, sample_rate, realtime=realtime, **kwargs)
        sound_in = cls(files, f"file {files.name}", "file")
        if start:
            files.start_capture()
        return sound_in

    @classmethod
    def from_device(cls, device: int | str | None = None, backend: str | None = None,
                    period_ms: int = PERIOD_MS) -> "SoundIn":
        """Open and start a capture device (None: the default input); raises ImmersionsError or
        miniaudio.MiniaudioError when it does not open."""
        device_id, name = find_input(device, backend) if device is not None else (None, "default input")
        with quiet_alsa():
            capture = _RingCapture(InputRing, device_id, backends(backend), period_ms)
        try:
            capture.start_capture()
        except miniaudio.MiniaudioError:
            capture.close()
            raise
        capture.ring.latency = period_ms / 1000.0  # the newest sample of a block was heard about a period ago
        sound_in = cls(capture, name, capture.backend)
        log.info("sound in: %s on %s at %d Hz", name, capture.backend, capture.sample_rate)
        return sound_in

    @property
    def faults(self) -> int:
        return getattr(self.source, "faults", 0)

    def window(self, seconds: float, rate: int, end: int | None = None) -> np.ndarray:
        """The `seconds` of input ending at ring index `end` (default: the newest sample),
        mono, resampled to `rate`: exactly round(seconds * rate) samples."""
        end = self.ring.written if end is None else int(end)
        raw = self.ring.read(end, int(round(seconds * self.sample_rate)))
        return to_model_rate(raw, self.sample_rate, rate, int(round(seconds * rate)))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.source.close()

    def __enter__(self) -> "SoundIn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- --input: a device, or a file --------------------------------------------------------------

def input_file(wanted: str | int | None) -> Path | None:
    """`--input` taken as a file: the path when it names one, None when it names a device.
    Anything with an audio suffix or a path separator is a file: one that does not exist is a
    typo (ImmersionsError "no such file: NAME"), not a device to look for."""
    if wanted is None or isinstance(wanted, int):
        return None
    path = Path(wanted)
    looks_like_a_file = path.suffix.lower() in AUDIO_EXTENSIONS or "/" in wanted or os.sep in wanted
    if path.is_file():
        return path
    if looks_like_a_file:
        raise ImmersionsError(f"no such file: {wanted} (--input takes an audio file, 'default', or an input's index "
                              "or part of its name from `immersions devices`)")
    return None


def open_sound_in(device: str | int | None, backend: str | None = None) -> SoundIn | None:
    """`--input DEVICE`: 'default' (or None) for the default input, an index or part of a name
    (see `immersions devices`), or an audio file played into the ring in a loop (a rehearsal
    without a microphone), said in one line with its length. One that does not open: one
    warning line, None, and the show runs on without sound in."""
    wanted = "default" if device is None else str(device)
    try:
        path = input_file(wanted)
        if path is not None:
            sound_in = SoundIn.from_file(path)
            audio = sound_in.source.audio
            log.info("sound in: file %s (%.1f s), played in a loop", path, len(audio) / sound_in.sample_rate)
            return sound_in
        return SoundIn.from_device(None if wanted.strip().lower() == "default" else device, backend)
    except (ImmersionsError, miniaudio.MiniaudioError) as err:
        log.warning("no sound in (%s); listen mode and capture are off, everything else runs",
                    err if isinstance(err, ImmersionsError) and str(err).startswith("no such file")
                    else f"{wanted}: {why(err)}")
        return None
