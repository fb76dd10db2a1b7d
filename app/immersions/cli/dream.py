"""`immersions dream`: dream a loop offline, one selection or a journey of them."""

from __future__ import annotations

from immersions.cli.common import print_json
from immersions.errors import ImmersionsError


def cmd_dream(args) -> int:
    from immersions.dream.run import dream_clip, journey

    if args.journey:
        single = [flag for flag, given in (("--layer", args.layer is not None), ("--channel", args.channel is not None),
                                           ("--pitch", args.pitch is not None), ("--time", args.time is not None),
                                           ("--keep", args.keep)) if given]
        if single:
            raise ImmersionsError(f"{', '.join(single)} {'picks' if len(single) == 1 else 'pick'} one selection, and "
                                  "--journey's stages pick their own: "
                                  "drop one or the other (--steps, --seed, --start and --set do apply to a journey)")
        doc = journey(args.journey, args.out, args.model, progress=not args.json, steps=args.steps, seed=args.seed,
                      start=args.start, settings=args.set)
        if args.json:
            print_json(doc)
        else:
            print(f"journey {doc['journey']} from {doc['start']}, seed {doc['seed']}:")
            for r in doc["stages"]:
                print(f"stage {r['stage']}: {r['layer']}: {r['steps']} steps, objective {r['objective_start']:.3f} -> "
                      f"{r['objective_end']:.3f} (control {r['control_start']:.3f} -> {r['control_end']:.3f}) "
                      f"-> {r['wav']}")
        return 0
    if args.layer is None:
        raise ImmersionsError("say which layer to dream (--layer NAME or INDEX), or give --journey FILE")
    result = dream_clip(args.model, args.layer, args.channel, args.pitch, args.time, args.keep,
                        args.start or DEFAULT_START, DEFAULT_STEPS if args.steps is None else args.steps,
                        DEFAULT_SEED if args.seed is None else args.seed, args.out, args.set, progress=not args.json)
    if args.json:
        print_json(result.as_dict())
    else:
        print(f"objective {result.objective_start:.3f} -> {result.objective_end:.3f} "
              f"(control {result.control_start:.3f} -> {result.control_end:.3f}), "
              f"{result.steps_per_second:.1f} steps/s -> {args.out}")
    return 0


DEFAULT_START, DEFAULT_STEPS, DEFAULT_SEED = "noise", 50, 0  # one selection; a journey's come from its file


def add_parsers(sub) -> None:
    p = sub.add_parser("dream", help="optimize a loop so that a selected region of the network fires",
                       description="Dream one selection (--layer ...) or a journey of them (--journey FILE). "
                                   "With --journey, a value given on the command line wins over the file's: --steps "
                                   "over every stage's steps, --seed and --start over the file's, --set over its "
                                   "[params] and each stage's params; what is not given comes from the file "
                                   "(else 40 steps a stage, seed 0, noise). --layer, --channel, --pitch, --time and "
                                   "--keep pick one selection and are refused with --journey.")
    p.add_argument("--model")
    p.add_argument("--layer", help="tap name ('enc 3 conv 2'), key (enc3.conv2) or index")
    p.add_argument("--channel", metavar="POS[:SPAN]", help="channel position and span in 0..1 (default 0.5:0)")
    p.add_argument("--pitch", metavar="POS[:SPAN]", help="pitch position and span (default 0.5:1)")
    p.add_argument("--time", metavar="POS[:SPAN]", help="time position and span (default 0.5:1)")
    p.add_argument("--keep", action="store_true", help="add to the previous selection (journeys)")
    p.add_argument("--start", help="silence, noise, kick, groove, or an audio file (default: noise; with --journey: "
                                   "overrides the file's start)")
    p.add_argument("--steps", type=int, help="optimization steps (default 50; with --journey: every stage's, "
                                             "overriding the file's)")
    p.add_argument("--seed", type=int, help="default 0; with --journey: overrides the file's seed")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="any dreaming parameter, e.g. learning_rate=-1.5 "
                                                                        "(with --journey: over the file's params)")
    p.add_argument("--journey", metavar="FILE.toml", help="run a list of selections, each from the previous result; "
                                                          "--steps, --seed, --start and --set given here win over the file's")
    p.add_argument("--out", default="dream.wav", help="WAV file (or folder for --journey)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dream)
