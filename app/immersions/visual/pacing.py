"""The render loop's frame-rate cap, and the scale the map is drawn at.

On a machine without a GPU, Mesa's llvmpipe rasterizes on the same cores that dream: drawing
as fast as the display allows (24+ fps on 2 cores) left dreaming a fifth of its idle speed.
The `max_fps` parameter caps the frames drawn a second; its default (0, automatic) caps only
a software renderer, at SOFTWARE_FPS. A 1280x720 frame of the default map cost llvmpipe
70-100 ms of CPU here and a dream step about 0.5 CPU-seconds: at 8 fps drawing takes under
0.8 of 2 cores and dreaming keeps well over half its idle speed; at 10 fps it was on the
edge (`immersions bench cap`). A larger picture costs more: lower max_fps for 1080p.

The `render_scale` parameter draws the scene and its tone mapping at a share of the view's
width and height; a last pass scales the picture up (bilinear) into the full-size target.
Its default (0, automatic) is SOFTWARE_SCALE on a software renderer and full size on a GPU:
at half size a 1280x720 frame of a 21 000-neuron map cost llvmpipe 39 ms of CPU instead of
58 (docs/benchmarks.md).

`FrameRate` counts the frames drawn a second of wall time, for the HUD: the frames stamped
within the last FPS_WINDOW_S (never fewer than the last two), not the duration of one draw
call nor an average of 1/frametime (whose first, near-zero frametime read thousands of fps
for minutes at a capped 8). A paced window stamps each frame with the instant its pacer let it
start, so the rate never reads above the cap: stamped after the window's own work (buffer swap,
events, a slow first draw), two frames could land 40 ms apart and read 25 fps at a cap of 8.
"""

from __future__ import annotations

import time
from collections import deque

SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "lavapipe", "software rasterizer")
SOFTWARE_FPS = 8.0


def is_software_renderer(gl_renderer: str) -> bool:
    """True for Mesa's CPU rasterizers (the GL_RENDERER string names them)."""
    name = (gl_renderer or "").lower()
    return any(word in name for word in SOFTWARE_RENDERERS)


def frame_cap(max_fps: float, gl_renderer: str) -> float | None:
    """Frames a second to draw at most: `max_fps` when set, else SOFTWARE_FPS on a CPU
    rasterizer and no cap (the display's own rate) on a GPU."""
    if max_fps and max_fps > 0:
        return float(max_fps)
    return SOFTWARE_FPS if is_software_renderer(gl_renderer) else None


SOFTWARE_SCALE = 0.5
MIN_SCALE = 0.25


def automatic_scale(gl_renderer: str) -> float:
    """What render_scale 0 (automatic) means: SOFTWARE_SCALE on a CPU rasterizer, 1 on a GPU."""
    return SOFTWARE_SCALE if is_software_renderer(gl_renderer) else 1.0


def render_scale(value: float, automatic: float) -> float:
    """The share of the view's width and height the map is drawn at: `value` when set (at
    least MIN_SCALE), else `automatic`."""
    if value and value > 0:
        return max(MIN_SCALE, min(1.0, float(value)))
    return automatic


def frame_delay(last: float | None, now: float, cap: float | None) -> float:
    """Seconds to sleep so that frames start at most `cap` times a second."""
    if not cap or last is None:
        return 0.0
    return max(0.0, last + 1.0 / cap - now)


class FramePacer:
    """Sleeps the render loop to `cap` frames a second; a late frame is not made up for
    with a burst of quick ones."""

    def __init__(self, cap: float | None = None, clock=time.perf_counter, sleep=time.sleep):
        self.cap = cap
        self._clock, self._sleep = clock, sleep
        self._last: float | None = None

    @property
    def released(self) -> float | None:
        """When the last frame was let start (the pacer's clock); None before the first wait."""
        return self._last

    def wait(self) -> float:
        """Sleep until the next frame may start; returns the seconds slept."""
        now = self._clock()
        delay = frame_delay(self._last, now, self.cap)
        if delay > 0:
            self._sleep(delay)
        self._last = now + delay
        return delay


FPS_WINDOW_S = 1.0  # the HUD's frame rate counts the frames drawn in the last second


class FrameRate:
    """Frames drawn a second of wall time: `tick()` once per drawn frame, `fps` reads the rate
    over the frames of the last `window` seconds (at least the last two: a slow picture still
    reads its rate); 0 before the second frame."""

    def __init__(self, window: float = FPS_WINDOW_S, clock=time.perf_counter, most: int = 4096):
        self.window = float(window)
        self._clock = clock
        self._times: deque[float] = deque(maxlen=most)  # a very fast loop keeps its newest `most` frames

    def tick(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        times = self._times
        times.append(now)
        while len(times) > 2 and now - times[0] > self.window:
            times.popleft()

    @property
    def fps(self) -> float:
        times = self._times
        if len(times) < 2:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0
