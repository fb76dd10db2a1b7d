"""The `immersions` parser and `main`: parse, call one function, print. Each command family
adds its own subcommands (cli/ear.py, dream.py, layout.py, perform.py, midi.py, remote.py,
install.py, bench.py); the order below is the order `immersions --help` lists them in.

A user-facing error (ImmersionsError) prints as one line and exits 2; --debug shows the
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from immersions.cli import bench, dream, ear, install, layout, midi, perform, remote
from immersions.errors import ImmersionsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="immersions", description="Hear and see how a neural network listens.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ear.add_parsers(sub)  # info, train, corpus, probe, stats, blend, balance, synth
    dream.add_parsers(sub)
    layout.add_parsers(sub)
    perform.add_perform_parser(sub)
    midi.add_midi_parser(sub)
    remote.add_remote_parsers(sub)  # serve, keys
    install.add_install_parser(sub)
    perform.add_device_parsers(sub)  # devices, monitors, render
    bench.add_parsers(sub)
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
