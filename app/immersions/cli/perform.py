"""`immersions perform` (the instrument in a window or headless), `devices`, `monitors` and
`render` (the performance offscreen)."""

from __future__ import annotations

import logging

from immersions.cli.common import LAUNCHED, add_video_out_arguments, check_configuration, parse_size, print_json
from immersions.errors import ImmersionsError

log = logging.getLogger("immersions")


def surface_options(args):
    from immersions.control.surface import SurfaceOptions

    options = SurfaceOptions(midi=not args.no_midi, midi_port=args.midi, midi_map=args.map,
                             soft_takeover=not args.no_soft_takeover, osc_port=args.osc, osc_host=args.osc_host,
                             automation=args.automation, preset=args.preset, recordings=args.recordings,
                             link=getattr(args, "link", False))
    options.check()
    return options


def cmd_perform(args) -> int:
    device = None if args.device == "auto" else args.device
    models = args.model or [None]
    controls = surface_options(args)  # bad map or automation files fail here, before anything starts
    check_configuration(args, window=not args.headless, plays=not args.headless)  # models, monitor, audio, video out
    engine_factory = None
    if args.server:
        from immersions.cli.remote import remote_engine_factory

        engine_factory = remote_engine_factory(args.server, args.keys, args.fallback_local)
    if args.headless:
        from immersions.devices.capture import open_sound_in
        from immersions.performance.headless import perform_headless

        if args.seconds is None:
            raise ImmersionsError("perform --headless needs --seconds (how long to run)")
        sound_in = open_sound_in(args.input, args.audio_backend) if args.input else None
        doc = perform_headless(args.seconds, parse_size(args.size), fps=args.fps, model=models[0], models=tuple(models[1:]),
                               device=device, start=args.start, controls=controls, engine_factory=engine_factory,
                               state_out=args.state_out, progress=not args.quiet, video_out=args.video_out,
                               sound_in=sound_in)
        if args.json:
            print_json(doc)
        return 0
    if args.state_out:
        raise ImmersionsError("--state-out needs --headless (a window run ends when you close it)")
    from immersions.performance.window import PerformOptions, perform

    frames = perform(PerformOptions(model=models[0], models=tuple(models[1:]), windowed=args.windowed,
                                    monitor=args.monitor, size=parse_size(args.size), audio_device=args.audio_device,
                                    audio_backend=args.audio_backend, audio_buffer_ms=args.audio_buffer_ms,
                                    cue_device=args.cue_device, device=device, start=args.start, seconds=args.seconds,
                                    screenshots=args.screenshots, overlay=not args.no_overlay, launched=LAUNCHED,
                                    controls=controls, engine_factory=engine_factory, video_out=args.video_out,
                                    video_out_overlay=args.video_out_overlay,
                                    audio_input=args.input))
    log.info("drew %d frames", frames)
    return 0


def cmd_devices(args) -> int:
    from immersions.devices.shell import devices_report

    for line in devices_report(args.audio_backend):
        print(line)
    return 0


def cmd_monitors(args) -> int:
    from dataclasses import asdict

    from immersions.performance.monitors import monitors

    found = monitors()
    if args.json:
        print_json({"monitors": [asdict(m) for m in found]})
    else:
        for m in found:
            print(m.line())
    return 0


def cmd_render(args) -> int:
    from immersions.dream.run import parse_settings
    from immersions.registry import REGISTRY
    from immersions.performance.headless import render_offscreen
    from immersions.performance.performance import remove_frames

    params = parse_settings(args.set, REGISTRY.defaults()) if args.set else None
    check_configuration(args, window=False, plays=False)  # the model and the video out, before the model loads
    size = parse_size(args.size)
    if args.frames >= 1 and (removed := remove_frames(args.out)):  # a shorter run leaves none of the last one's
        log.info("removed %d frames of an earlier render from %s", removed, args.out)
    doc = render_offscreen(args.frames, size, args.out, seconds=args.seconds, model=args.model,
                           device=None if args.device == "auto" else args.device, overlay=args.overlay,
                           start=args.start, seed=args.seed, params=params, progress=not args.json,
                           video_out=args.video_out, video_out_overlay=args.video_out_overlay)
    if args.json:
        print_json(doc)
    else:
        print(f"{doc['frames']} frames at {doc['size'][0]}x{doc['size'][1]}: {doc['ms_per_frame']:.1f} ms a frame "
              f"({doc['fps']:.1f} fps), {doc['nodes_drawn']} neurons and {doc['edges_drawn']} connections drawn; "
              f"{doc['audio_seconds']:.1f} s of sound in {doc['out']}/heard.wav")
    return 0


def add_perform_parser(sub) -> None:
    p = sub.add_parser("perform", help="the performance: full-screen map, dreaming, sound, overlay (Tab)")
    p.add_argument("--model", action="append", help="model folder or name in models/ (default: the shipped model); "
                                                    "repeat to load several and switch live (overlay, M key, MIDI)")
    p.add_argument("--windowed", action="store_true", help="a window instead of full screen")
    p.add_argument("--monitor", type=int, help="full screen on this monitor (0 = primary)")
    p.add_argument("--size", default="1280x720", help="window size WxH (windowed; headless: the picture)")
    p.add_argument("--audio-device", help="output index or part of its name (see `immersions devices`)")
    p.add_argument("--audio-backend", help="alsa, pulseaudio, jack, coreaudio, wasapi, null ...")
    p.add_argument("--audio-buffer-ms", type=float, help="device buffer (default 120 ms, safe on busy CPUs; 30 for low latency)")
    p.add_argument("--cue-device", help="a second output (headphones) that plays the deck off air, or a blend with "
                                        "the master (cue_mix): index or part of its name (see `immersions devices`)")
    p.add_argument("--input", metavar="DEVICE", help="the room's sound in, for listen mode (L) and capture (I): 'default', "
                                                     "an input's index or part of its name (see `immersions devices`), "
                                                     "or an audio file played in a loop")
    p.add_argument("--device", default="auto", help="dreaming on: auto, cpu, cuda ...")
    p.add_argument("--start", default="groove", help="start clip: silence, noise, kick, groove or an audio file")
    p.add_argument("--seconds", type=float, help="close after this many seconds")
    p.add_argument("--screenshots", default=".", help="folder for F12 screenshots")
    p.add_argument("--no-overlay", action="store_true", help="start with the overlay hidden (Tab shows it)")
    c = p.add_argument_group("control surface")
    c.add_argument("--midi", metavar="PORT", help="MIDI input by name or part of it (default: the first controller "
                                                  "a shipped map is made for, else the first input)")
    c.add_argument("--no-midi", action="store_true", help="do not look for a MIDI controller")
    c.add_argument("--map", help="MIDI map file or shipped map (bcf2000, generic8); reloaded when the file changes")
    c.add_argument("--no-soft-takeover", action="store_true", help="knobs jump to their position at once")
    c.add_argument("--osc", type=int, metavar="PORT", help="listen for OSC on this UDP port (/immersions/<parameter>)")
    c.add_argument("--osc-host", default="127.0.0.1", help="OSC address to bind (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    c.add_argument("--automation", metavar="FILE.mid", help="replay a MIDI file's controls through the map, in time")
    c.add_argument("--preset", help="recall this preset (name or slot) at the start")
    c.add_argument("--recordings", default="recordings", help="folder for recordings (R) and exported clips (C)")
    c.add_argument("--link", action="store_true", help="join the Ableton Link session: bpm follows it, loops start on its bar")
    r = p.add_argument_group("remote dreaming (docs/remote.md)")
    r.add_argument("--server", metavar="tcp://HOST:PORT", help="dream on an `immersions serve` machine")
    r.add_argument("--keys", metavar="DIR", help="CURVE keys from `immersions keys generate` (needed beyond 127.0.0.1)")
    r.add_argument("--fallback-local", action="store_true", help="dream here while the server is unreachable")
    add_video_out_arguments(p)
    h = p.add_argument_group("headless")
    h.add_argument("--headless", action="store_true", help="no window: EGL offscreen, offline sound; needs --seconds")
    h.add_argument("--fps", type=float, default=15.0, help="headless: frames per second drawn")
    h.add_argument("--state-out", metavar="FILE.json", help="headless: write the final parameter values and what the controls did")
    h.add_argument("--json", action="store_true", help="headless: print that state as JSON")
    p.set_defaults(func=cmd_perform)


def add_device_parsers(sub) -> None:
    """`devices`, `monitors` and `render`."""
    p = sub.add_parser("devices", help="list audio outputs and inputs")
    p.add_argument("--audio-backend")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("monitors", help="list monitors (the numbers --monitor takes)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_monitors)

    p = sub.add_parser("render", help="the performance offscreen: PNG frames and the heard WAV")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--out", default="render", help="output folder")
    p.add_argument("--seconds", type=float, help="heard time the frames span (default frames / 30)")
    p.add_argument("--model")
    p.add_argument("--device", default="auto")
    p.add_argument("--overlay", action="store_true", help="draw the overlay too")
    p.add_argument("--start", default="groove")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any live parameter, e.g. bloom_intensity=2")
    p.add_argument("--json", action="store_true")
    add_video_out_arguments(p)
    p.set_defaults(func=cmd_render)
