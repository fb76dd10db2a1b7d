"""The monitors `--monitor N` chooses from, as the windowing system lays them out (pyglet's
screens, 0 = the primary). Kept apart from window.py, which loads the performance (and
torch) with it: `immersions monitors` and the configuration check before a window opens
(cli/common.py) read them in a fraction of a second."""

from __future__ import annotations

from dataclasses import dataclass

from immersions.errors import ImmersionsError


@dataclass(frozen=True)
class Monitor:
    """One monitor as the windowing system lays it out (pixels, origin top left)."""

    index: int
    name: str
    width: int
    height: int
    x: int
    y: int

    def line(self) -> str:
        return f"{self.index}: {self.name}  {self.width}x{self.height} at {self.x},{self.y}"


def _display_screens() -> list:
    import pyglet

    return list(pyglet.canvas.get_display().get_screens())


def _screens() -> list:
    """pyglet's screens (Xinerama heads on Linux), or one line saying there is no display."""
    try:
        return _display_screens()
    except Exception as err:  # pyglet raises NoSuchDisplayException and Xlib errors of its own
        raise ImmersionsError(f"cannot see any monitor ({err}); is there a display (DISPLAY set, or xvfb-run)?") from None


def monitors() -> list[Monitor]:
    """The monitors `--monitor N` chooses from, in pyglet's order (0 = the primary)."""
    found = []
    for i, screen in enumerate(_screens()):
        name = getattr(screen, "name", "") or f"monitor {i}"
        found.append(Monitor(i, str(name), int(screen.width), int(screen.height), int(screen.x), int(screen.y)))
    return found


def pick_screen(screens: list, monitor: int | None):
    """The screen for `--monitor` (None: the primary), or one line naming the choices."""
    if monitor is not None and not 0 <= monitor < len(screens):
        raise ImmersionsError(f"no monitor {monitor}: this display has {len(screens)} (0 .. {len(screens) - 1}); "
                              "see `immersions monitors`")
    return screens[monitor or 0]


def check_window(monitor: int | None) -> None:
    """Before a window opens: there is a display, and `--monitor N` (if given) is one of its
    monitors; one line when not."""
    try:
        screens = _display_screens()
    except Exception as err:  # as open_window says it, before anything is loaded
        raise ImmersionsError(f"cannot open a window ({err}); is there a display? For a screenless machine use "
                              "--headless or `immersions render`, or run under xvfb-run") from None
    pick_screen(screens, monitor)
