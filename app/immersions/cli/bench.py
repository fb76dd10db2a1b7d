"""`immersions bench NAME`: the benchmarks' flags; the benchmarks themselves live in bench/."""

from __future__ import annotations

from immersions.bench import BENCHMARKS
from immersions.cli.common import print_json


def cmd_bench(args) -> int:
    from immersions import bench

    print_json(bench.run(args.what, args))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks; print JSON")
    p.add_argument("what", choices=list(BENCHMARKS))
    p.add_argument("--data", metavar="DIR", help="corpus: also decode this folder; train: the folder (10 h or more) "
                   "trained from")
    p.add_argument("--cache", metavar="DIR", help="corpus, train: cache root (default: a temporary folder)")
    p.add_argument("--baseline-hours", type=float, default=1.0,
                   help="train: hours of the folder held in memory for the in-memory baseline")
    p.add_argument("--no-rss", action="store_true", help="train: skip the peak-memory run of `immersions train`")
    p.add_argument("--no-build", action="store_true", help="train: use the folder's cache as it stands "
                   "(another build may still be adding to it); implies --no-rss")
    p.add_argument("--seconds", type=float, help="audio: how long the player runs (default 60); link: (default 120); "
                                                 "remote: each throughput run (default 20); cue: the dreaming the "
                                                 "selection's rise is measured after (default 60)")
    p.add_argument("--fade-bars", type=int, default=2, help="cue: the cue deck fades in over this many bars")
    p.add_argument("--layer", type=float, help="cue: the selection's layer position 0..1 (default 0.25)")
    p.add_argument("--channel", type=float, help="cue: the selection's channel position 0..1 (default 0.7)")
    p.add_argument("--outage", type=float, default=2.0, help="remote: seconds the server stays down")
    p.add_argument("--workers", type=int, default=1, help="remote: dream workers on the server")
    p.add_argument("--minutes", type=float, default=10.0, help="soak: how long the installation runs")
    p.add_argument("--fade-every-bars", type=int, default=0, help="soak: two decks, the crossfader moved to the "
                   "other deck this often (0: one deck)")
    p.add_argument("--cue-device", help="soak: a cue output too (null: miniaudio's NULL device)")
    p.add_argument("--model", help="remote, soak, cap, cue, sound, compound, listen: the model (default: the shipped one); "
                   "dream: a model measured instead of --presets (e.g. crepe-tiny)")
    p.add_argument("--seed", type=int, default=0, help="soak: the autopilot's seed; sound, compound: the dreams' seed")
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--presets", default="tiny,seed,hifi", help="dream, model: presets measured; train: presets "
                   "compared (choices), the first one also for --data")
    p.add_argument("--precisions", default="fp32,bf16", help="dream, train: the network's precisions compared "
                   "(fp32, bf16, auto: bf16 where the processor has it natively)")
    p.add_argument("--batches", default="1,4,8", help="dream: jitter copies per step")
    p.add_argument("--baseline-batch", type=int, default=4, help="dream: batch compared with the baseline")
    p.add_argument("--compare-edges", default="200000,1500000", help="layout: sizes of the graphs compared with sfdp")
    p.add_argument("--device", default="auto", help="dream, layout: auto, cpu, cuda")
    p.add_argument("--frames", type=int, default=60, help="render: frames timed per setting")
    p.add_argument("--edge-counts", default="0,100000,1000000", help="render: connection counts to draw")
    p.add_argument("--maps", default="default,seed", help="render: 'default' (the shipped model) and/or preset names")
    p.add_argument("--sizes", default="1280x720,1920x1080", help="render: picture sizes WxH")
    p.add_argument("--bloom", choices=("both", "on", "off"), default="both", help="render: with bloom, without, or both")
    p.add_argument("--steps", type=int, help="sound: dream steps per grid cell (default 200; --quick 20); "
                   "compound: steps per dream (default 50); train: steps timed per corpus (default 30)")
    p.add_argument("--starts", help="sound, compound: start clips, e.g. silence,noise,kick,groove")
    p.add_argument("--quiet-weights", help="compound: quiet strengths compared, e.g. 1,2,4 (default: quiet_weight's default, 2)")
    p.add_argument("--groups", help="sound: tap groups, e.g. early,middle,late,context")
    p.add_argument("--channels", help="sound: channel positions in 0..1, e.g. 0.2,0.6")
    p.add_argument("--variants", help="sound: dream variants side by side, e.g. before,default,beat_jitter")
    p.add_argument("--quick", action="store_true", help="sound: a small grid (silence, noise; early, context; 20 steps)")
    p.add_argument("--reference", help="sound: a folder of real music to measure beside the dreams")
    p.add_argument("--reference-count", type=int, default=24, help="sound: excerpts taken from --reference")
    p.add_argument("--copies", type=int, default=4, help="sound, compound: jitter copies per dream step")
    p.add_argument("--out", help="sound: folder for the WAVs and spectrogram PNGs")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="sound, compound: any dream parameter for every variant")
    p.set_defaults(func=cmd_bench)
