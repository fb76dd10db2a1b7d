"""The `immersions` command: parse, call one function, print. Nothing else lives here.

A user-facing error (ImmersionsError) prints as one line and exits 2; --debug shows the
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

LAUNCHED = time.perf_counter()

from immersions.errors import ImmersionsError

log = logging.getLogger("immersions")


def _print_json(doc: dict) -> None:
    print(json.dumps(doc, indent=2))


# -- subcommands ------------------------------------------------------------------------

def cmd_info(args) -> int:
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats

    model = load_model(args.model)
    cfg = model.cfg
    sc = cfg.scalogram
    doc = {
        "model": str(model.folder),
        "preset": cfg.preset,
        "sample_rate": sc.sample_rate,
        "n_bins": sc.n_bins,
        "bins_per_octave": sc.bins_per_octave,
        "fmin": sc.fmin,
        "hop": sc.hop,
        "frames_per_second": sc.frames_per_second,
        "loop_seconds": cfg.loop_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "taps": [],
        "graph_nodes": model.graph_nodes,
        "has_stats": load_stats(model) is not None,
        "trained_steps": model.meta.get("step"),
    }
    frames = int(round(cfg.loop_seconds * sc.sample_rate)) // sc.hop
    for tap in model.taps:
        doc["taps"].append({"name": tap.name, "key": tap.key, "shape": list(tap.shape(frames))})
    if args.json:
        _print_json(doc)
        return 0
    print(f"model      {doc['model']}  (preset {cfg.preset}, {doc['parameters'] / 1e6:.2f} M parameters, "
          f"{doc['trained_steps'] or 0} training steps, statistics: {'yes' if doc['has_stats'] else 'no'})")
    print(f"scalogram  {sc.sample_rate} Hz, {sc.n_bins} bins from {sc.fmin:g} Hz at {sc.bins_per_octave}/octave, "
          f"{sc.frames_per_second:g} frames/s")
    print(f"loop       {cfg.loop_seconds:g} s;  neuron graph: {model.graph_nodes} nodes in {len(model.taps)} taps")
    print("taps (channel x pitch x time for one loop):")
    for tap in doc["taps"]:
        c, p, t = tap["shape"]
        print(f"  {tap['name']:<14} {c:>4} x {p:>3} x {t:>3}")
    return 0


def cmd_train(args) -> int:
    from immersions.train.trainer import TrainConfig, train

    cfg = TrainConfig(preset=args.preset, data=args.data or ["synth"], init=args.init, steps=args.steps, out=args.out,
                      batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, grad_clip=args.grad_clip,
                      negatives=args.negatives, seed=args.seed, resume=args.resume, device=args.device,
                      synth_tracks=args.synth_tracks, synth_seconds=args.synth_seconds, skip_steps=args.skip_steps,
                      cache=args.cache)
    if cfg.steps <= 0 or cfg.batch_size <= 0:
        raise ImmersionsError("--steps and --batch-size must be positive")
    if cfg.skip_steps is not None and not 0 <= cfg.skip_steps <= 64:
        raise ImmersionsError("--skip-steps must be 0 .. 64")
    if cfg.synth_tracks <= 0 or not cfg.synth_seconds > 0:
        raise ImmersionsError("--synth-tracks and --synth-seconds must be positive")
    train(cfg)
    return 0


def cmd_corpus(args) -> int:
    from immersions.train.corpus import build_cache, cache_folder, read_manifest

    if args.rate <= 0 or args.min_seconds < 0:
        raise ImmersionsError("--rate must be positive and --min-seconds not negative")
    if args.action == "build":
        report = build_cache(args.folder, args.rate, args.cache, args.min_seconds, progress=not args.json)
        doc = read_manifest(report.cache)
    else:
        target = cache_folder(args.folder, args.rate, args.cache)
        doc = read_manifest(target)
        if not doc:
            raise ImmersionsError(f"no corpus cache for {args.folder} at {args.rate} Hz in {target}: "
                                  f"run 'immersions corpus build {args.folder} --rate {args.rate}'")
        report = None
    files = doc["files"]
    used = {k: v for k, v in files.items() if v["status"] == "ok"}
    skipped = {k: v["reason"] for k, v in files.items() if v["status"] != "ok"}
    summary = {"folder": doc["folder"], "cache": str(report.cache if report else target), "sample_rate": doc["sample_rate"],
               "files": len(used), "hours": sum(v["seconds"] for v in used.values()) / 3600,
               "cache_bytes": sum(2 * v["samples"] for v in used.values()),
               "codecs": sorted({v["codec"] for v in used.values()}), "skipped": skipped}
    if report:
        summary["decoded_now"] = report.decoded
    if args.json:
        _print_json(summary)
        return 0
    print(f"{summary['folder']}: {summary['files']} files, {summary['hours']:.2f} h at {summary['sample_rate']} Hz "
          f"({summary['cache_bytes'] / 2**20:.0f} MiB in {summary['cache']})")
    print(f"codecs: {', '.join(summary['codecs']) or '-'}")
    for name, reason in skipped.items():
        print(f"  skipped {name}: {reason}")
    return 0


def cmd_probe(args) -> int:
    from immersions.model.checkpoint import load_model
    from immersions.train.probe import ProbeConfig, run_music_probe, run_probe

    if args.tracks is not None and args.tracks < 2:
        raise ImmersionsError("--tracks must be at least 2")
    model = load_model(args.model)
    if args.data:
        result = run_music_probe(model, args.data, by=args.by, max_tracks=args.tracks, progress=not args.json)
    else:
        result = run_probe(model, ProbeConfig(n_tracks=args.tracks or 15), progress=not args.json)
    if args.json:
        _print_json(result)
        return 0
    print(f"linear probe on {result['n_tracks']} held-out tracks ({result['train_clips']} train / "
          f"{result['test_clips']} test clips): trained {100 * result['accuracy']:.1f} %, "
          f"untrained {100 * result['untrained_accuracy']:.1f} %  ({result['seconds']:.0f} s)")
    rows = result.get("by_section") or result["by_track"]
    width = max(len(name) for name in rows)
    for name, row in rows.items():
        print(f"  {'ending in ' if 'by_section' in result else ''}{name:<{width}} {row['test_clips']:>4} test clips: "
              f"trained {100 * row['accuracy']:5.1f} %, untrained {100 * row['untrained_accuracy']:5.1f} %")
    return 0


def cmd_stats(args) -> int:
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import compute_stats, save_stats
    from immersions.train.dataset import STATS_SEED_OFFSET, make_corpus

    model = load_model(args.model)
    corpus = make_corpus(args.data, model.cfg.scalogram.sample_rate, seed=STATS_SEED_OFFSET,
                         **({"n_tracks": 8} if args.data == "synth" else {}))
    path = save_stats(compute_stats(model, corpus, clips=args.clips), model.folder)
    print(f"wrote {path}")
    return 0


def cmd_balance(args) -> int:
    """Real music's octave balance, the target of the `balance` prior."""
    from immersions.audio.io import audio_files
    from immersions.dream.priors import BALANCE_FILE, LOWEST_OCTAVE_HZ, measure_balance, octave_edges
    from immersions.errors import ImmersionsError
    from immersions.paths import assets_dir

    files = audio_files(args.music) if Path(args.music).is_dir() else []
    if not files:
        raise ImmersionsError(f"{args.music} is not a folder of audio files; fetch music with scripts/fetch-music.sh")
    profile, excerpts = measure_balance(files, args.sample_rate)
    edges = octave_edges(args.sample_rate)
    out = Path(args.out) if args.out else assets_dir() / BALANCE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "about": "mean power per octave band in dB, loudness removed (immersions.audio.measures.octave_profile)",
        "made_by": f"immersions balance {args.music}", "files": len(files), "excerpts": excerpts,
        "sample_rate": args.sample_rate, "lowest_band_hz": LOWEST_OCTAVE_HZ,
        "band_edges_hz": [float(e) for e in edges], "profile_db": [round(float(v), 2) for v in profile],
    }, indent=1) + "\n")
    print(f"wrote {out}: {excerpts} excerpts of {len(files)} files")
    return 0


def cmd_synth(args) -> int:
    from immersions.audio.io import write_wav
    from immersions.audio.synth import render_track, write_starter_clips

    if args.starter_clips:
        for path in write_starter_clips(args.starter_clips):
            print(f"wrote {path}")
        return 0
    if args.seconds <= 0:
        raise ImmersionsError("--seconds must be positive")
    audio = render_track(args.seed, args.seconds, args.sample_rate)
    print(f"wrote {write_wav(args.out, audio, args.sample_rate)}")
    if args.png:
        from immersions.audio.plot import save_scalogram_png

        print(f"wrote {save_scalogram_png(audio, args.sample_rate, args.png)}")
    return 0


def cmd_dream(args) -> int:
    from immersions.dream.run import dream_clip, journey

    if args.journey:
        results = journey(args.journey, args.out, args.model, progress=not args.json)
        if args.json:
            _print_json({"stages": results})
        else:
            for r in results:
                print(f"stage {r['stage']}: {r['layer']}: objective {r['objective_start']:.3f} -> "
                      f"{r['objective_end']:.3f} (control {r['control_start']:.3f} -> {r['control_end']:.3f}) "
                      f"-> {r['wav']}")
        return 0
    if args.layer is None:
        raise ImmersionsError("say which layer to dream (--layer NAME or INDEX), or give --journey FILE")
    result = dream_clip(args.model, args.layer, args.channel, args.pitch, args.time, args.keep, args.start,
                        args.steps, args.seed, args.out, args.set, progress=not args.json)
    if args.json:
        _print_json(result.as_dict())
    else:
        print(f"objective {result.objective_start:.3f} -> {result.objective_end:.3f} "
              f"(control {result.control_start:.3f} -> {result.control_end:.3f}), "
              f"{result.steps_per_second:.1f} steps/s -> {args.out}")
    return 0


def cmd_layout(args) -> int:
    from immersions.layout.cache import layout_report, model_layout
    from immersions.layout.force import LayoutConfig
    from immersions.model.stats import load_stats

    if args.model and args.preset:
        raise ImmersionsError("give --model or --preset, not both")
    if args.preset:
        from immersions.model.config import preset
        from immersions.model.cpc import CPC
        from immersions.paths import cache_dir

        model, stats = CPC(preset(args.preset)).eval(), None
        folder = cache_dir() / f"preset-{args.preset}"
    else:
        from immersions.model.checkpoint import load_model

        model = load_model(args.model)
        stats, folder = load_stats(model), model.folder
    try:
        cfg = LayoutConfig(seed=args.seed, theta=args.theta, repulsion_exponent=args.exponent, weights=args.weights)
    except ValueError as err:
        raise ImmersionsError(f"bad layout setting: {err}") from None
    device = None if args.device == "auto" else args.device
    result = model_layout(model, stats, cfg, folder=folder, force=args.force, save=not args.no_save,
                          device=device, progress=not args.json)
    if args.png:
        from immersions.layout.preview import save_layout_png

        save_layout_png(result.graph, result.positions, args.png,
                        title=f"{model.cfg.preset}: {result.graph.nodes} neurons, {result.graph.edges} connections")
    doc = layout_report(result)
    if args.json:
        _print_json(doc)
    else:
        if doc["cached"]:
            how = f"read from {doc['file']}"
        else:
            how = f"computed in {doc['seconds']:.1f} s" + ("" if args.no_save else f", saved to {doc['file']}")
        print(f"layout of {doc['nodes']} neurons and {doc['edges']} connections ({doc['levels']} levels) {how}")
        print(f"edge length ratio {doc['edge_length_ratio']:.3f} (lower is tighter); peak memory {doc['peak_memory_mb']:.0f} MB")
        if args.png:
            print(f"preview: {args.png}")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, e.g. 1920x1080."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ImmersionsError(f"size '{text}' is not WIDTHxHEIGHT, e.g. 1920x1080") from None
    return w, h


def _surface_options(args):
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
    controls = _surface_options(args)  # bad map or automation files fail here, before anything starts
    engine_factory = None
    if args.server:
        from immersions.remote.cli import remote_engine_factory

        engine_factory = remote_engine_factory(args.server, args.keys, args.fallback_local)
    if args.headless:
        from immersions.audio.capture import open_sound_in
        from immersions.visual.headless import perform_headless

        if args.seconds is None:
            raise ImmersionsError("perform --headless needs --seconds (how long to run)")
        sound_in = open_sound_in(args.input, args.audio_backend) if args.input else None
        doc = perform_headless(args.seconds, parse_size(args.size), fps=args.fps, model=models[0], models=tuple(models[1:]),
                               device=device, start=args.start, controls=controls, engine_factory=engine_factory,
                               state_out=args.state_out, progress=not args.quiet, video_out=args.video_out,
                               sound_in=sound_in)
        if args.json:
            _print_json(doc)
        return 0
    if args.state_out:
        raise ImmersionsError("--state-out needs --headless (a window run ends when you close it)")
    from immersions.visual.window import PerformOptions, perform

    frames = perform(PerformOptions(model=models[0], models=tuple(models[1:]), windowed=args.windowed,
                                    monitor=args.monitor, size=parse_size(args.size), audio_device=args.audio_device,
                                    audio_backend=args.audio_backend, audio_buffer_ms=args.audio_buffer_ms,
                                    device=device, start=args.start, seconds=args.seconds,
                                    screenshots=args.screenshots, overlay=not args.no_overlay, launched=LAUNCHED,
                                    controls=controls, engine_factory=engine_factory, video_out=args.video_out,
                                    video_out_overlay=args.video_out_overlay,
                                    audio_input=args.input))
    log.info("drew %d frames", frames)
    return 0


def cmd_devices(args) -> int:
    from immersions.audio.capture import list_inputs
    from immersions.audio.player import list_devices

    names = list_devices(args.audio_backend)
    if not names:
        print("no audio outputs found (immersions perform plays silently and says so)")
    for i, name in enumerate(names):
        print(f"{i}: {name}")
    inputs = list_inputs(args.audio_backend)
    print("inputs (perform --input):" if inputs else "no audio inputs found (perform --input warns and runs without)")
    for i, name in enumerate(inputs):
        print(f"{i}: {name}")
    return 0


def cmd_monitors(args) -> int:
    from dataclasses import asdict

    from immersions.visual.window import monitors

    found = monitors()
    if args.json:
        _print_json({"monitors": [asdict(m) for m in found]})
    else:
        for m in found:
            print(m.line())
    return 0


def cmd_render(args) -> int:
    from immersions.dream.run import parse_settings
    from immersions.registry import REGISTRY
    from immersions.visual.headless import render_offscreen

    params = parse_settings(args.set, REGISTRY.defaults()) if args.set else None
    doc = render_offscreen(args.frames, parse_size(args.size), args.out, seconds=args.seconds, model=args.model,
                           device=None if args.device == "auto" else args.device, overlay=args.overlay,
                           start=args.start, seed=args.seed, params=params, progress=not args.json,
                           video_out=args.video_out, video_out_overlay=args.video_out_overlay)
    if args.json:
        _print_json(doc)
    else:
        print(f"{doc['frames']} frames at {doc['size'][0]}x{doc['size'][1]}: {doc['ms_per_frame']:.1f} ms a frame "
              f"({doc['fps']:.1f} fps), {doc['nodes_drawn']} neurons and {doc['edges_drawn']} connections drawn; "
              f"{doc['audio_seconds']:.1f} s of sound in {doc['out']}/heard.wav")
    return 0


def cmd_bench(args) -> int:
    from immersions import bench

    _print_json(bench.run(args.what, args))
    return 0


# -- parser -------------------------------------------------------------------------------

def add_video_out_arguments(p) -> None:
    """--video-out and --video-out-overlay (perform, install, render)."""
    v = p.add_argument_group("video out (other applications take the picture)")
    v.add_argument("--video-out", metavar="TARGET",
                   help="ndi[:NAME], syphon[:NAME] (macOS), spout[:NAME] (Windows) or v4l2[:/dev/videoN] (Linux)")
    v.add_argument("--video-out-overlay", action="store_true", help="send the overlay too (default: the map only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="immersions", description="Hear and see how a neural network listens.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a model: front end, taps, neuron graph size")
    p.add_argument("--model", help="model folder or name in models/ (default: the shipped model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a CPC model (also under torchrun for DDP)")
    p.add_argument("--preset", default="tiny", help="seed, tiny or hifi")
    p.add_argument("--data", action="append", metavar="SOURCE[:WEIGHT]",
                   help="'synth' (procedural house corpus) or a folder of audio files; repeat to mix sources, "
                   "drawn in proportion to their weights (default 1 each): --data music:3 --data synth:1")
    p.add_argument("--init", metavar="MODEL", help="start from this model's weights (fresh optimizer and schedule)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--batch-size", type=int, default=16, help="items per process and step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=1000, help="warm-up steps (at most a tenth of the run)")
    p.add_argument("--grad-clip", type=float, default=0.5)
    p.add_argument("--negatives", choices=("batch", "steps", "times"), default="batch",  # = model.cpc.NEGATIVES (test_cli checks)
                   help="what each prediction is told from: other items at the same time (batch), "
                   "every item at every prediction step (steps) or other items at every time (times)")
    p.add_argument("--across-steps", action="store_const", const="steps", dest="negatives",
                   help="the same as --negatives steps")
    p.add_argument("--skip-steps", type=int, help="future encodings skipped before the predicted ones "
                   "(a new model only; default: the preset's, 0)")
    p.add_argument("--synth-tracks", type=int, default=48, help="procedural tracks held in memory")
    p.add_argument("--synth-seconds", type=float, default=48.0,
                   help="length of each procedural track (whole tracks play out their arrangement)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--cache", metavar="DIR", help="where folders of audio are decoded to "
                   "(default: the corpus folder under the user's cache, ~/.cache/immersions/corpus)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("corpus", help="decode a folder of music once into the training cache, or describe the cache")
    p.add_argument("action", choices=("build", "info"))
    p.add_argument("folder")
    p.add_argument("--rate", type=int, default=16000, help="the model's sample rate (16000 for every preset)")
    p.add_argument("--cache", metavar="DIR", help="cache root (default ~/.cache/immersions/corpus)")
    p.add_argument("--min-seconds", type=float, default=6.0,
                   help="skip files shorter than one training excerpt (6 s for tiny, 8 s for seed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("probe", help="linear probe: track identification from frozen context vectors")
    p.add_argument("--model")
    p.add_argument("--data", action="append", metavar="DIR",
                   help="probe on real music: every audio file under DIR is one track (repeat for more folders); "
                   "default: 15 procedural tracks that training never hears")
    p.add_argument("--by", choices=("file", "folder"), default="file",
                   help="with --data: a track is one file, or one folder of files")
    p.add_argument("--tracks", type=int, help="how many tracks (procedural: 15; real music: all, or the N longest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("stats", help="recompute a model's activation statistics")
    p.add_argument("--model")
    p.add_argument("--data", default="synth")
    p.add_argument("--clips", type=int, default=64)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("balance", help="measure real music's octave balance (the target of the `balance` prior)")
    p.add_argument("music", help="folder of music files (e.g. music/train from scripts/fetch-music.sh)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--out", help="JSON file (default: assets/reference/music-balance.json)")
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("synth", help="render procedural house music to WAV (and its scalogram to PNG)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--out", default="house.wav")
    p.add_argument("--png", help="also draw the scalogram to this PNG")
    p.add_argument("--starter-clips", metavar="DIR", help="write the starter clips (silence, noise, kick, groove) to DIR")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("dream", help="optimize a loop so that a selected region of the network fires")
    p.add_argument("--model")
    p.add_argument("--layer", help="tap name ('enc 3 conv 2'), key (enc3.conv2) or index")
    p.add_argument("--channel", metavar="POS[:SPAN]", help="channel position and span in 0..1 (default 0.5:0)")
    p.add_argument("--pitch", metavar="POS[:SPAN]", help="pitch position and span (default 0.5:1)")
    p.add_argument("--time", metavar="POS[:SPAN]", help="time position and span (default 0.5:1)")
    p.add_argument("--keep", action="store_true", help="add to the previous selection (journeys)")
    p.add_argument("--start", default="noise", help="silence, noise, kick, groove, or an audio file")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any dreaming parameter, e.g. learning_rate=-1.5")
    p.add_argument("--journey", metavar="FILE.toml", help="run a list of selections, each from the previous result")
    p.add_argument("--out", default="dream.wav", help="WAV file (or folder for --journey)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("layout", help="lay out the neuron graph (cached beside the model)")
    p.add_argument("--model", help="model folder or name in models/ (default: the shipped model)")
    p.add_argument("--preset", help="an untrained preset's graph instead (seed, tiny, hifi); cached in ~/.cache/immersions")
    p.add_argument("--force", action="store_true", help="recompute even when a valid cached layout exists")
    p.add_argument("--no-save", action="store_true", help="do not write the layout file")
    p.add_argument("--png", metavar="FILE", help="draw the layout: nodes coloured by tap, a sample of edges")
    p.add_argument("--weights", default="uniform", choices=["uniform", "kernel"], help="edge weights for the springs")
    p.add_argument("--theta", type=float, default=0.6, help="Barnes-Hut opening angle")
    p.add_argument("--exponent", type=float, default=2.5, help="repulsion exponent k: force ~ 1/d^(k-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layout)

    p = sub.add_parser("perform", help="the performance: full-screen map, dreaming, sound, overlay (Tab)")
    p.add_argument("--model", action="append", help="model folder or name in models/ (default: the shipped model); "
                                                    "repeat to load several and switch live (overlay, M key, MIDI)")
    p.add_argument("--windowed", action="store_true", help="a window instead of full screen")
    p.add_argument("--monitor", type=int, help="full screen on this monitor (0 = primary)")
    p.add_argument("--size", default="1280x720", help="window size WxH (windowed; headless: the picture)")
    p.add_argument("--audio-device", help="output index or part of its name (see `immersions devices`)")
    p.add_argument("--audio-backend", help="alsa, pulseaudio, jack, coreaudio, wasapi, null ...")
    p.add_argument("--audio-buffer-ms", type=float, help="device buffer (default 120 ms, safe on busy CPUs; 30 for low latency)")
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

    from immersions.control.midi import add_midi_parser
    from immersions.remote.cli import add_remote_parsers

    from immersions.install.cli import add_install_parser

    add_midi_parser(sub)
    add_remote_parsers(sub)  # serve, keys
    add_install_parser(sub)

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

    p = sub.add_parser("bench", help="benchmarks; print JSON")
    p.add_argument("what", choices=["model", "dream", "layout", "render", "audio", "remote", "soak", "video", "cap", "link", "sound", "corpus", "train", "listen"])
    p.add_argument("--data", metavar="DIR", help="corpus: also decode this folder; train: the folder (10 h or more) "
                   "trained from")
    p.add_argument("--cache", metavar="DIR", help="corpus, train: cache root (default: a temporary folder)")
    p.add_argument("--baseline-hours", type=float, default=1.0,
                   help="train: hours of the folder held in memory for the in-memory baseline")
    p.add_argument("--no-rss", action="store_true", help="train: skip the peak-memory run of `immersions train`")
    p.add_argument("--no-build", action="store_true", help="train: use the folder's cache as it stands "
                   "(another build may still be adding to it); implies --no-rss")
    p.add_argument("--seconds", type=float, help="audio: how long the player runs (default 60); link: (default 120); "
                                                 "remote: each throughput run (default 20)")
    p.add_argument("--outage", type=float, default=2.0, help="remote: seconds the server stays down")
    p.add_argument("--workers", type=int, default=1, help="remote: dream workers on the server")
    p.add_argument("--minutes", type=float, default=10.0, help="soak: how long the installation runs")
    p.add_argument("--model", help="remote, soak, cap, sound, listen: the model (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0, help="soak: the autopilot's seed; sound: the dreams' seed")
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--presets", default="tiny,seed,hifi")
    p.add_argument("--batches", default="1,4,8", help="dream: jitter copies per step")
    p.add_argument("--baseline-batch", type=int, default=4, help="dream: batch compared with the baseline")
    p.add_argument("--compare-edges", default="200000,1500000", help="layout: sizes of the graphs compared with sfdp")
    p.add_argument("--device", default="auto", help="dream, layout: auto, cpu, cuda")
    p.add_argument("--frames", type=int, default=60, help="render: frames timed per setting")
    p.add_argument("--edge-counts", default="0,100000,1000000", help="render: connection counts to draw")
    p.add_argument("--maps", default="default,seed", help="render: 'default' (the shipped model) and/or preset names")
    p.add_argument("--sizes", default="1280x720,1920x1080", help="render: picture sizes WxH")
    p.add_argument("--bloom", choices=("both", "on", "off"), default="both", help="render: with bloom, without, or both")
    p.add_argument("--steps", type=int, help="sound: dream steps per grid cell (default 200; --quick 20); train: steps timed per corpus (default 30)")
    p.add_argument("--starts", help="sound: start clips, e.g. silence,noise,kick,groove")
    p.add_argument("--groups", help="sound: tap groups, e.g. early,middle,late,context")
    p.add_argument("--channels", help="sound: channel positions in 0..1, e.g. 0.2,0.6")
    p.add_argument("--variants", help="sound: dream variants side by side, e.g. before,default,beat_jitter")
    p.add_argument("--quick", action="store_true", help="sound: a small grid (silence, noise; early, context; 20 steps)")
    p.add_argument("--reference", help="sound: a folder of real music to measure beside the dreams")
    p.add_argument("--reference-count", type=int, default=24, help="sound: excerpts taken from --reference")
    p.add_argument("--copies", type=int, default=4, help="sound: jitter copies per dream step")
    p.add_argument("--out", help="sound: folder for the WAVs and spectrogram PNGs")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="sound: any dream parameter for every variant")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ImmersionsError as err:
        if args.debug:
            raise
        print(f"immersions: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("immersions: interrupted", file=sys.stderr)
        return 130
