"""`immersions dream`: dream a loop offline, one selection or a journey of them."""

from __future__ import annotations

from immersions.cli.common import print_json
from immersions.errors import ImmersionsError


def cmd_dream(args) -> int:
    from immersions.dream.run import dream_clip, journey

    if args.journey:
        results = journey(args.journey, args.out, args.model, progress=not args.json)
        if args.json:
            print_json({"stages": results})
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
        print_json(result.as_dict())
    else:
        print(f"objective {result.objective_start:.3f} -> {result.objective_end:.3f} "
              f"(control {result.control_start:.3f} -> {result.control_end:.3f}), "
              f"{result.steps_per_second:.1f} steps/s -> {args.out}")
    return 0


def add_parsers(sub) -> None:
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
