"""What every command family shares: the launch time, JSON printing, sizes, video-out flags,
and the configuration check that perform, install and render make before anything starts."""

from __future__ import annotations

import json
import time

LAUNCHED = time.perf_counter()  # before the heavy imports: `perform` reports its start-up time from here

from immersions.errors import ImmersionsError  # noqa: E402


def print_json(doc: dict) -> None:
    print(json.dumps(doc, indent=2))


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, e.g. 1920x1080."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ImmersionsError(f"size '{text}' is not WIDTHxHEIGHT, e.g. 1920x1080") from None
    return w, h


def add_video_out_arguments(p) -> None:
    """--video-out and --video-out-overlay (perform, install, render)."""
    v = p.add_argument_group("video out (other applications take the picture)")
    v.add_argument("--video-out", metavar="TARGET",
                   help="ndi[:NAME], syphon[:NAME] (macOS), spout[:NAME] (Windows) or v4l2[:/dev/videoN] (Linux)")
    v.add_argument("--video-out-overlay", action="store_true", help="send the overlay too (default: the map only)")


def check_configuration(args, window: bool, plays: bool) -> None:
    """Everything the settings name, resolved now, before a window opens, a model loads or a
    watchdog starts: a bad one is one line and exit status 2, never a failure later (nor a
    restart loop under the installation's watchdog). `perform`, `install` and `render` call
    it with their parsed arguments. `window`: a window will open (there must be a display,
    and --monitor must name one of its monitors); `plays`: a real-time audio output opens on
    --audio-device. Each setting is resolved by the code that uses it later: the same rules,
    the same one-line errors. The MIDI map, automation and preset (SurfaceOptions.check), the
    scene list and the opening hours (cli/install.py:options_from_args) are read where those
    options are built, also before anything starts. A missing input device stays one warning
    (the show runs without sound in); a missing input file is an error."""
    from immersions.paths import resolve_model

    seconds = getattr(args, "seconds", None)
    if seconds is not None and seconds <= 0:
        raise ImmersionsError("--seconds must be positive")
    models = getattr(args, "model", None)
    for model in models if isinstance(models, list) else [models]:
        resolve_model(model)
    backend, device = getattr(args, "audio_backend", None), getattr(args, "audio_device", None)
    if backend is not None or (plays and device is not None):
        from immersions.devices.shell import backends, find_output

        backends(backend)  # an unknown name, for the output and the input alike
        if plays and device is not None:
            find_output(device, backend)  # no audio output 'USB': one line naming the outputs there are
    cue = getattr(args, "cue_device", None)
    if cue is not None:
        from immersions.devices.shell import find_output

        if not plays:
            raise ImmersionsError(f"--cue-device {cue}: there is no sound to cue with --headless; leave it out")
        find_output(cue, backend)  # the headphones' output, named in the list of outputs there are
    if getattr(args, "input", None) is not None:
        from immersions.devices.capture import input_file

        input_file(args.input)  # a path naming no file is a typo (a missing input device only warns)
    if getattr(args, "video_out", None):
        from immersions.visual.video_out import open_sender, parse_video_out

        open_sender(parse_video_out(args.video_out)).close()  # platform, library and device, as at the start
    monitor = getattr(args, "monitor", None)
    if window:
        from immersions.performance.monitors import check_window

        check_window(monitor)  # a display, and the monitor asked for
    elif monitor is not None:
        raise ImmersionsError(f"--monitor {monitor} chooses the window's screen: there is none with --headless")
