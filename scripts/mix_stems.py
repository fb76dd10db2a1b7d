"""Mix each song folder's stems into one track: `python scripts/mix_stems.py FOLDER`.

Frets on Fire songs come as stems (song.ogg, guitar.ogg, and rhythm.ogg or drums.ogg where a
song has them), meant to be played together. For every folder under FOLDER that holds more
than one stem, the stems are decoded to mono at 44.1 kHz, summed (the longest sets the
length), scaled down only if the sum would clip, written as mix.wav, and the stems removed.
A folder with a single audio file is left as it is. Used by scripts/fetch-music.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from immersions.audio.io import load_audio, write_wav

RATE = 44100
STEM_SUFFIXES = {".ogg", ".oga", ".opus", ".mp3", ".flac", ".wav"}


def mix_folder(folder: Path) -> Path | None:
    stems = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in STEM_SUFFIXES
                   and p.stem.lower() not in {"preview", "mix"})
    if len(stems) < 2:
        return None
    tracks = [load_audio(p, RATE) for p in stems]
    mix = np.zeros(max(len(t) for t in tracks), dtype=np.float32)
    for track in tracks:
        mix[: len(track)] += track
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    if peak > 0.99:
        mix *= 0.99 / peak
    out = write_wav(folder / "mix.wav", mix, RATE)
    for p in stems:
        p.unlink()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python scripts/mix_stems.py FOLDER", file=sys.stderr)
        return 2
    root = Path(argv[0])
    mixed = [out for folder in sorted(p for p in root.rglob("*") if p.is_dir()) if (out := mix_folder(folder))]
    if (root_mix := mix_folder(root)) is not None:
        mixed.append(root_mix)
    print(f"mix_stems: {len(mixed)} songs mixed in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
