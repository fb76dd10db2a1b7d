"""Recording what the listener hears to a WAV file, without ever holding up the sound.

The audio callback only copies: `Recorder.push(block)` copies the block that
`LoopRenderer.render(n)` returns (the master output, after the volume and the soft limiter)
into a preallocated ring of float32 frames and advances a write counter. A writer thread wakes
every `drain_s` (50 ms), converts what lies between its read counter and the write counter to
PCM, appends it to the file and advances the read counter. One producer, one consumer, two
counters that only grow, each written by one side only: no lock, and the callback never waits.
When the ring is full (the disk stalled for longer than the ring holds, 15 s by default) the
callback drops the whole block and counts it in `dropped_frames`; the sound goes on.

Format: 24-bit PCM, mono. 24 bits put the quantisation error near -138 dBFS, below any DAC
and any room, so no dither is needed and the file is the heard signal to within 2**-23, even at
a quiet gallery volume, where 16 bits would leave ~75 dB of range and want dither noise on
top. Files are 1.5x the size of 16-bit ones: 144 kB/s at 48 kHz, about 500 MB an hour; WAV's
32-bit sizes stop one file at 4 GiB (8 hours at 48 kHz), where the recording ends cleanly.
Mono because the player sends one mono mix to every output channel.

The file is written with Python's `wave` module, which rewrites the header's sizes after every
append, so the file is a valid WAV at every moment, not only after `stop()`: a power cut keeps
everything up to the last drain. A failing write (disk full, device removed) ends the recording
cleanly: the writer keeps what was written (the file cut back to whole frames and a correct
header), logs one line, and stops; the sound never notices.

`record(renderer)` starts a recording and attaches it as the renderer's tap; `LoopPlayer` (and
the offline clock) use that. `export_clip` writes one loop on its own.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

SAMPLE_WIDTH = 3  # bytes per sample: 24-bit PCM
FULL_SCALE = 2**23 - 1
BUFFER_SECONDS = 15.0  # how long the disk may stall before blocks are dropped
DRAIN_S = 0.05  # how often the writer empties the ring
CHUNK_SECONDS = 1.0  # the writer converts at most this much per write (bounded memory)
MAX_DATA_BYTES = 0xFFFFFFFF - 36  # a RIFF file's sizes are 32-bit
DEFAULT_FOLDER = "recordings"
JOIN_S = 10.0  # stop() waits this long for the writer to finish a slow disk


@dataclass(frozen=True)
class RecordingInfo:
    path: Path
    seconds: float  # in the file
    frames: int  # in the file
    dropped_frames: int  # lost because the ring was full (the disk could not keep up)
    error: str | None = None  # why the recording ended early (disk full ...); None when it did not


def pcm24(audio: np.ndarray) -> bytes:
    """float audio ([n] or [n, channels], nominally -1 .. 1) -> little-endian 24-bit PCM, frames
    interleaved; clipped to full scale (never wrapped round), NaN written as silence."""
    scaled = np.multiply(audio, FULL_SCALE, dtype=np.float64)  # float64: exact to the last bit
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, -FULL_SCALE, FULL_SCALE, out=scaled)
    ints = np.rint(scaled).astype("<i4")
    return ints.reshape(-1, 1).view(np.uint8)[:, :SAMPLE_WIDTH].tobytes()


class _WavFile(io.FileIO):
    """A new file (never an existing one) whose write() writes all of its bytes or raises:
    a full disk surfaces as OSError at the chunk that did not fit."""

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += super().write(view[done:])
        return done


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImmersionsError(f"cannot create the folder {folder} ({err.strerror or err}); "
                              "choose a folder you can write to") from err


def _create(path: Path) -> _WavFile:
    _mkdir(path.parent)
    try:
        return _WavFile(path, "xb")
    except FileExistsError as err:
        raise ImmersionsError(f"{path} already exists: recordings never overwrite a file; "
                              "choose another name or folder") from err
    except OSError as err:
        raise ImmersionsError(f"cannot write {path} ({err.strerror or err}); "
                              "choose a folder you can write to") from err


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _free_name(folder: Path, stem: str) -> Path:
    path, n = folder / f"{stem}.wav", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.wav", n + 1
    return path


def default_recording_path(folder: str | os.PathLike | None = None) -> Path:
    """<folder or ./recordings>/immersions-YYYYMMDD-HHMMSS.wav, with -2, -3 ... added when
    that name is taken (nothing is ever overwritten)."""
    folder = Path(folder) if folder is not None else Path.cwd() / DEFAULT_FOLDER
    return _free_name(folder, f"immersions-{_stamp()}")


def _open_wav(file: _WavFile, sample_rate: int, channels: int) -> wave.Wave_write:
    wav = wave.open(file, "wb")
    wav.setnchannels(channels)
    wav.setsampwidth(SAMPLE_WIDTH)
    wav.setframerate(sample_rate)
    wav.writeframes(b"")  # the header now: a disk that cannot take it fails here, not later
    return wav


class Recorder:
    """Records pushed blocks to a 24-bit WAV file from a writer thread (see the module docstring).

    path: the file to create (an existing file is never overwritten).
    channels: columns kept from each pushed block (1: the mono mix the renderer sends everywhere).
    seconds_buffer: the ring's length: how long the writer may fall behind before blocks drop.
    lossless: push() waits for the writer instead of dropping a block when the ring is full; for
      offline renders only, never in an audio callback.

    `push` belongs to the audio callback (one thread); everything else to any one other thread.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int = 1,
                 seconds_buffer: float = BUFFER_SECONDS, lossless: bool = False, drain_s: float = DRAIN_S):
        if not 1 <= int(sample_rate) <= 1_000_000:
            raise ImmersionsError(f"cannot record at {sample_rate} Hz: choose a rate of 1 .. 1000000")
        if not 1 <= int(channels) <= 32:
            raise ImmersionsError(f"cannot record {channels} channels: choose 1 .. 32")
        if not 0.0 < float(seconds_buffer) <= 600.0:
            raise ImmersionsError(f"a recording buffer of {seconds_buffer} s: choose more than 0 and at most 600 s")
        self._path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.lossless = bool(lossless)
        self.drain_s = float(drain_s)
        self.capacity = max(1, round(float(seconds_buffer) * self.sample_rate))
        self.max_data_bytes = MAX_DATA_BYTES  # where the file ends (WAV's 4 GiB)
        self._ring = np.zeros((self.capacity, self.channels), np.float32)
        self._w = 0  # frames pushed: written by push() only
        self._r = 0  # frames taken by the writer: written by the writer only
        self.dropped_frames = 0  # written by push() only
        self._frames = 0  # frames in the file
        self._open = False  # whether push() takes blocks
        self._stopping = False
        self._kick = threading.Event()  # wakes the writer early (stop, or a lossless push waiting)
        self._thread: threading.Thread | None = None
        self._file: _WavFile | None = None
        self._wav: wave.Wave_write | None = None
        self._data_start = 0
        self.error: str | None = None
        self._info: RecordingInfo | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def recording(self) -> bool:
        """True from start() until stop(), or until the writer ended (disk full, size limit)."""
        return self._open

    @property
    def seconds(self) -> float:
        """Seconds in the file so far."""
        return self._frames / self.sample_rate

    @property
    def frames(self) -> int:
        return self._frames

    def start(self) -> "Recorder":
        """Create the file and start the writer; ImmersionsError (one line) when the file cannot
        be created or its header written."""
        if self._thread is not None or self._info is not None:
            raise ImmersionsError(f"the recording to {self._path} was already started; make a new Recorder")
        file = _create(self._path)
        try:
            self._wav = _open_wav(file, self.sample_rate, self.channels)
            self._data_start = file.tell()
        except OSError as err:
            file.close()
            self._path.unlink(missing_ok=True)
            raise ImmersionsError(f"cannot write {self._path} ({err.strerror or err}); "
                                  "free some space or choose another folder") from err
        self._file = file
        self._open = True
        self._thread = threading.Thread(target=self._write_loop, name="immersions-recorder", daemon=True)
        self._thread.start()
        log.info("recording to %s (%d Hz, 24-bit, %d channel%s)", self._path, self.sample_rate, self.channels,
                 "" if self.channels == 1 else "s")
        return self

    # -- the audio callback's side ------------------------------------------------------------------

    def push(self, block: np.ndarray) -> None:
        """Copy one block (float32 [n, >= channels], or [n] for mono) into the ring, or drop it
        whole and count it when the ring is full. No locks, no I/O, no buffers allocated."""
        if not self._open:
            return
        n = len(block)
        w, cap = self._w, self.capacity
        if w + n - self._r > cap and not (self.lossless and self._wait_for_room(n)):
            self.dropped_frames += n
            return
        src = block[:, None] if block.ndim == 1 else block[:, :self.channels]
        i = w % cap
        k = min(n, cap - i)
        np.copyto(self._ring[i:i + k], src[:k])
        if k < n:
            np.copyto(self._ring[:n - k], src[k:])
        self._w = w + n  # published after the copy: the writer reads only up to here

    def _wait_for_room(self, n: int) -> bool:
        while self._w + n - self._r > self.capacity:
            if n > self.capacity or not self._open:
                return False
            self._kick.set()
            time.sleep(0.001)
        return True

    # -- the writer thread ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                stopping = self._stopping  # read before the drain: a stop drains everything pushed before it
                if not self._drain() or stopping:
                    break
                self._kick.wait(self.drain_s)
                self._kick.clear()
        except Exception as err:  # a full disk, a removed drive: keep what is there, the sound goes on
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
            self.error = f"{type(err).__name__}: {why}"
            log.error("recording to %s stopped after %.1f s (%s); the file keeps what was written, the sound "
                      "goes on", self._path, self.seconds, why)
        finally:
            self._open = False
            self._finish()

    def _drain(self) -> bool:
        """Write everything pushed so far; False when the file is full (WAV's size limit)."""
        r, w, cap = self._r, self._w, self.capacity
        frame_bytes = SAMPLE_WIDTH * self.channels
        chunk = max(1, round(CHUNK_SECONDS * self.sample_rate))
        while r < w:
            room = (self.max_data_bytes - self._frames * frame_bytes) // frame_bytes
            i = r % cap
            k = min(w - r, cap - i, chunk, room)
            if k > 0:
                self._wav.writeframes(pcm24(self._ring[i:i + k]))
                self._frames += k
                r += k
                self._r = r  # frees the ring behind the writer
            if k == room:
                self.error = "the WAV size limit (4 GiB)"
                log.warning("recording to %s reached WAV's 4 GiB limit after %.1f s; it ends there, the sound "
                            "goes on", self._path, self.seconds)
                return False
        return True

    def _finish(self) -> None:
        """Close the file with a correct header, cut back to the frames it holds."""
        wav, file = self._wav, self._file
        self._wav = self._file = None
        if wav is None:
            return
        try:
            wav.close()  # rewrites the header's sizes (in place: needs no free space)
        except Exception as err:
            log.warning("could not finish the header of %s (%s)", self._path, err)
        finally:
            file.close()
        try:  # a chunk that did not fit may have left part of itself behind the data
            os.truncate(self._path, self._data_start + self._frames * SAMPLE_WIDTH * self.channels)
        except OSError as err:
            log.warning("could not trim %s (%s)", self._path, err)

    # -- the owner's side ------------------------------------------------------------------------------

    def stop(self) -> RecordingInfo:
        """Write everything pushed so far, close the file and join the writer. Safe to call twice."""
        if self._info is not None:
            return self._info
        self._open = False
        if self._thread is not None:
            self._stopping = True
            self._kick.set()
            self._thread.join(JOIN_S)
            if self._thread.is_alive():
                log.warning("the recording writer for %s is still busy after %.0f s; leaving it to finish",
                            self._path, JOIN_S)
        info = RecordingInfo(self._path, self.seconds, self._frames, self.dropped_frames, self.error)
        self._info = info
        if self._thread is not None:
            log.info("recorded %.1f s to %s%s", info.seconds, info.path,
                     f" ({info.dropped_frames} frames dropped)" if info.dropped_frames else "")
        return info


def record(renderer, path: str | os.PathLike | None = None, folder: str | os.PathLike | None = None,
           lossless: bool = False) -> Recorder:
    """Start recording a LoopRenderer's output (its tap) to `path`, or to a new file named by
    `default_recording_path(folder)`. Stop with `renderer.stop_recording().stop()`."""
    if getattr(renderer, "tap", None) is not None:
        raise ImmersionsError(f"already recording to {renderer.tap.path}; stop that recording first")
    target = Path(path) if path is not None else default_recording_path(folder)
    recorder = Recorder(target, renderer.sample_rate, channels=1, lossless=lossless).start()
    try:
        renderer.start_recording(recorder)
    except Exception:
        recorder.stop()
        raise
    return recorder


def export_clip(frame_or_clip, sample_rate: int | None = None, folder: str | os.PathLike | None = None) -> Path:
    """Write one loop (a DreamFrame, at its own rate, or a mono float array at `sample_rate`) as
    <folder or ./recordings>/immersions-clip-YYYYMMDD-HHMMSS.wav, 24-bit like the recordings
    (never overwriting: -2, -3 ... are added). Returns the path."""
    bare = isinstance(frame_or_clip, (np.ndarray, list, tuple))  # (an ndarray has a .clip method)
    clip = frame_or_clip if bare else getattr(frame_or_clip, "clip", frame_or_clip)
    rate = None if bare else getattr(frame_or_clip, "sample_rate", None)
    if rate is not None and sample_rate is not None and int(rate) != int(sample_rate):
        raise ImmersionsError(f"the clip is at {rate} Hz, not {sample_rate} Hz: leave sample_rate unset for a frame")
    rate = rate if rate is not None else sample_rate
    if rate is None or int(rate) <= 0:
        raise ImmersionsError("export_clip needs the clip's sample rate: pass sample_rate with a bare array")
    try:
        clip = np.asarray(clip, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ImmersionsError(f"cannot export {type(frame_or_clip).__name__} as a clip: offer a DreamFrame "
                              f"or a mono float array ({err})") from err
    if clip.ndim != 1 or clip.size == 0:
        raise ImmersionsError(f"a clip of shape {clip.shape}: export_clip writes mono clips (non-empty 1-D arrays)")
    folder = Path(folder) if folder is not None else Path.cwd() / DEFAULT_FOLDER
    _mkdir(folder)
    stem = f"immersions-clip-{_stamp()}"
    while True:  # a name another process claims between the check and the create is simply skipped
        path = _free_name(folder, stem)
        try:
            file = _create(path)
            break
        except ImmersionsError:
            if not path.exists():
                raise
    try:
        with file:
            wav = _open_wav(file, int(rate), 1)
            wav.writeframes(pcm24(clip))
            wav.close()
    except OSError as err:
        path.unlink(missing_ok=True)
        raise ImmersionsError(f"cannot write {path} ({err.strerror or err}); free some space or choose "
                              "another folder") from err
    log.info("exported the clip (%.2f s) to %s", len(clip) / int(rate), path)
    return path
