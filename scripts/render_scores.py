"""Render scores from music21's corpus to audio: `python scripts/render_scores.py OUT [--hours H]`.

Real, human-composed music as a training source beside the Debian game-music packages:
the multi-part pieces of music21's corpus (Palestrina, Bach, Monteverdi, the trecento,
Beethoven, Mozart, Haydn, Josquin, the Schumanns, ...; folk-tune books of one melody are
left out) are written to MIDI by music21 and played by FluidSynth through the General MIDI
soundfont `fluid-soundfont-gm`. Each piece gets one ensemble, drawn with a seed from the
piece's name (strings, winds, brass, organ, choir, keyboards, a mixed chamber band), its
parts given instruments of that ensemble from the top voice down, so the same score always
sounds the same.

Out: OUT/<composer>/<piece>.flac (44.1 kHz, mono, peak at most -1 dBFS), pieces in a seeded
order until `--hours` are rendered, and OUT/copyright saying where it came from. Needs the
`scores` extra (music21) and the Debian packages fluidsynth and fluid-soundfont-gm, which
scripts/render-scores.sh installs. A score that will not parse or render is skipped and named.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

RATE = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
MIN_SECONDS, MAX_SECONDS = 30.0, 600.0
TAIL_SECONDS = 5.0
PREFERRED = (".mxl", ".musicxml", ".xml", ".krn")  # of one piece's formats, the first found
SHARE = 0.35  # no composer fills more of the hours than this (Palestrina's masses are 1 318 of the scores)
# one-melody tune books, theory exercises and demos: not ensemble music
SKIP = {"ryansMammoth", "oneills1850", "essenFolksong", "airdsAirs", "miscFolk", "leadSheet", "theoryExercises",
        "demos", "nottingham-dataset"}
# General MIDI programs, top voice first
ENSEMBLES = {
    "strings": [40, 40, 41, 42, 43],  # violins, viola, cello, contrabass
    "string orchestra": [48, 48, 49, 48, 43],
    "winds": [73, 68, 71, 70, 70],  # flute, oboe, clarinet, bassoon
    "brass": [56, 60, 57, 58, 58],  # trumpet, horn, trombone, tuba
    "organ": [19, 19, 19, 19, 19],
    "choir": [52, 52, 52, 52, 52],
    "keyboards": [0, 0, 0, 0, 0],
    "harpsichord": [6, 6, 6, 6, 6],
    "chamber": [73, 40, 71, 42, 70],  # flute, violin, clarinet, cello, bassoon
    "guitars and bass": [24, 25, 24, 32, 33],
    "mallets and pads": [11, 89, 12, 88, 33],  # vibraphone, warm pad, marimba, new-age pad, bass
}

log = logging.getLogger("render_scores")


def _rank(path: Path) -> int:
    return PREFERRED.index(path.suffix) if path.suffix in PREFERRED else len(PREFERRED)


def pieces(seed: int) -> list[tuple[str, str, str]]:
    """(composer, piece, corpus path) of every ensemble piece, in a seeded order. A piece is its path
    under the composer's folder (Beethoven's quartets each have a movement4); where the corpus holds
    it in more than one format, MusicXML is taken, then Humdrum, then the rest. Roman-numeral
    analyses (.rntxt) are not the music."""
    from music21 import corpus

    best: dict[tuple[str, str], Path] = {}
    for path in corpus.getCorePaths():
        parts = Path(str(path).split("/corpus/")[-1]).parts
        composer, piece = parts[0], "-".join(Path(*parts[1:]).with_suffix("").parts)
        if composer in SKIP or path.suffix == ".rntxt":
            continue
        held = best.get((composer, piece))
        if held is None or _rank(path) < _rank(held):
            best[(composer, piece)] = path
    found = sorted((composer, piece, str(path)) for (composer, piece), path in best.items())
    random.Random(seed).shuffle(found)
    return found


def ensemble_for(name: str) -> tuple[str, list[int]]:
    keys = sorted(ENSEMBLES)
    key = keys[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(keys)]
    return key, ENSEMBLES[key]


def write_midi(path: str, name: str, midi_path: Path) -> str | None:
    """The score as MIDI with the piece's ensemble; its name, or None where it is not ensemble music."""
    from music21 import converter, instrument, midi, stream

    score = converter.parse(path)
    if isinstance(score, stream.Opus):
        return None  # a book of tunes
    parts = list(score.parts)
    if len(parts) < 2:
        return None
    key, programs = ensemble_for(name)
    for i, part in enumerate(parts):
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            old.activeSite.remove(old)
        program = programs[min(i, len(programs) - 1)]
        part.insert(0, instrument.instrumentFromMidiProgram(program))
    mf = midi.translate.music21ObjectToMidiFile(score)
    mf.open(str(midi_path), "wb")
    try:
        mf.write()
    finally:
        mf.close()
    return key


def render(midi_path: Path) -> np.ndarray:
    """FluidSynth's rendering, mono float32: the MIDI file's length and a 5-s tail of reverb, no more
    (on some scores FluidSynth's fast render never stops: it is read from a pipe and stopped)."""
    import mido

    length = mido.MidiFile(str(midi_path)).length
    if length > MAX_SECONDS:  # a score whose tempo marks make it hours long
        raise ValueError(f"{length / 60.0:.0f} minutes long as written")
    wanted = int((length + TAIL_SECONDS) * RATE) * 4  # 16-bit stereo
    play = subprocess.Popen(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(RATE), "-T", "raw", "-O", "s16",
                             "-F", "-", str(SOUNDFONT), str(midi_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    chunks, got = [], 0
    try:
        while got < wanted:
            chunk = play.stdout.read(min(1 << 20, wanted - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        play.kill()
        play.wait()
    data = b"".join(chunks)
    frames = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768.0
    mono = frames.mean(axis=1)
    loud = np.flatnonzero(np.abs(mono) > 1e-4)
    if len(loud) == 0:
        return mono[:0]
    mono = mono[: loud[-1] + RATE // 2]  # the reverb's tail, not the silence after it
    peak = float(np.max(np.abs(mono)))
    return mono * (0.89 / peak) if peak > 0.89 else mono


COPYRIGHT = """Rendered by scripts/render_scores.py from the corpus of music21 {version}
(https://github.com/cuthbertLab/music21; its corpus files are distributed with it under its BSD
3-clause licence, the works themselves are in the public domain), played by FluidSynth through the
FluidR3 General MIDI soundfont (Debian package fluid-soundfont-gm, MIT licence, by Frank Wen).
Seed {seed}; {count} pieces, {hours:.2f} hours.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/render_scores.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--hours", type=float, default=6.0, help="stop once this much is rendered (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="look at no more than this many scores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="render_scores: %(message)s")
    warnings.filterwarnings("ignore")
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        print("render_scores: needs fluidsynth and fluid-soundfont-gm; run scripts/render-scores.sh, which "
              "installs them", file=sys.stderr)
        return 2
    try:
        import music21
        import soundfile
    except ImportError as err:
        print(f"render_scores: {err}; install the scores extra: .venv/bin/pip install -e '.[scores]'", file=sys.stderr)
        return 2
    total, count, skipped, by_composer = 0.0, 0, 0, {}
    todo = pieces(args.seed)[: args.limit]
    with tempfile.TemporaryDirectory(prefix="immersions-scores-") as tmp:
        tmp = Path(tmp)
        for composer, stem, path in todo:
            if total >= args.hours * 3600.0:
                break
            if by_composer.get(composer, 0.0) >= SHARE * args.hours * 3600.0:
                continue
            name = f"{composer}-{stem}"
            out = args.out / composer / f"{stem}.flac"
            if out.exists():  # a rerun goes on where the last one stopped
                seconds = soundfile.info(str(out)).duration
                total, count = total + seconds, count + 1
                by_composer[composer] = by_composer.get(composer, 0.0) + seconds
                continue
            try:
                key = write_midi(path, name, tmp / "piece.mid")
                if key is None:
                    continue
                audio = render(tmp / "piece.mid")
            except Exception as err:  # music21 and FluidSynth raise many kinds; the piece is skipped, named
                log.warning("skipped %s: %s", name, str(err).splitlines()[0][:160] if str(err) else type(err).__name__)
                skipped += 1
                continue
            seconds = len(audio) / RATE
            if not MIN_SECONDS <= seconds <= MAX_SECONDS:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(out), audio, RATE, format="FLAC", subtype="PCM_16")
            total, count = total + seconds, count + 1
            by_composer[composer] = by_composer.get(composer, 0.0) + seconds
            log.info("%s (%s): %.0f s; %.2f h in %d pieces", name, key, seconds, total / 3600.0, count)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "copyright").write_text(COPYRIGHT.format(version=music21.__version__, seed=args.seed, count=count,
                                                         hours=total / 3600.0))
    log.info("%d pieces, %.2f h in %s (%d scores skipped); hours by composer: %s", count, total / 3600.0, args.out,
             skipped, ", ".join(f"{k} {v / 3600.0:.2f}" for k, v in sorted(by_composer.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
