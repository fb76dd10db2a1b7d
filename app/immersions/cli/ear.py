"""`immersions info`, `train`, `corpus`, `probe`, `stats`, `blend`, `balance`, `synth`: the ear, its
training and its training material."""

from __future__ import annotations

import json
from pathlib import Path

from immersions.cli.common import print_json
from immersions.errors import ImmersionsError


def cmd_info(args) -> int:
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats

    model = load_model(args.model)
    front = model.describe()
    doc = {
        "model": str(model.folder),
        "ear": model.kind,
        **front,
        "sample_rate": model.sample_rate,
        "loop_seconds": model.loop_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "taps": [],
        "graph_nodes": model.graph_nodes,
        "has_stats": load_stats(model) is not None,
        "trained_steps": model.meta.get("step"),  # None for a blend: see "training"
        "training": training_of(model.meta),
        "origin": origin_of(model),  # None: "training" says what made it
    }
    frames = model.frames(model.loop_samples())
    for tap in model.taps:
        doc["taps"].append({"name": tap.name, "key": tap.key, "shape": list(tap.shape(frames)),
                            "layout": tap.layout_words()})
    if args.json:
        print_json(doc)
        return 0
    print(f"model      {doc['model']}  ({model.kind} ear {model.name}, {doc['parameters'] / 1e6:.2f} M parameters, "
          f"statistics: {'yes' if doc['has_stats'] else 'no'})")
    origin = doc["origin"]
    if origin is None:
        print(f"training   {describe_training(doc['training'])}")
    else:
        print(f"origin     {origin['network'] + ': ' if origin.get('network') else ''}{origin['made_by']}")
        print(f"weights    {origin['weights']}" + (f"; licence {origin['licence']}" if origin.get("licence") else ""))
    if "n_bins" in front:
        print(f"scalogram  {model.sample_rate} Hz, {front['n_bins']} bins from {front['fmin']:g} Hz at "
              f"{front['bins_per_octave']}/octave, {front['frames_per_second']:g} frames/s")
    elif "window" in front:
        print(f"audio      {model.sample_rate} Hz in frames of {front['window']} samples, {front['frames_per_second']:.3g} "
              f"a second" + (f"; {front['pitch_bins']} pitch bins, {front['fmin']:.1f} .. {front['fmax']:.1f} Hz"
                             if "pitch_bins" in front else ""))
    else:
        print(f"audio      {model.sample_rate} Hz, heard through the network's own front end")
    print(f"loop       {model.loop_seconds:g} s;  neuron graph: {model.graph_nodes} nodes in {len(model.taps)} taps")
    print("taps (channel x pitch x time for one loop):")
    for tap, row in zip(model.taps, doc["taps"]):
        c, p, t = row["shape"]
        print(f"  {tap.name:<14} {c:>4} x {p:>3} x {t:>3}" + ("" if tap.pitch_axis and tap.time_axis
                                                            else f"   ({tap.layout_words().split('; ', 1)[1]})"))
    return 0


def origin_of(model) -> dict | None:
    """What made an ear that has no training record of ours: what it says (`Ear.origin`), or,
    for a model file that says nothing, that it is the user's own; None for an ear we trained."""
    origin = model.origin()
    if origin is None and "model_file" in model.meta:
        origin = {"made_by": f"a model file of your own ({model.meta['model_file']}); its training is not recorded "
                             "here", "weights": f"{model.folder / 'model.safetensors'}", "licence": None}
    return origin


def training_of(meta: dict) -> dict | None:
    """What made a model, from its config's meta: its steps, data and starting point; for a
    blend, the weight and what made each parent (a parent may be a blend too). None when the
    meta does not say."""
    if "blend" in meta:
        blend, parents = meta["blend"], meta.get("parents", {})
        weight = float(blend.get("weight", 0.5))
        return {"blend": {"weight": weight, **{
            role: {"name": blend.get(role), "share": share, "training": training_of(parents.get(role) or {})}
            for role, share in (("base", 1.0 - weight), ("tuned", weight))}}}
    if meta.get("step") is None:
        return None
    train = meta.get("train") or {}
    data = train.get("data")
    return {"steps": int(meta["step"]), "data": [data] if isinstance(data, str) else data, "init": train.get("init")}


def describe_training(training: dict | None) -> str:
    """`training_of` in words: '3600 steps on synth', 'a blend: 0.25 x house (...) + 0.75 x real (...)'."""
    if training is None:
        return "not recorded (no steps in its config)"
    if "blend" in training:
        b = training["blend"]
        return "a blend: " + " + ".join(f"{b[role]['share']:g} x {b[role]['name']} "
                                        f"({describe_training(b[role]['training'])})" for role in ("base", "tuned"))
    text = f"{training['steps']} steps"
    if training.get("data"):
        text += f" on {', '.join(str(d) for d in training['data'])}"
    if training.get("init"):
        text += f", from {training['init']}"
    return text


def cmd_train(args) -> int:
    from immersions.train.trainer import TrainConfig, train

    cfg = TrainConfig(preset=args.preset, data=args.data or ["synth"], init=args.init, steps=args.steps, out=args.out,
                      batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, grad_clip=args.grad_clip,
                      negatives=args.negatives, seed=args.seed, resume=args.resume, device=args.device,
                      synth_tracks=args.synth_tracks, synth_seconds=args.synth_seconds, skip_steps=args.skip_steps,
                      cache=args.cache, recompute=args.recompute, save_every=args.save_every,
                      precision=args.precision, minutes=args.minutes, track_loss=args.track_loss,
                      views=args.views, within_folder=args.within_folder)
    if not cfg.track_loss >= 0:
        raise ImmersionsError("--track-loss must be 0 (CPC alone) or a positive weight")
    if cfg.track_loss > 0 and (cfg.batch_size % 2 or cfg.batch_size < 4):
        raise ImmersionsError("--track-loss needs an even --batch-size of 4 or more (two excerpts of each track)")
    if cfg.track_loss > 0 and cfg.negatives == "steps":
        raise ImmersionsError("--track-loss works with --negatives batch or times, not steps")
    if cfg.views and cfg.track_loss > 0:
        raise ImmersionsError("--views and --track-loss do not go together: choose one")
    if cfg.minutes is not None and not cfg.minutes > 0:
        raise ImmersionsError("--minutes must be positive")
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.save_every <= 0:
        raise ImmersionsError("--steps, --batch-size and --save-every must be positive")
    if cfg.skip_steps is not None and not 0 <= cfg.skip_steps <= 64:
        raise ImmersionsError("--skip-steps must be 0 .. 64")
    if cfg.synth_tracks <= 0 or not cfg.synth_seconds > 0:
        raise ImmersionsError("--synth-tracks and --synth-seconds must be positive")
    if cfg.recompute < 0:
        raise ImmersionsError("--recompute must be 0 (keep every activation) or more (blocks that recompute theirs)")
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
        if not doc and not Path(args.folder).is_dir():  # a cache outlives its folder: only then is this a typo
            raise ImmersionsError(f"no folder {args.folder} (and no corpus cache of one there): give the folder "
                                  "of music that `immersions corpus build` read")
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
        print_json(summary)
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
    if args.held_out and not args.data:
        raise ImmersionsError("--held-out says that the --data folders were never trained on: give --data DIR")
    model = load_model(args.model)
    if args.data:
        result = run_music_probe(model, args.data, by=args.by, max_tracks=args.tracks, progress=not args.json)
    else:
        result = run_probe(model, ProbeConfig(n_tracks=args.tracks or 15), progress=not args.json)
    if args.json:
        print_json(result)
        return 0
    print(probe_headline(result, args.data, args.held_out))
    rows = result.get("by_section") or result["by_track"]
    width = max(len(name) for name in rows)
    for name, row in rows.items():
        print(f"  {'ending in ' if 'by_section' in result else ''}{name:<{width}} {row['test_clips']:>4} test clips: "
              f"trained {100 * row['accuracy']:5.1f} %, untrained {100 * row['untrained_accuracy']:5.1f} %")
    return 0


def probe_headline(result: dict, data: list[str] | None, held_out: bool = False) -> str:
    """The probe's first line. The procedural tracks are held out by construction; tracks from
    folders are only called held out when the caller says so (--held-out)."""
    if data:
        tracks = f"{result['n_tracks']} tracks in {', '.join(data)}" + (", held out from training" if held_out else "")
    else:
        tracks = f"{result['n_tracks']} held-out procedural tracks"
    gain = ""
    if "gain_interval" in result:
        low, high = (100 * v for v in result["gain_interval"])
        gain = f", gain {100 * result['gain']:+.1f} points (95 %: {low:+.1f} to {high:+.1f})"
    return (f"linear probe on {tracks} ({result['train_clips']} train / {result['test_clips']} test clips): "
            f"trained {100 * result['accuracy']:.1f} %, untrained {100 * result['untrained_accuracy']:.1f} %"
            f"{gain}  ({result['seconds']:.0f} s)")


def cmd_stats(args) -> int:
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import compute_stats, save_stats
    from immersions.train.corpus import make_corpus
    from immersions.train.dataset import STATS_SEED_OFFSET

    from immersions.train.trainer import TrainConfig, stats_corpus

    model = load_model(args.model)
    sources = args.data or ["synth"]
    if len(sources) == 1 and sources[0] == "synth":  # as before: eight procedural tracks of held-out seeds
        corpus = make_corpus("synth", model.sample_rate, seed=STATS_SEED_OFFSET, n_tracks=8)
    else:  # as `train` measures them at the end of a run: its sources, mixed by weight
        corpus = stats_corpus(TrainConfig(data=sources, cache=args.cache, progress=False),
                              model.sample_rate, model.item_seconds)
    path = save_stats(compute_stats(model, corpus, clips=args.clips), model.folder)
    print(f"wrote {path}")
    return 0


def cmd_blend(args) -> int:
    """A blend of two ears of one architecture, with its own statistics and layout. Everything
    is made in memory first: an interrupted or failed blend writes nothing."""
    from immersions.layout.cache import LAYOUT_FILE, model_layout, write_layout
    from immersions.model.blend import blend
    from immersions.model.checkpoint import load_model, save_model
    from immersions.model.stats import compute_stats, save_stats
    from immersions.train.trainer import TrainConfig, stats_corpus

    if args.stats_clips <= 0:
        raise ImmersionsError("--stats-clips must be positive")
    base, tuned = load_model(args.base), load_model(args.tuned)
    front_end = None
    if base.cfg != tuned.cfg and base.cfg.preset != tuned.cfg.preset:
        # the base heard another front end (tiny's 16 kHz under the full band's 44.1 kHz): its weights go
        # onto the tuned model's, as `train --init BASE --preset P` started the tuned model from them
        from immersions.train.trainer import transplant

        front_end = base.cfg.preset
        moved = transplant(base, tuned.cfg.preset)
        moved.meta, moved.folder = base.meta, base.folder
        base = moved
    out = Path(args.out)
    if out.resolve() in (Path(base.folder).resolve(), Path(tuned.folder).resolve()):
        raise ImmersionsError(f"--out {out} is one of the blended models: write the blend to a new folder")
    model = blend(base, tuned, args.weight)
    cfg = TrainConfig(data=args.data or ["synth"], cache=args.cache, seed=args.seed, out=str(out), progress=False)
    stats = compute_stats(model, stats_corpus(cfg, model.sample_rate, model.item_seconds),
                          clips=args.stats_clips)
    laid = model_layout(model, stats, folder=None, save=False)  # its charges come from the new statistics
    model.meta["blend"]["stats_data"] = list(cfg.data)
    if front_end:
        model.meta["blend"]["base_preset"] = front_end
    save_model(model, out, model.meta)
    save_stats(stats, out)
    write_layout(out / LAYOUT_FILE, laid.key, laid.positions, laid.settings, laid.levels)
    print(f"wrote {out}: {1 - args.weight:g} x {args.base} + {args.weight:g} x {args.tuned}, "
          f"statistics on {', '.join(cfg.data)}")
    return 0


def cmd_balance(args) -> int:
    """Real music's octave balance, the target of the `balance` prior."""
    from immersions.audio.io import audio_files
    from immersions.dream.priors import BALANCE_FILE, LOWEST_OCTAVE_HZ, measure_balance, octave_edges
    from immersions.errors import ImmersionsError

    files = audio_files(args.music) if Path(args.music).is_dir() else []
    if not files:
        raise ImmersionsError(f"{args.music} is not a folder of audio files; fetch music with scripts/fetch-music.sh")
    profile, excerpts = measure_balance(files, args.sample_rate)
    edges = octave_edges(args.sample_rate)
    out = Path(args.out or Path(BALANCE_FILE).name)  # never the shipped target unless --out names it
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "about": "mean power per octave band in dB, loudness removed (immersions.audio.measures.octave_profile)",
        "made_by": f"immersions balance {args.music}", "files": len(files), "excerpts": excerpts,
        "sample_rate": args.sample_rate, "lowest_band_hz": LOWEST_OCTAVE_HZ,
        "band_edges_hz": [float(e) for e in edges], "profile_db": [round(float(v), 2) for v in profile],
    }, indent=1) + "\n")
    print(f"wrote {out}: {excerpts} excerpts of {len(files)} files (the dreams' target is assets/{BALANCE_FILE}: "
          "--out there to replace it)")
    return 0


def cmd_synth(args) -> int:
    from immersions.audio.io import write_wav
    from immersions.synth import render_track, write_starter_clips

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


def add_parsers(sub) -> None:
    p = sub.add_parser("info", help="describe a model: front end, taps, neuron graph size")
    p.add_argument("--model", help="model folder or name in models/ (default: the shipped model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a CPC model (also under torchrun for DDP)")
    p.add_argument("--preset", help="seed, tiny, hifi or full (default: tiny; with --init, that model's own, "
                   "or a preset of the same shapes to start from its weights: --init models/blend --preset full)")
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
                   "(a new model, or one started with --init; default: the preset's, 0)")
    p.add_argument("--synth-tracks", type=int, default=48, help="procedural tracks held in memory")
    p.add_argument("--synth-seconds", type=float, default=48.0,
                   help="length of each procedural track (whole tracks play out their arrangement)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out (exactly: the "
                   "optimizer, the step, the batches and the random generator go on as the uninterrupted run's)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the network in bfloat16 where the hardware computes it natively (auto), always (bf16: "
                   "emulated, slower, on CPUs without AVX512-BF16/AMX), or never (fp32)")
    p.add_argument("--minutes", type=float, metavar="M", help="a time budget: the run ends (checkpoint and "
                   "statistics, as at its last step) at the first step past M minutes; --resume goes on from there")
    p.add_argument("--track-loss", type=float, default=0.0, metavar="W",
                   help="add W times a second objective: the last context vector of an excerpt picks out another "
                   "excerpt of its track, at least an excerpt away, from the rest of the batch (batches become two "
                   "excerpts of each of half as many tracks; see app/immersions/train/track.py). 0: CPC alone")
    p.add_argument("--views", action="store_true",
                   help="hear every excerpt through two random colourings (level, tilt, top end): each one's context "
                   "predicts the other's encodings, so no prediction leans on a file's mastering or codec band "
                   "(twice the encoder's work a step; see app/immersions/train/colour.py)")
    p.add_argument("--within-folder", action="store_true",
                   help="draw each batch's excerpts of a --data folder from one of its subfolders (one package, "
                   "among those with a file for each excerpt): the negatives are that package's other tracks, so "
                   "what a package's files share (mastering, codec, style) tells nothing")
    p.add_argument("--save-every", type=int, default=250, metavar="STEPS", help="steps between checkpoints")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--cache", metavar="DIR", help="where folders of audio are decoded to "
                   "(default: the corpus folder under the user's cache, ~/.cache/immersions/corpus)")
    p.add_argument("--recompute", type=int, default=0, metavar="BLOCKS",
                   help="the first BLOCKS encoder blocks recompute their activations in backward instead of "
                   "keeping them: less memory, slower steps, the same training (0: none, 8: all; "
                   "see docs/benchmarks.md)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("corpus", help="decode a folder of music once into the training cache, or describe the cache")
    p.add_argument("action", choices=("build", "info"))
    p.add_argument("folder")
    p.add_argument("--rate", type=int, default=16000, help="the model's sample rate (44100 for full and hifi, 16000 for the others)")
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
    p.add_argument("--held-out", action="store_true",
                   help="with --data: the folders hold music the ear never trained on, and the report says so")
    p.add_argument("--tracks", type=int, help="how many tracks (procedural: 15; real music: all, or the N longest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("stats", help="recompute a model's activation statistics")
    p.add_argument("--model")
    p.add_argument("--data", action="append", metavar="SOURCE[:WEIGHT]",
                   help="where the statistics are measured, as `train --data` (repeat to mix; default synth)")
    p.add_argument("--cache", metavar="DIR", help="corpus cache root, as `train --cache`")
    p.add_argument("--clips", type=int, default=64)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("blend", help="blend two ears of one architecture (one fine-tuned from the other) "
                       "weight by weight (WiSE-FT)")
    p.add_argument("base", help="the model the other was fine-tuned from (a folder or a name in models/)")
    p.add_argument("tuned", help="the fine-tuned model")
    p.add_argument("--weight", type=float, required=True,
                   help="how much of the tuned model, 0 .. 1: weights = (1 - w) base + w tuned")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--data", action="append", metavar="SOURCE[:WEIGHT]",
                   help="what the blend's activation statistics are measured on, as `train --data` "
                   "(default: synth); give the tuned model's training sources")
    p.add_argument("--stats-clips", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="as `train --seed`: which excerpts the statistics hear")
    p.add_argument("--cache", metavar="DIR", help="corpus cache root, as `train --cache`")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("balance", help="measure real music's octave balance (the target of the `balance` prior)")
    p.add_argument("music", help="folder of music files (e.g. music/train from scripts/fetch-music.sh)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--out", help="JSON file (default: music-balance.json in this folder; the shipped target, "
                                 "assets/reference/music-balance.json, changes only when --out names it)")
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("synth", help="render procedural house music to WAV (and its scalogram to PNG)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--out", default="house.wav")
    p.add_argument("--png", help="also draw the scalogram to this PNG")
    p.add_argument("--starter-clips", metavar="DIR", help="write the starter clips (silence, noise, kick, groove) to DIR")
    p.set_defaults(func=cmd_synth)
