"""What every command family shares: the launch time, JSON printing, sizes, video-out flags."""

from __future__ import annotations

import json
import time

LAUNCHED = time.perf_counter()  # before the heavy imports: `perform` reports its start-up time from here

from immersions.errors import ImmersionsError  # noqa: E402


def print_json(doc: dict) -> None:
    print(json.dumps(doc, indent=2))


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, e.g. 1920x1080."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ImmersionsError(f"size '{text}' is not WIDTHxHEIGHT, e.g. 1920x1080") from None
    return w, h


def add_video_out_arguments(p) -> None:
    """--video-out and --video-out-overlay (perform, install, render)."""
    v = p.add_argument_group("video out (other applications take the picture)")
    v.add_argument("--video-out", metavar="TARGET",
                   help="ndi[:NAME], syphon[:NAME] (macOS), spout[:NAME] (Windows) or v4l2[:/dev/videoN] (Linux)")
    v.add_argument("--video-out-overlay", action="store_true", help="send the overlay too (default: the map only)")
