"""`immersions perform`: the performance in a window (full screen by default).

moderngl-window owns the loop: `on_render` draws one frame, event handlers only record
intent (a parameter change, a camera move, a key). Keys: Tab overlay, F fullscreen,
Space pause dreaming, F12 screenshot, Esc quit; 1-9 recall presets, Page Up/Down the
previous/next preset, R starts/stops recording, C exports the heard clip, M the next model;
arrows pan, +/- zoom, Q/E rotate, Home shows the whole map; mouse: drag pans, wheel
zooms, right-drag rotates. Keys go through the control hub like every other control.

The installation's window builds on PerformWindow in install/window.py.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import imgui
import moderngl_window as mglw
from moderngl_window.integrations.imgui import ModernglWindowRenderer

from immersions.devices.player import LoopPlayer
from immersions.control.hub import KEYS
from immersions.control.surface import ControlSurface, SurfaceOptions
from immersions.errors import ImmersionsError
from immersions.performance.gui import Overlay
from immersions.performance.monitors import _screens, pick_screen
from immersions.visual.pacing import FramePacer, frame_cap
from immersions.performance.performance import Performance

log = logging.getLogger(__name__)

PAN_PIXELS = 40.0


def _digits(keys) -> tuple:
    """The number keys 1-9 of a moderngl-window key map, in order."""
    return (keys.NUMBER_1, keys.NUMBER_2, keys.NUMBER_3, keys.NUMBER_4, keys.NUMBER_5, keys.NUMBER_6,
            keys.NUMBER_7, keys.NUMBER_8, keys.NUMBER_9)
ZOOM_STEP = 1.15
ROTATE_STEP = 0.05


@dataclass
class PerformOptions:
    model: str | None = None
    windowed: bool = False
    monitor: int | None = None
    size: tuple[int, int] = (1280, 720)
    audio_device: str | int | None = None
    audio_backend: str | None = None
    audio_buffer_ms: float | None = None  # the device buffer (None: the player's default, 120 ms)
    cue_device: str | int | None = None  # a second output (headphones) for the deck off air
    device: str | None = None  # torch device for dreaming
    start: str = "groove"
    seconds: float | None = None  # quit after this long (smoke tests, installations with a timer)
    screenshots: str = "."
    overlay: bool = True
    launched: float | None = None  # time.perf_counter() when the command started, for the start-up time
    models: tuple[str, ...] = ()  # more models loaded up front, to switch to live
    controls: SurfaceOptions = field(default_factory=SurfaceOptions)  # MIDI, OSC, presets, automation, recording
    engine_factory: object = None  # remote dreaming (immersions.cli.remote.remote_engine_factory)
    video_out: str | None = None  # send the picture to other applications: ndi[:NAME], syphon, spout, v4l2[:DEV]
    video_out_overlay: bool = False  # ... with the overlay drawn on it
    audio_input: str | None = None  # the room's sound in (--input): a capture device, 'default' or a file


class PerformWindow(mglw.WindowConfig):
    gl_version = (3, 3)
    title = "Immersions"
    resizable = True
    vsync = True
    clear_color = None
    options = PerformOptions()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        imgui.create_context()
        imgui.get_io().ini_file_name = None  # no imgui.ini left in the working folder
        self.imgui = ModernglWindowRenderer(self.wnd)
        self.video_out = self._video_out()  # a missing device is said before the model loads
        self.pacer = FramePacer()
        player = self._player()
        self.perf = self.surface = self.session = None
        try:
            self._build(player)
        except BaseException:
            if self.perf is not None:
                self.perf.close()
            else:
                player.close(fade=False)
            if self.video_out is not None:
                self.video_out.close()
            raise
        self.pacer.cap = frame_cap(self.perf.params["max_fps"], self.ctx.info.get("GL_RENDERER", ""))
        if self.pacer.cap:
            log.info("drawing at most %g frames a second (max_fps; %s)", self.pacer.cap, self.ctx.info.get("GL_RENDERER"))
        self.overlay = Overlay(self.ctx, self.imgui)
        self.overlay.visible = self.options.overlay
        self.overlay.video_out = self.video_out
        self.started = time.perf_counter()
        self._begin()
        self.overlay.link = self._link()  # joined in _begin (an installation) or with the surface (a performance)
        self._closed = False
        self._heard = False
        self._heard_at: float | None = None
        self._next_check = 0.0

    # -- what a performance and an installation do differently ---------------------------------

    def _player(self) -> LoopPlayer:
        opts = self.options
        buffer = {} if opts.audio_buffer_ms is None else {"buffer_ms": opts.audio_buffer_ms}
        if opts.cue_device is None:
            log.info("no --cue-device: the deck off air is heard only through the crossfader")
        return LoopPlayer(device=opts.audio_device, backend=opts.audio_backend, cue_device=opts.cue_device, **buffer)

    def _build(self, player: LoopPlayer) -> None:
        opts = self.options
        from immersions.devices.capture import open_sound_in

        sound_in = open_sound_in(opts.audio_input, opts.audio_backend) if opts.audio_input else None
        self.perf = Performance(self.ctx, self.wnd.buffer_size, player, model=opts.model, device=opts.device,
                                start=opts.start, progress=True, engine_factory=opts.engine_factory, sound_in=sound_in)
        self.perf.preload(opts.models)
        self.surface = ControlSurface(self.perf, opts.controls)

    def _begin(self) -> None:
        self.perf.start()

    def _link(self):
        """The Ableton Link session whose status the HUD shows (None: no --link)."""
        return self.surface.link if self.surface is not None else None

    def _video_out(self):
        opts = self.options
        if not opts.video_out:
            return None
        from immersions.visual.video_out import VideoOut

        return VideoOut.open(self.ctx, opts.video_out, overlay=opts.video_out_overlay)

    def _send(self, with_overlay: bool) -> None:
        """The finished frame to the video out: before the overlay is drawn, or after it if asked."""
        out = self.video_out
        if out is not None and out.overlay == with_overlay:
            out.capture(self.ctx.screen, self.wnd.buffer_size)

    def _pace(self) -> None:
        """Sleep to the frame-rate cap, re-read each frame (max_fps may change live)."""
        self.pacer.cap = frame_cap(self.perf.params["max_fps"], self.ctx.info.get("GL_RENDERER", ""))
        if self.video_out is not None and self.pacer.cap:
            self.video_out.fps = self.pacer.cap  # the rate receivers are told follows the cap
        self.pacer.wait()

    def _check_audio(self, now: float) -> None:
        """About once a second: an audio device that died is reopened; the loop carries on."""
        if now >= self._next_check:
            self._next_check = now + 1.0
            self.perf.clock.check()

    # -- drawing -----------------------------------------------------------------------------

    def on_render(self, time_: float, frametime: float) -> None:
        # Paced before drawing, so every frame, the first too, is stamped with the instant the
        # pacer let it start (paced after it, the first frame's stamp came from elsewhere and
        # the second followed it by one draw: 40 ms, 25 fps on the HUD at a cap of 8). The
        # picture drawn after the sleep is also the newest state at the buffer swap.
        self._pace()
        screen = self.ctx.screen
        screen.use()
        screen.clear(0.0, 0.0, 0.0, 1.0)
        now = time.perf_counter() - self.started
        if self._heard_at is None and self.perf.heard.serial >= 0:
            self._heard_at = now  # automation replays from the first dreamed loop heard
        self.surface.tick(frametime, now, None if self._heard_at is None else now - self._heard_at)
        self._check_audio(now)
        self.perf.frame(frametime, target=screen, began=self.pacer.released)
        self._send(with_overlay=False)
        if self.options.launched is not None:
            if self.perf.frames == 1:
                log.info("first frame %.1f s after start", time.perf_counter() - self.options.launched)
            if self.perf.heard.serial >= 0 and not self._heard:
                self._heard = True
                log.info("first dreamed loop heard %.1f s after start", time.perf_counter() - self.options.launched)
        screen.use()
        self.overlay.draw(self.perf, frametime, self.surface)
        self._send(with_overlay=True)
        if self.options.seconds is not None and time.perf_counter() - self.started > self.options.seconds:
            self.wnd.close()

    def on_resize(self, width: int, height: int) -> None:
        self.perf.resize(*self.wnd.buffer_size)
        self.imgui.resize(width, height)

    def on_close(self) -> None:
        if not self._closed:
            self._closed = True
            self.overlay.release()
            self.surface.close()  # a recording is finished, the OSC port freed
            self.perf.close()  # dreaming stops, the sound fades out, GPU objects go
            if self.video_out is not None:
                self.video_out.close()
            log.info("performance closed after %d frames", self.perf.frames)

    # -- input: record intent only -----------------------------------------------------------

    def on_key_event(self, key, action, modifiers) -> None:
        self.imgui.key_event(key, action, modifiers)
        keys = self.wnd.keys
        if action != keys.ACTION_PRESS:
            return
        camera, size = self.perf.renderer.camera, self.perf.size
        if key == keys.ESCAPE:
            self.wnd.close()
        elif key == keys.TAB:
            self.overlay.visible = not self.overlay.visible
        elif imgui.get_io().want_capture_keyboard:
            return  # typing into the overlay
        elif key == keys.F:
            if self.wnd._window.fullscreen:
                _leave_fullscreen(self.wnd)
            else:
                _fullscreen(self.wnd, self.options.monitor)
        elif key == keys.SPACE:
            dreaming = self.perf.controls.act("pause", None, KEYS)
            self.overlay.message = "" if dreaming else "dreaming paused (Space resumes)"
        elif key in _digits(keys):
            self.perf.controls.act("preset", _digits(keys).index(key) + 1, KEYS)
        elif key in (keys.PAGE_UP, keys.PAGE_DOWN):
            self.perf.controls.act("preset_previous" if key == keys.PAGE_UP else "preset_next", None, KEYS)
        elif key == keys.R:
            self.perf.controls.act("record", None, KEYS)
        elif key == keys.C:
            self.perf.controls.act("export_clip", None, KEYS)
        elif key == keys.M:
            self.perf.controls.act("model_next", None, KEYS)
        elif key == keys.L:  # listen mode: the map follows the room's sound (--input)
            self.perf.controls.set("listen", not self.perf.params["listen"], KEYS)
        elif key == keys.I:  # capture the room's sound on the next bar line
            self.perf.controls.act("capture", None, KEYS)
        elif key == keys.D:  # the controls edit the other deck
            self.perf.controls.set("deck", "B" if self.perf.params["deck"] == "A" else "A", KEYS)
        elif key == keys.X:  # fade to the deck off air over fade_length bars
            self.perf.controls.act("fade_bars", None, KEYS)
        elif key == keys.F12:
            path = Path(self.options.screenshots) / time.strftime("immersions-%Y%m%d-%H%M%S.png")
            self.overlay.message = f"screenshot: {self.perf.screenshot(path)}"
        elif key in (keys.LEFT, keys.RIGHT, keys.UP, keys.DOWN):
            dx = {keys.LEFT: PAN_PIXELS, keys.RIGHT: -PAN_PIXELS}.get(key, 0.0)
            dy = {keys.UP: PAN_PIXELS, keys.DOWN: -PAN_PIXELS}.get(key, 0.0)
            camera.pan(dx, dy, size)
        elif key in (keys.EQUAL, keys.NUMPAD_ADD, keys.MINUS, keys.NUMPAD_SUBTRACT):
            factor = ZOOM_STEP if key in (keys.EQUAL, keys.NUMPAD_ADD) else 1 / ZOOM_STEP
            camera.zoom_at(factor, (size[0] / 2, size[1] / 2), size)
        elif key in (keys.Q, keys.E):
            camera.rotate(ROTATE_STEP if key == keys.Q else -ROTATE_STEP)
        elif key == keys.HOME:
            self.perf.renderer.show_all()

    def on_mouse_position_event(self, x, y, dx, dy) -> None:
        self.imgui.mouse_position_event(x, y, dx, dy)

    def on_mouse_drag_event(self, x, y, dx, dy) -> None:
        self.imgui.mouse_drag_event(x, y, dx, dy)
        if imgui.get_io().want_capture_mouse:
            return
        scale = self.wnd.pixel_ratio
        if self.wnd.mouse_states.right:
            self.perf.renderer.camera.rotate(dx * 0.005)
        else:
            self.perf.renderer.camera.pan(dx * scale, dy * scale, self.perf.size)

    def on_mouse_scroll_event(self, x_offset, y_offset) -> None:
        self.imgui.mouse_scroll_event(x_offset, y_offset)
        if imgui.get_io().want_capture_mouse:
            return
        x, y = self.wnd._mouse_pos if hasattr(self.wnd, "_mouse_pos") else (self.perf.size[0] / 2, self.perf.size[1] / 2)
        self.perf.renderer.camera.zoom_at(ZOOM_STEP ** y_offset, (x, y), self.perf.size)

    def on_mouse_press_event(self, x, y, button) -> None:
        self.imgui.mouse_press_event(x, y, button)

    def on_mouse_release_event(self, x, y, button) -> None:
        self.imgui.mouse_release_event(x, y, button)

    def on_unicode_char_entered(self, char) -> None:
        self.imgui.unicode_char_entered(char)


def open_window(size: tuple[int, int], windowed: bool, monitor: int | None, cursor: bool = True):
    try:
        window_cls = mglw.get_local_window_cls("pyglet")
        window = window_cls(title=PerformWindow.title, size=size, fullscreen=False, resizable=True,
                            gl_version=PerformWindow.gl_version, vsync=True, cursor=cursor)
    except Exception as err:  # pyglet raises its own types for a missing display
        raise ImmersionsError(f"cannot open a window ({err}); is there a display? For a screenless machine "
                              "use `immersions render`, or run under xvfb-run") from err
    if not windowed:
        _fullscreen(window, monitor)
    mglw.activate_context(window=window)
    return window


def run_window_config(window, config_cls):
    config = config_cls(ctx=window.ctx, wnd=window, timer=mglw.timers.clock.Timer())
    window._config = weakref.ref(config)
    window.swap_buffers()
    window.set_default_viewport()
    config.on_resize(*window.size)
    try:
        mglw.run_window_config_instance(config)
    finally:
        config.on_close()
    return config


def perform(options: PerformOptions) -> int:
    """Open the window and run until it closes; returns frames drawn."""
    window = open_window(options.size, options.windowed, options.monitor)
    PerformWindow.options = options
    return run_window_config(window, PerformWindow).perf.frames


def _fullscreen(window, monitor: int | None) -> None:
    """Full screen on the chosen monitor (pyglet screens, 0 = primary), cursor hidden."""
    screen = pick_screen(_screens(), monitor)
    index = monitor or 0
    pw = window._window
    pw.set_fullscreen(True, screen=screen)
    _pin_to_screen(pw, screen, index)
    window.cursor = False


def _leave_fullscreen(window) -> None:
    window._window.set_fullscreen(False)
    window.cursor = True


def _pin_to_screen(pw, screen, index: int) -> None:
    """pyglet 2.0 on X11 asks for full screen before the window is mapped, and window managers
    then fill the monitor the window happened to open on, the first (pyglet #763, #1330).
    Once mapped, the window is moved onto the chosen monitor's area and an EWMH window manager
    is told which monitor to fill (_NET_WM_FULLSCREEN_MONITORS). Other platforms honour
    `screen=` already."""
    if not sys.platform.startswith("linux") or not hasattr(pw, "_x_display"):
        return
    from ctypes import POINTER, byref, cast

    from pyglet.libs.x11 import xlib

    pw.dispatch_events()  # the map request goes out; the window exists on the server
    if pw.get_location() != (screen.x, screen.y):
        pw.set_location(screen.x, screen.y)
    display = pw._x_display
    event = xlib.XEvent()
    event.xclient.type = xlib.ClientMessage
    event.xclient.message_type = xlib.XInternAtom(display, b"_NET_WM_FULLSCREEN_MONITORS", False)
    event.xclient.display = cast(display, POINTER(xlib.Display))
    event.xclient.window = pw._window
    event.xclient.format = 32
    for i in range(4):  # top, bottom, left and right edge all on this Xinerama head
        event.xclient.data.l[i] = index
    event.xclient.data.l[4] = 1  # source: a normal application
    root = xlib.XRootWindow(display, pw.display.x_screen)
    xlib.XSendEvent(display, root, False, xlib.SubstructureRedirectMask | xlib.SubstructureNotifyMask, byref(event))
    xlib.XFlush(display)
