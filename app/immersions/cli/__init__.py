"""The command line: `immersions COMMAND ...`, one module per command family (ear, dream,
layout, perform, midi, remote, install, bench), the shared bits in common.py and the
parser and `main` in parser.py. Thin: parse, check, call one function of the room that
does the work, print. Nothing outside cli/ imports from here.
"""

from immersions.cli.common import LAUNCHED  # noqa: F401  (first: the launch time is taken before heavy imports)
from immersions.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
