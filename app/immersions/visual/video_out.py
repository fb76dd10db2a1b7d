"""Video out: the finished frame to other applications (a mixer, OBS, Resolume, TouchDesigner).

`--video-out ndi[:NAME]`, `syphon[:NAME]`, `spout[:NAME]` or `v4l2[:/dev/videoN]`.

The render loop never waits for a sender. After the map is drawn, `VideoOut.capture(fbo)`
starts an asynchronous read of the frame into a pixel buffer object and maps the one
started `PBO_DEPTH - 1` frames earlier (long finished by then on a GPU); that picture
goes into a one-frame mailbox, and a sender thread takes it from there. A sender slower
than the render loop loses frames (the mailbox keeps only the newest); it never builds a
queue and never holds the loop up.

Spout shares a GPU texture through OpenGL, so it sends from the render thread with no
read-back at all; the others take pixels on the sender thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

KINDS = ("ndi", "syphon", "spout", "v4l2")
DEFAULT_NAME = "Immersions"
PBO_DEPTH = 2  # frames in flight between the read-back and its use: the sent picture is one frame late
NOMINAL_FPS = 60  # what a receiver is told when the render loop has no cap


@dataclass(frozen=True)
class VideoTarget:
    """Where the frames go: a kind and its name (the NDI/Syphon/Spout source name, or a v4l2 device)."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_video_out(text: str) -> VideoTarget:
    """`ndi`, `ndi:Stage left`, `syphon`, `spout:Map`, `v4l2`, `v4l2:/dev/video7`."""
    kind, _, name = str(text).strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ImmersionsError(f"--video-out '{text}': choose ndi[:NAME], syphon[:NAME], spout[:NAME] or v4l2[:/dev/videoN]")
    name = name.strip()
    if kind == "v4l2":
        name = name or "/dev/video0"
        if not name.startswith("/dev/video"):
            raise ImmersionsError(f"--video-out '{text}': a v4l2 device is /dev/videoN, e.g. v4l2:/dev/video2")
    return VideoTarget(kind, name or DEFAULT_NAME)


def bottom_up_to_top_down(pixels: np.ndarray) -> np.ndarray:
    """OpenGL reads rows bottom first; every receiver wants the top row first."""
    return np.ascontiguousarray(pixels[::-1])


# -- the senders: one thin class per backend ------------------------------------------------

class Sender:
    """Sends RGBA frames ([h, w, 4] uint8, top row first) to other applications.

    `on_render_thread`: the sender needs the OpenGL context (Spout); it gets the framebuffer
    through `send_framebuffer` instead of pixels."""

    on_render_thread = False
    description = ""

    def send(self, frame: np.ndarray, fps: float) -> None:
        raise NotImplementedError

    def send_framebuffer(self, fbo, size: tuple[int, int]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class NdiSender(Sender):
    """NDI through ndi-python (the NDI runtime comes with the wheel)."""

    def __init__(self, name: str):
        try:
            import NDIlib as ndi
        except ImportError as err:
            raise ImmersionsError(f"NDI needs ndi-python ({err}); pip install ndi-python") from None
        if not ndi.initialize():
            raise ImmersionsError("the NDI runtime cannot start on this CPU (it needs SSE4.2); choose another --video-out")
        self._ndi = ndi
        # the render loop sets the pace: a clocked sender would block the thread to the frame rate
        self._instance = ndi.send_create(ndi.SendCreate(name, clock_video=False, clock_audio=False))
        if self._instance is None:
            ndi.destroy()
            raise ImmersionsError(f"cannot create the NDI source '{name}'; is another one of that name running?")
        self._frame = ndi.VideoFrameV2(FourCC=ndi.FOURCC_VIDEO_TYPE_RGBA)
        self.description = f"NDI source '{ndi.send_get_source_name(self._instance).ndi_name}'"

    def send(self, frame: np.ndarray, fps: float) -> None:
        f = self._frame
        f.frame_rate_N, f.frame_rate_D = int(round(fps * 1000)), 1000
        f.data = frame  # xres, yres and the line stride follow the array
        self._ndi.send_send_video_v2(self._instance, f)

    def connections(self) -> int:
        return int(self._ndi.send_get_no_connections(self._instance, 0))

    def close(self) -> None:
        if self._instance is not None:
            self._ndi.send_destroy(self._instance)
            self._instance = None
            self._ndi.destroy()


class SyphonSender(Sender):
    """Syphon on macOS (syphon-python's Metal server). Not tested here: this machine runs Linux."""

    def __init__(self, name: str):
        if sys.platform != "darwin":
            raise ImmersionsError("Syphon exists only on macOS; on this machine use --video-out ndi or v4l2")
        try:
            import syphon
            from syphon.utils.numpy import copy_image_to_mtl_texture
            from syphon.utils.raw import create_mtl_texture
        except ImportError as err:
            raise ImmersionsError(f"Syphon needs syphon-python ({err}); pip install syphon-python") from None
        self._server = syphon.SyphonMetalServer(name)
        self._copy, self._create = copy_image_to_mtl_texture, create_mtl_texture
        self._texture, self._size = None, None
        self.description = f"Syphon server '{name}'"

    def send(self, frame: np.ndarray, fps: float) -> None:
        size = (frame.shape[1], frame.shape[0])
        if size != self._size:
            self._texture, self._size = self._create(self._server.device, *size), size
        self._copy(frame, self._texture)
        self._server.publish_frame_texture(self._texture)

    def close(self) -> None:
        self._server.stop()


class SpoutSender(Sender):
    """Spout on Windows (SpoutGL): the drawn framebuffer is shared on the GPU, no read-back.
    Not tested here: this machine runs Linux."""

    on_render_thread = True

    def __init__(self, name: str):
        if sys.platform != "win32":
            raise ImmersionsError("Spout exists only on Windows; on this machine use --video-out ndi"
                                  + (" or syphon" if sys.platform == "darwin" else " or v4l2"))
        try:
            import SpoutGL
        except ImportError as err:
            raise ImmersionsError(f"Spout needs SpoutGL ({err}); pip install SpoutGL") from None
        self._sender = SpoutGL.SpoutSender()
        self._sender.setSenderName(name)
        self.description = f"Spout sender '{name}'"

    def send_framebuffer(self, fbo, size: tuple[int, int]) -> None:
        # invert: OpenGL's rows are bottom first, Spout's receivers expect top first
        self._sender.sendFbo(fbo.glo, size[0], size[1], True)

    def close(self) -> None:
        self._sender.releaseSender()


class V4l2Sender(Sender):
    """A v4l2loopback virtual camera on Linux (pyvirtualcam): OBS, Zoom and browsers see a webcam."""

    def __init__(self, device: str):
        if not sys.platform.startswith("linux"):
            raise ImmersionsError("v4l2 virtual cameras exist only on Linux; use --video-out ndi"
                                  + (", syphon" if sys.platform == "darwin" else ", spout"))
        if not os.path.exists(device):
            raise ImmersionsError(f"no video device {device}: load the loopback module "
                                  f"(sudo modprobe v4l2loopback video_nr={device.removeprefix('/dev/video')} "
                                  "exclusive_caps=1) or choose another with v4l2:/dev/videoN")
        try:
            import pyvirtualcam  # noqa: F401  (checked now, so that a missing one is said at the start)
        except ImportError as err:
            raise ImmersionsError(f"a v4l2 camera needs pyvirtualcam ({err}); pip install pyvirtualcam") from None
        self.device = device
        self._camera = None
        self.description = f"v4l2 camera {device}"

    def _open(self, width: int, height: int, fps: float):
        import pyvirtualcam

        if self._camera is not None:
            self._camera.close()
            self._camera = None
        try:
            self._camera = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGBA,
                                               device=self.device, backend="v4l2loopback")
        except Exception as err:  # pyvirtualcam raises RuntimeError with the driver's reason
            raise ImmersionsError(f"cannot open {self.device} as a v4l2loopback camera ({err}); "
                                  "is it a v4l2loopback device? sudo modprobe v4l2loopback exclusive_caps=1") from None

    def send(self, frame: np.ndarray, fps: float) -> None:
        h, w = frame.shape[:2]
        if self._camera is None or (self._camera.width, self._camera.height) != (w, h):
            self._open(w, h, fps)
        self._camera.send(frame)

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


def open_sender(target: VideoTarget) -> Sender:
    """The sender for `target`, or one ImmersionsError saying why not (platform, library, device)."""
    kinds = {"ndi": NdiSender, "syphon": SyphonSender, "spout": SpoutSender, "v4l2": V4l2Sender}
    return kinds[target.kind](target.name)


# -- off the render loop ---------------------------------------------------------------------

class FrameMailbox:
    """One slot between the render loop and the sender thread; the newest frame wins.

    `put` never waits; a frame still there when the next arrives is dropped and counted."""

    def __init__(self):
        self._ready = threading.Condition()
        self._frame = None
        self.dropped = 0
        self.closed = False

    def put(self, frame):
        """Leave `frame` for the taker; returns the frame it replaced (dropped), or None."""
        with self._ready:
            dropped, self._frame = self._frame, frame
            if dropped is not None:
                self.dropped += 1
            self._ready.notify()
            return dropped

    def take(self, timeout: float):
        """The newest frame, or None after `timeout` seconds (or once closed)."""
        with self._ready:
            if self._frame is None and not self.closed:
                self._ready.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify_all()


class PixelReader:
    """Reads a framebuffer back through a ring of pixel buffer objects without waiting for it:
    each `read` starts the copy of this frame and returns the one started PBO_DEPTH - 1
    frames ago (None for the first frames, and after a resize)."""

    def __init__(self, ctx, depth: int = PBO_DEPTH):
        self.ctx = ctx
        self.depth = max(1, depth)
        self._buffers: list = []
        self._size: tuple[int, int] | None = None
        self._started = 0

    def _resize(self, size: tuple[int, int]) -> None:
        self.release()
        self._buffers = [self.ctx.buffer(reserve=size[0] * size[1] * 4) for _ in range(self.depth)]
        self._size, self._started = size, 0

    def read(self, fbo, size: tuple[int, int], out: np.ndarray) -> bool:
        """Start reading `fbo` (the `size` lower-left pixels); fill `out` ([h, w, 4] uint8,
        bottom row first) with the oldest read in flight. False when none is ready yet."""
        if size != self._size:
            self._resize(size)
        buffers, n = self._buffers, self._started
        fbo.read_into(buffers[n % self.depth], viewport=(0, 0, *size), components=4, alignment=1)
        self._started = n + 1
        oldest = n - (self.depth - 1)
        if oldest < 0:
            return False
        buffers[oldest % self.depth].read_into(out)
        return True

    def release(self) -> None:
        for buffer in self._buffers:
            buffer.release()
        self._buffers, self._size = [], None


@dataclass
class VideoOutStats:
    captured: int = 0  # frames read back
    sent: int = 0  # frames a sender took
    dropped: int = 0  # frames replaced in the mailbox before the sender got to them
    errors: int = 0
    last_error: str | None = None


class VideoOut:
    """The finished frame to a Sender, at the render's own size and rate (see the module docstring).

    Call `capture(fbo, size)` on the render thread once per frame, after drawing (before the
    overlay, unless the overlay is to be sent too)."""

    def __init__(self, ctx, sender: Sender, fps: float | None = None, overlay: bool = False):
        self.ctx = ctx
        self.sender = sender
        self.fps = float(fps) if fps else float(NOMINAL_FPS)
        self.overlay = overlay  # send the frame with the overlay drawn on it
        self.enabled = True  # the overlay's switch: off, nothing is read back or sent
        self.stats = VideoOutStats()
        self._reader = PixelReader(ctx)
        self._mailbox = FrameMailbox()
        self._pool: list[np.ndarray] = []
        self._busy: set[int] = set()  # arrays in the mailbox or being sent, by id
        self._busy_lock = threading.Lock()
        self._said: set[str] = set()
        self._thread = None
        if not sender.on_render_thread:
            self._thread = threading.Thread(target=self._run, name="video-out", daemon=True)
            self._thread.start()
        log.info("video out: %s (%s)", sender.description or type(sender).__name__,
                 "overlay included" if overlay else "overlay not sent")

    @classmethod
    def open(cls, ctx, target: str | VideoTarget, fps: float | None = None, overlay: bool = False) -> "VideoOut":
        target = parse_video_out(target) if isinstance(target, str) else target
        return cls(ctx, open_sender(target), fps=fps, overlay=overlay)

    def _free_array(self, size: tuple[int, int]) -> np.ndarray:
        """A pixel array not in the mailbox and not being sent (three suffice: one each)."""
        shape = (size[1], size[0], 4)
        with self._busy_lock:
            if self._pool and self._pool[0].shape != shape:
                self._pool = [a for a in self._pool if id(a) in self._busy]  # the old size goes when sent
            for a in self._pool:
                if id(a) not in self._busy and a.shape == shape:
                    return a
            a = np.empty(shape, np.uint8)
            self._pool.append(a)
            return a

    def capture(self, fbo, size: tuple[int, int]) -> None:
        """(render thread) Hand this frame on; never waits for the sender."""
        if not self.enabled:
            return
        if self.sender.on_render_thread:
            self._guard(lambda: self.sender.send_framebuffer(fbo, size))
            self.stats.captured += 1
            self.stats.sent += 1
            return
        pixels = self._free_array(size)
        if self._reader.read(fbo, size, pixels):
            self.stats.captured += 1
            with self._busy_lock:
                self._busy.add(id(pixels))
            dropped = self._mailbox.put(pixels)
            if dropped is not None:
                with self._busy_lock:
                    self._busy.discard(id(dropped))
            self.stats.dropped = self._mailbox.dropped

    def _run(self) -> None:
        while not self._mailbox.closed:
            pixels = self._mailbox.take(0.2)
            if pixels is None:
                continue
            try:
                frame = bottom_up_to_top_down(pixels)
            finally:
                with self._busy_lock:
                    self._busy.discard(id(pixels))
            if self._guard(lambda: self.sender.send(frame, self.fps)):
                self.stats.sent += 1

    def _guard(self, send) -> bool:
        """A failing sender is logged once per distinct reason; the music and the picture go on."""
        try:
            send()
            return True
        except Exception as err:
            self.stats.errors += 1
            self.stats.last_error = str(err) or type(err).__name__
            if self.stats.last_error not in self._said:
                self._said.add(self.stats.last_error)
                log.warning("video out: %s (the performance goes on; frames are not sent)", self.stats.last_error)
            return False

    def close(self) -> None:
        self._mailbox.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._reader.release()
        try:
            self.sender.close()
        except Exception as err:  # closing must not take the rest of the shutdown with it
            log.warning("video out: closing the sender failed: %s", err)
        log.info("video out closed: %d frames sent, %d dropped", self.stats.sent, self.stats.dropped)

    def wait_sent(self, count: int, timeout: float) -> bool:
        """Wait until `count` frames were sent (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.stats.sent < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True
