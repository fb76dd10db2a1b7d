"""Decode any audio file to mono float32 at a chosen rate; write WAV.

PyAV (FFmpeg, whose libraries ship in its wheels) decodes WAV, AIFF, FLAC, MP3, Ogg
Vorbis, Opus, M4A/AAC and the audio track of video files. The file is decoded and
resampled in chunks (FFmpeg's swresample), so an hour-long mix never sits in memory at
its native rate. `resample` (a scipy polyphase filter) serves signals already in memory.
A file FFmpeg will not open but libsndfile (the `soundfile` package, whose wheels ship it)
reads is decoded by libsndfile instead: an Ogg Vorbis stream that repeats its three header
packets, as three of hyperrogue-music's tracks do, is played by libvorbis and refused by
FFmpeg's Ogg demuxer ("Header processing failed").

A file that cannot serve is refused with its name and one reason (`BadAudioFile`):
empty, corrupt, truncated (it holds less than its header promises), or too short.
"""

from __future__ import annotations

import logging
import os
import struct
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy.signal import resample_poly

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".wave", ".aif", ".aiff", ".aifc", ".flac", ".mp3", ".ogg", ".oga", ".opus",
                    ".m4a", ".aac", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".wma")

# A file may end this much before its declared length and still count as whole: encoders pad
# and estimate (an MP3 without a Xing header declares a length guessed from its bitrate).
TRUNCATION_TOLERANCE_S = 0.1
TRUNCATION_TOLERANCE = 0.02


class BadAudioFile(ImmersionsError):
    """A file that cannot serve as audio; `reason` is short enough for a manifest or a log line."""

    def __init__(self, path: str | os.PathLike, reason: str, advice: str = "re-export it or remove it"):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot use audio file {path}: {reason}; {advice}")


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says about its first audio track."""

    codec: str
    source_rate: int
    channels: int
    declared_seconds: float | None  # None when the container does not say (a raw stream)
    decoder: str = "ffmpeg"  # or "libsndfile": FFmpeg is missing or refused the file


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(rate_out, rate_in)
    out = resample_poly(audio, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)


def wav_declared_seconds(path: str | os.PathLike) -> float | None:
    """The length a WAV header promises, read from its own chunk sizes.

    FFmpeg quietly shortens a WAV's duration to the bytes present, so a truncated WAV
    would look whole; the header is read here instead. None when the header does not say
    (a streaming writer's 0 or 0xFFFFFFFF data size) or is not RIFF/WAVE.
    """
    block_align = rate = None
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            ident, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if ident == b"fmt ":
                fmt = f.read(min(size, 16))
                if len(fmt) < 16:
                    return None
                rate, block_align = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
                f.seek(size - 16 + (size & 1), os.SEEK_CUR)
            elif ident == b"data":
                if not rate or not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align / rate
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def _pyav():
    """PyAV, or None where it is not installed (a lent GPU machine running the checkout from
    PYTHONPATH with carried wheels): then libsndfile (the `soundfile` package) decodes what it
    reads (WAV, AIFF, FLAC, Ogg Vorbis, Opus, MP3) and scipy resamples."""
    try:
        import av
    except ImportError:
        return None
    return av


def _probe_with_soundfile(path: Path) -> AudioInfo:
    try:
        import soundfile
    except ImportError as err:
        raise ImmersionsError("neither PyAV nor soundfile is installed: install immersions with "
                              "scripts/setup.sh (or pip install av)") from err
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise BadAudioFile(path, f"corrupt or not audio ({err})") from err
    return AudioInfo(codec=str(info.subtype).lower(), source_rate=int(info.samplerate), channels=int(info.channels),
                     declared_seconds=float(info.frames) / info.samplerate if info.samplerate else None,
                     decoder="libsndfile")


def _decode_with_soundfile(path: Path, sample_rate: int, info: AudioInfo) -> Iterator[np.ndarray]:
    """The whole file at once (what a lent machine decodes is a few minutes a file), channels
    averaged, resampled in one piece so that no chunk seam is heard."""
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise BadAudioFile(path, f"corrupt: cannot decode ({err})") from err
    if len(audio) == 0:
        raise BadAudioFile(path, "holds no samples")
    yield resample(audio.mean(axis=1), int(rate), sample_rate)


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Open the file, read its header; BadAudioFile when it is missing, empty or unreadable."""
    av = _pyav()
    path = Path(path)
    if not path.is_file():
        raise ImmersionsError(f"audio file not found: {path}")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise ImmersionsError(
            f"unsupported audio format '{path.suffix}' for {path}: use one of {', '.join(AUDIO_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise BadAudioFile(path, "empty (0 bytes)")
    if av is None:
        return _probe_with_soundfile(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise BadAudioFile(path, "no audio track", "use a file with sound in it")
            stream = container.streams.audio[0]
            declared = None
            if stream.duration is not None and stream.time_base is not None:
                declared = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                declared = container.duration / 1_000_000  # AV_TIME_BASE
            if path.suffix.lower() in (".wav", ".wave"):
                declared = wav_declared_seconds(path) or declared
            return AudioInfo(codec=stream.codec_context.name, source_rate=int(stream.rate or 0),
                             channels=int(stream.channels or 0), declared_seconds=declared)
    except av.FFmpegError as err:
        what = "truncated or corrupt" if isinstance(err, EOFError) else "corrupt or not audio"
        refused = BadAudioFile(path, f"{what} ({err.strerror or err})")
        if isinstance(err, EOFError):  # cut short: libsndfile would read what is there and not say so
            raise refused from err
    try:  # what FFmpeg refuses as invalid, libsndfile may read
        info = _probe_with_soundfile(path)
    except ImmersionsError:
        raise refused from None
    if not info.declared_seconds:
        raise refused
    log.info("%s: FFmpeg refused it (%s); libsndfile reads it", path, refused.reason)
    return info


def decode_chunks(path: str | os.PathLike, sample_rate: int, info: AudioInfo | None = None) -> Iterator[np.ndarray]:
    """Mono float32 chunks of the file's first audio track at `sample_rate`, in order.

    The checks come at the end, after the last chunk: BadAudioFile when the file held no
    samples, broke off while decoding, or holds less than its header declares.
    """
    av = _pyav()
    info = info or probe_audio(path)
    if av is None or info.decoder == "libsndfile":
        yield from _decode_with_soundfile(Path(path), sample_rate, info)
        return
    source_samples = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            # planar float at the file's own layout: we average the channels ourselves, since
            # FFmpeg's downmix adds them at -3 dB and a full-scale stereo file would clip
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            for frame in container.decode(stream):
                source_samples += frame.samples
                for out in resampler.resample(frame):
                    yield out.to_ndarray().mean(axis=0)
            for out in resampler.resample(None):
                yield out.to_ndarray().mean(axis=0)
    except (av.FFmpegError, EOFError) as err:
        held = source_samples / info.source_rate if info.source_rate else 0.0
        message = getattr(err, "strerror", None) or str(err)
        if held > 0:
            raise BadAudioFile(path, f"truncated or corrupt: decoding broke off after {held:.1f} s ({message})") from err
        raise BadAudioFile(path, f"corrupt: cannot decode ({message})") from err
    if source_samples == 0:
        raise BadAudioFile(path, "holds no samples")
    held = source_samples / info.source_rate if info.source_rate else None
    if held is not None and info.declared_seconds is not None:
        missing = info.declared_seconds - held
        if missing > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE * info.declared_seconds):
            raise BadAudioFile(path, f"truncated: holds {held:.2f} s of the {info.declared_seconds:.2f} s "
                                     "its header declares")


def too_short(path: str | os.PathLike, seconds: float, min_seconds: float) -> BadAudioFile:
    return BadAudioFile(path, f"too short: {seconds:.2f} s, needs at least {min_seconds:.2f} s",
                        "use a longer file")


def load_audio(path: str | os.PathLike, sample_rate: int, min_seconds: float = 0.0) -> np.ndarray:
    """Mono float32 at `sample_rate`; raises ImmersionsError naming the file when it cannot be
    read, is empty, corrupt, truncated or shorter than `min_seconds`."""
    info = probe_audio(path)
    chunks = list(decode_chunks(path, sample_rate, info))
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if len(samples) < min_seconds * sample_rate:
        raise too_short(path, len(samples) / sample_rate, min_seconds)
    return samples


def audio_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImmersionsError(f"audio folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def load_folder(folder: str | os.PathLike, sample_rate: int,
                min_seconds: float = 0.0) -> Iterator[tuple[Path, np.ndarray]]:
    """Every usable audio file under `folder`; bad files are skipped, named and counted."""
    files = audio_files(folder)
    skipped = 0
    for path in files:
        try:
            yield path, load_audio(path, sample_rate, min_seconds)
        except ImmersionsError as err:
            skipped += 1
            log.warning("skipping %s", err)
    if skipped:
        log.warning("skipped %d of %d audio files in %s", skipped, len(files), folder)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV; the signal is clipped to [-1, 1] (never wrapped around)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError("write_wav expects a mono signal")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return path


# name -> (container, codec, sample rate): one encoding for each format a music library holds,
# for the fixtures of tests and benchmarks
ENCODINGS = {
    "wav": ("wav", "pcm_s16le", 44100),
    "aiff": ("aiff", "pcm_s16be", 44100),
    "flac": ("flac", "flac", 48000),
    "mp3": ("mp3", "libmp3lame", 44100),
    "ogg": ("ogg", "vorbis", 44100),
    "opus": ("opus", "libopus", 48000),
    "m4a": ("ipod", "aac", 44100),
    "mp4": ("mp4", "aac", 44100),  # a video file: a still picture track beside the audio
}


def encode_audio(path: str | os.PathLike, signal: np.ndarray, rate: int, fmt: str, codec: str,
                 channels: int = 2, video: bool = False, bit_rate: int | None = None) -> Path:
    """Write `signal` (mono float32) as `channels` identical channels through FFmpeg's encoder
    (at `bit_rate` bits/s where given); with `video`, beside a small picture track, as a video
    file holds its sound."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        if bit_rate:
            stream.bit_rate = int(bit_rate)
        if codec == "vorbis":  # FFmpeg's own Vorbis encoder counts as experimental
            stream.codec_context.options = {"strict": "experimental"}
        picture = None
        if video:
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        planes = np.stack([np.asarray(signal, dtype=np.float32)] * channels)
        for start in range(0, planes.shape[1], 4096):
            # PyAV converts to the encoder's sample format and frame size itself
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start:start + 4096]), format="fltp",
                                               layout=stream.layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if picture is not None:
            for i in range(int(planes.shape[1] / rate * 10)):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i % 256, np.uint8), format="rgb24")
                image.pts = i
                for packet in picture.encode(image):
                    out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
    return path
