"""The `immersions` parser and `main`: parse, call one function, print. Each command family
adds its own subcommands (cli/ear.py, dream.py, layout.py, perform.py, midi.py, remote.py,
install.py, bench.py); the order below is the order `immersions --help` lists them in.

A user-facing error (ImmersionsError) prints as one line and exits 2; --debug shows the
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
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


SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for `cat big | head`, and what pipefail sees


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader that stopped early (| head) is met below
        return status
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe or socket broke: not ours to hide
        return _closed_pipe()
    except ImmersionsError as err:
        if args.debug:
            raise
        print(f"immersions: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("immersions: interrupted", file=sys.stderr)
        return 130


def _closed_pipe() -> int:
    """The reader of our output went away (`immersions info --json | head`): stop quietly, as
    Python's documentation on SIGPIPE recommends, pointing stdout at devnull so that the flush
    at exit finds nothing to write into the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout to redirect
        pass
    return SIGPIPE_STATUS


def _stdout_closed() -> bool:
    """Whether the pipe on stdout has lost its reader (the write end then polls as an error);
    True where that cannot be asked."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no real stdout
        return True
