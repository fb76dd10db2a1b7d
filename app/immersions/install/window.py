"""The installation's window: the performance window run by an InstallSession, full screen,
cursor hidden (`immersions install`, the watchdog's child)."""

from __future__ import annotations

import logging
import signal
import time

from immersions.devices.player import LoopPlayer
from immersions.install.session import install_performance
from immersions.performance.window import PerformOptions, PerformWindow, open_window, run_window_config

log = logging.getLogger(__name__)


class InstallWindow(PerformWindow):
    """`immersions install`: the performance run by an InstallSession (autopilot or scenes,
    opening hours, loudness, heartbeat), full screen, cursor hidden, overlay hidden (Tab
    shows it; Esc quits only while it is shown, so a visitor cannot end the piece)."""

    install = None  # InstallOptions
    session_factory = None  # perf -> InstallSession
    stop_requested = False  # set by SIGTERM (the watchdog, systemd): the next frame closes the window

    def _player(self) -> LoopPlayer:
        return LoopPlayer(device=self.install.audio_device, backend=self.install.audio_backend,
                          buffer_ms=self.install.audio_buffer_ms)

    def _build(self, player: LoopPlayer) -> None:
        # the saved loop plays at once, while the model loads
        self.perf = install_performance(self.ctx, self.wnd.buffer_size, player, self.install)
        self.session = type(self).session_factory(self.perf)

    def _begin(self) -> None:
        self.session.start()

    def _link(self):
        return self.session.link

    def on_render(self, time_: float, frametime: float) -> None:
        seconds = self.options.seconds
        if type(self).stop_requested or seconds is not None and time.perf_counter() - self.started > seconds:
            self.wnd.close()
            return
        self._check_audio(time.perf_counter() - self.started)
        screen = self.ctx.screen
        screen.use()
        screen.clear(0.0, 0.0, 0.0, 1.0)
        self.session.tick(frametime, target=screen, began=self.pacer.released)  # draws the map (or black outside opening hours)
        self._send(with_overlay=False)
        screen.use()
        self.overlay.draw(self.perf, frametime)
        self._send(with_overlay=True)
        self._pace()

    def on_close(self) -> None:
        if not self._closed:
            self._closed = True
            self.session.close()  # the loop heard now is kept for the next start
            self.overlay.release()
            self.perf.close()
            if self.video_out is not None:
                self.video_out.close()
            log.info("installation closed after %d frames", self.perf.frames)

    def on_key_event(self, key, action, modifiers) -> None:
        keys = self.wnd.keys
        if key == keys.ESCAPE and not self.overlay.visible:
            return
        super().on_key_event(key, action, modifiers)


def run_install_window(options, session_factory, seconds: float | None = None) -> int:
    """The installation full screen on `options.monitor`, cursor hidden, until closed (SIGTERM
    from the watchdog or systemd closes it with a fade) or, if given, for `seconds`; returns
    frames drawn."""
    window = open_window((1280, 720), windowed=False, monitor=options.monitor, cursor=False)
    InstallWindow.options = PerformOptions(overlay=options.overlay, video_out=options.video_out,
                                           video_out_overlay=options.video_out_overlay, seconds=seconds)
    InstallWindow.stop_requested = False
    InstallWindow.install, InstallWindow.session_factory = options, staticmethod(session_factory)
    # the handler only asks: closing the window inside a signal handler would interrupt Xlib
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(InstallWindow, "stop_requested", True))
    try:
        return run_window_config(window, InstallWindow).perf.frames
    finally:
        signal.signal(signal.SIGTERM, previous)
