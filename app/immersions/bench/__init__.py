"""`immersions bench ...`: honest timing scripts, each printing one JSON object.

This room holds the dispatcher (below), the kit every benchmark shares (`kit.py`: the
environment block, timing, argument checks) and one module per benchmark. Nothing outside
`bench/` and the command line imports from here: production code never depends on a
benchmark. A new benchmark is a module here with a function of the parsed arguments that
returns a dict, one line in `BENCHMARKS` (the command line offers its keys), and any
flags of its own in `cli/bench.py`.
"""

from __future__ import annotations

import importlib

from immersions.errors import ImmersionsError

# name -> "module:function"; a function of the parsed command-line arguments. Modules load
# only when their benchmark runs: most pull in torch, OpenGL or audio devices.
BENCHMARKS = {
    "model": "model:bench_model",
    "dream": "dream:bench_dream",
    "layout": "layout:bench_layout",
    "render": "render:bench_render",
    "audio": "audio:bench_audio_args",
    "remote": "remote:bench_remote",
    "soak": "soak:bench_soak",
    "video": "video:bench_video",
    "cap": "video:bench_cap",
    "cue": "cue:bench_cue",
    "link": "link:bench_link",
    "sound": "sound:bench_sound",
    "compound": "compound:bench_compound",
    "corpus": "corpus:bench_corpus",
    "train": "corpus:bench_train",
    "listen": "listen:bench_listen",
}


def run(what: str, args) -> dict:
    if what not in BENCHMARKS:
        raise ImmersionsError(f"unknown benchmark '{what}': choose one of {', '.join(BENCHMARKS)}")
    module, function = BENCHMARKS[what].split(":")
    return getattr(importlib.import_module(f"immersions.bench.{module}"), function)(args)
