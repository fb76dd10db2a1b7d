"""Small audio files in every format, encoded by PyAV (FFmpeg) the way a music library holds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name -> (container format, codec, sample rate): the formats a performer's library holds
FORMATS = {
    "wav": ("wav", "pcm_s16le", 44100),
    "aiff": ("aiff", "pcm_s16be", 44100),
    "flac": ("flac", "flac", 48000),
    "mp3": ("mp3", "libmp3lame", 44100),
    "ogg": ("ogg", "vorbis", 44100),
    "opus": ("opus", "libopus", 48000),
    "m4a": ("ipod", "aac", 44100),
    "mp4": ("mp4", "aac", 44100),  # a video file: its audio track is what we read
}


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(path: Path, signal: np.ndarray, rate: int, fmt: str, codec: str, channels: int = 2,
           video: bool = False) -> Path:
    """Write `signal` (mono float32) as `channels` identical channels through FFmpeg's encoder."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        if codec == "vorbis":  # FFmpeg's own Vorbis encoder counts as experimental
            stream.codec_context.options = {"strict": "experimental"}
        picture = None
        if video:
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        planes = np.stack([signal] * channels)
        for start in range(0, len(signal), 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start:start + 4096]), format="fltp",
                                               layout=stream.layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if picture is not None:
            for i in range(int(len(signal) / rate * 10)):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i % 256, np.uint8), format="rgb24")
                image.pts = i
                for packet in picture.encode(image):
                    out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
    return path


def encode_format(folder: Path, name: str, seconds: float = 2.0, freq: float = 440.0, stem: str = "tone") -> Path:
    fmt, codec, rate = FORMATS[name]
    return encode(folder / f"{stem}.{name}", tone(freq, seconds, rate), rate, fmt, codec, video=name == "mp4")
