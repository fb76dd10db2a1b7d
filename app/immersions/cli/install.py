"""`immersions install`: parse, build the options, then one of three things:

- default: the watchdog supervises a child `immersions install --child ...` that runs the
  installation window (restarted when it crashes, hangs, freezes or goes black);
- `--no-watchdog` (or `--child`, which the watchdog itself uses): the window in this process;
- `--headless`: the installation without a screen, in this process (`--seconds S --json`
  prints the figures).

Everything a technician can get wrong (a time of day, a scene list, a model name, a monitor,
an audio output, a video out) is checked here, before anything starts, and reported in one
line with exit status 2; the watchdog is not even started. What only the child can find out
(no display, say) it writes into the heartbeat and exits with status 2: the watchdog stops
too, and says why, instead of restarting it for ever.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from immersions.cli.common import LAUNCHED, add_video_out_arguments, check_configuration, parse_size
from immersions.errors import ImmersionsError
from immersions.install.hours import FADE_SECONDS, OpeningHours
from immersions.install import INSTALL_BUFFER_MS
from immersions.paths import cache_dir

if TYPE_CHECKING:
    from immersions.install.session import InstallOptions

# The rest is imported when the command runs: building the `immersions` parser must stay quick.

log = logging.getLogger(__name__)


def add_install_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `install` subcommand to the `immersions` parser's subparsers."""
    p = subparsers.add_parser("install", help="installation mode: the piece plays itself (autopilot, opening "
                                              "hours, loudness guard, watchdog)")
    p.add_argument("--model", help="model folder or name in models/ (default: the shipped model)")
    p.add_argument("--monitor", type=int, help="full screen on this monitor (0 = primary)")
    p.add_argument("--scenes", metavar="FILE.toml", help="play a curated scene list of presets instead of wandering")
    p.add_argument("--presets", action="append", default=[], metavar="DIR",
                   help="another folder of presets for the scene list (assets/presets is always searched)")
    p.add_argument("--open", metavar="HH:MM", help="opening time (with --close; default: always open)")
    p.add_argument("--close", metavar="HH:MM", help="closing time; before --open means past midnight")
    p.add_argument("--fade", type=float, default=FADE_SECONDS, help="seconds of fade after opening and before closing")
    p.add_argument("--audio-device", help="output index or part of its name (see `immersions devices`)")
    p.add_argument("--audio-backend", help="alsa, pulseaudio, jack, ... (headless default: null, no sound card)")
    p.add_argument("--audio-buffer-ms", type=float, default=INSTALL_BUFFER_MS,
                   help=f"device buffer (default {INSTALL_BUFFER_MS:g} ms: nobody plays it live, and it rides out stalls)")
    p.add_argument("--input", metavar="DEVICE",
                   help="the room's sound in: the autopilot listens to it and captures from it (a scene may listen); "
                        "'default', an input's index or part of its name (see `immersions devices`), or an "
                        "audio file played in a loop")
    p.add_argument("--device", default="auto", help="dreaming on: auto, cpu, cuda ...")
    p.add_argument("--seed", type=int, default=0, help="the autopilot's choices (same seed, same walk)")
    p.add_argument("--loops-per-selection", type=float, help="a new selection about every this many loops (default 4)")
    p.add_argument("--target-lufs", type=float, help="loudness the volume is held at (default -16; rooms: -20 .. -14)")
    p.add_argument("--headless", action="store_true", help="no window: offscreen picture, real-time audio")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until stopped); with a window, "
                                                 "the watchdog stops too")
    p.add_argument("--size", default="640x360", help="headless: picture size WxH")
    p.add_argument("--fps", type=float, default=12.0, help="headless: frames per second")
    p.add_argument("--json", action="store_true", help="headless: print the figures as JSON")
    p.add_argument("--link", action="store_true", help="join the Ableton Link session: bpm follows it, loops start on its bar")
    p.add_argument("--one-deck", dest="decks", action="store_false",
                   help="one deck: each new selection or scene dreams on the loop that plays (by default two decks: "
                        "it dreams on the deck off air for its whole wait, then fades in over fade_length bars, so "
                        "visitors never hear a cold start)")
    p.add_argument("--decks", dest="decks", action="store_true", help=argparse.SUPPRESS)  # the default since 2026-12-07
    p.add_argument("--no-watchdog", action="store_true", help="run the window without the supervisor")
    p.add_argument("--overlay", action="store_true", help="show the overlay at start (Tab toggles it)")
    p.add_argument("--log-dir", help="folder for the rotating logs (default: STATE_DIR/logs)")
    p.add_argument("--state-dir",
                   help=f"folder for the saved loop and the heartbeat (default: {cache_dir() / 'install'})")
    add_video_out_arguments(p)
    p.add_argument("--heartbeat", help=argparse.SUPPRESS)  # set by the watchdog for its child
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_install, decks=True)
    return p


def options_from_args(args) -> InstallOptions:
    """The options, each checked now (one-line errors before anything starts)."""
    from immersions.install.autopilot import AutopilotConfig, Scenes
    from immersions.install.session import InstallOptions, default_state_dir
    from immersions.install.watchdog import HEARTBEAT_ENV
    from immersions.paths import resolve_model

    resolve_model(args.model)  # a missing model is reported here, not in a crash loop
    if args.scenes:
        Scenes.load(args.scenes)
    hours = OpeningHours.from_args(args.open, args.close, args.fade)
    pacing = {name: value for name, value in (("loops_per_selection", args.loops_per_selection),
                                              ("target_lufs", args.target_lufs)) if value is not None}
    autopilot = AutopilotConfig(**pacing, decks=int(bool(getattr(args, "decks", True))))
    if not -40.0 <= autopilot.target_lufs <= -3.0:
        raise ImmersionsError(f"--target-lufs {autopilot.target_lufs:g}: choose -40 .. -3 (rooms: -20 .. -14)")
    if not 12.0 <= args.audio_buffer_ms <= 1000.0:
        raise ImmersionsError(f"--audio-buffer-ms {args.audio_buffer_ms:g}: choose 12 .. 1000 ms (default {INSTALL_BUFFER_MS:g})")
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    if args.video_out:
        from immersions.visual.video_out import parse_video_out

        parse_video_out(args.video_out)  # a typo is said here, not in a crash loop
        if args.headless:
            raise ImmersionsError("--video-out sends the installation window's picture: drop --headless "
                                  "(or use `immersions perform --headless --video-out ...`)")
    headless_backend = "null" if args.headless and args.audio_device is None else None
    return InstallOptions(
        model=args.model, seed=args.seed, scenes=args.scenes, preset_folders=tuple(args.presets), hours=hours,
        autopilot=autopilot, heartbeat=args.heartbeat or os.environ.get(HEARTBEAT_ENV) or None,
        state_dir=str(state_dir), log_dir=args.log_dir or str(state_dir / "logs"),
        device=None if args.device == "auto" else args.device, monitor=args.monitor, size=parse_size(args.size),
        fps=args.fps, audio_device=args.audio_device, audio_backend=args.audio_backend or headless_backend,
        audio_buffer_ms=args.audio_buffer_ms, link=args.link, audio_input=args.input, input_backend=args.audio_backend,
        overlay=args.overlay, video_out=args.video_out, video_out_overlay=args.video_out_overlay)


def log_to_files(folder: str | Path, name: str = "immersions.log") -> logging.Handler:
    """Also log (INFO and up) to a rotating file: 5 x 1 MB."""
    from immersions.install.watchdog import LOG_BYTES, LOG_FILES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(folder / name, maxBytes=LOG_BYTES, backupCount=LOG_FILES,
                                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger("immersions").addHandler(handler)
    return handler


def child_command(args) -> list[str]:
    """The command the watchdog runs: this one, as a window child without a watchdog."""
    cmd = [sys.executable, "-m", "immersions"]
    cmd += ["--debug"] if getattr(args, "debug", False) else []
    cmd += ["--quiet"] if getattr(args, "quiet", False) else []
    cmd += ["install", "--child", "--seed", str(args.seed), "--fade", str(args.fade), "--device", args.device]
    for flag, value in (("--loops-per-selection", args.loops_per_selection), ("--target-lufs", args.target_lufs),
                        ("--model", args.model), ("--monitor", args.monitor), ("--scenes", args.scenes),
                        ("--open", args.open), ("--close", args.close), ("--audio-device", args.audio_device),
                        ("--audio-backend", args.audio_backend), ("--audio-buffer-ms", args.audio_buffer_ms),
                        ("--input", args.input),
                        ("--log-dir", args.log_dir),
                        ("--state-dir", args.state_dir), ("--video-out", args.video_out)):
        if value is not None:
            cmd += [flag, str(value)]
    for folder in args.presets:
        cmd += ["--presets", folder]
    cmd += ["--video-out-overlay"] if args.video_out_overlay else []
    return (cmd + (["--overlay"] if args.overlay else []) + (["--link"] if args.link else [])
            + ([] if getattr(args, "decks", True) else ["--one-deck"]))


def run_window(options, seconds: float | None = None) -> int:
    """The installation window in this process (the watchdog's child); it closes after `seconds` if given."""
    from immersions.install.session import InstallSession
    from immersions.install.window import run_install_window

    run_install_window(options, lambda perf: InstallSession(perf, options), seconds=seconds)
    return 0


def tell_watchdog(args, err: ImmersionsError) -> None:
    """The watchdog's child could not start: its one line goes into the heartbeat (the status
    a technician or a health check reads), and the watchdog does not restart it."""
    from immersions.install.watchdog import HEARTBEAT_ENV, Heartbeat

    path = args.heartbeat or os.environ.get(HEARTBEAT_ENV)
    if path:
        try:
            Heartbeat(path).beat(error=str(err))
        except OSError as why:  # the line still goes to stderr
            log.warning("cannot write the heartbeat %s: %s", path, why)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def cmd_install(args) -> int:
    if args.child:
        try:
            return install(args)
        except ImmersionsError as err:
            tell_watchdog(args, err)
            raise
    return install(args)


def install(args) -> int:
    options = options_from_args(args)
    if not args.child:  # the watchdog's child: its parent checked all this (a restart must not wait for it)
        check_configuration(args, window=not args.headless, plays=True)
    if args.headless:
        from immersions.install.run import run_headless

        if args.log_dir:
            log_to_files(args.log_dir)
        doc = run_headless(options, args.seconds, launched=LAUNCHED)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(f"played {doc['clips_played']} loops in {doc['seconds']:.0f} s: {doc['selections']} selections "
                  f"over {doc['taps_visited']} taps, {doc['loop_restarts']} fresh starts, {doc['restarts']} device recoveries, "
                  f"{doc['loudness_lufs'] if doc['loudness_lufs'] is not None else '-'} LUFS, "
                  f"{doc['underruns']} underruns, memory {doc['rss_start_mb']:.0f} -> {doc['rss_end_mb']:.0f} MB")
            ready = doc.get("fade_ready")
            if ready is not None:
                print(f"{doc['fades']} fades: {ready['measured']} measured, the rise heard at a fade's end "
                      f"min {_share(ready['min'])}, median {_share(ready['median'])}, "
                      f"{ready['at_least_80_percent']} at 80 % or more; {ready['no_rise']} with no rise, "
                      f"{sum(ready['unmeasured'].values())} not measured")
        return 0
    if args.child or args.no_watchdog:
        log_to_files(options.log_dir)
        return run_window(options, args.seconds)
    from immersions.install.watchdog import Watchdog

    heartbeat = Path(options.state_folder) / "heartbeat.json"
    # a configuration error the child meets (exit status 2 before it plays) stops the watchdog: exit 2
    return Watchdog(child_command(args) + ["--heartbeat", str(heartbeat)], heartbeat, log_dir=options.log_dir,
                    seconds=args.seconds).run()
