"""scripts/fetch-music.sh takes only a package's music (and its copyright file), and mixes the
Frets on Fire songs' stems into one track each. Real .deb files, built here with dpkg-deb."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from immersions.audio.io import load_audio

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")


def _tone(path: Path, hz: float, seconds: float = 1.0, rate: int = 44100) -> None:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate, format="OGG")


def _deb(folder: Path, package: str, files: dict[str, object]) -> Path:
    """A real binary package holding `files` (path -> tone frequency, or text)."""
    root = folder / f"root-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        f"Description: test package\n")
    doc = root / "usr/share/doc" / package / "copyright"
    doc.parent.mkdir(parents=True)
    doc.write_text(f"{package}: GPL-2+\n")
    for rel, content in files.items():
        path = root / rel
        if isinstance(content, float):
            _tone(path, content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(content))
    debs = folder / "debs"
    debs.mkdir(exist_ok=True)
    out = debs / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True, capture_output=True)
    return debs


def test_fetch_takes_only_the_music_folder_and_the_copyright_file_and_mixes_stems(tmp_path):
    games = "usr/share/games"
    _deb(tmp_path, "hedgewars-data", {
        f"{games}/hedgewars/Data/Music/Art.ogg": 220.0,
        f"{games}/hedgewars/Data/Music/readme.txt": "not music",
        f"{games}/hedgewars/Data/Sounds/explosion.ogg": 880.0,  # a sound effect: left behind
        f"{games}/hedgewars/Data/Graphics/flag.png": "png",
    })
    song = f"{games}/fretsonfire/data/songs/sectoid/Feelings"
    debs = _deb(tmp_path, "fretsonfire-songs-sectoid", {
        f"{song}/song.ogg": 330.0, f"{song}/guitar.ogg": 550.0,
        f"{song}/notes.mid": "midi", f"{song}/song.ini": "[song]",
    })
    dest = tmp_path / "music"
    run = subprocess.run(["bash", str(ROOT / "scripts/fetch-music.sh"), str(dest), "hedgewars-data",
                          "fretsonfire-songs-sectoid"], env={"FETCH_MUSIC_DEBS": str(debs), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["fretsonfire-songs-sectoid/Feelings/mix.wav", "fretsonfire-songs-sectoid/copyright",
                     "hedgewars-data/Art.ogg", "hedgewars-data/copyright"]
    # the mix holds both stems: 330 Hz and 550 Hz
    mix = load_audio(dest / "fretsonfire-songs-sectoid/Feelings/mix.wav", 44100)
    spectrum = np.abs(np.fft.rfft(mix))
    freqs = np.fft.rfftfreq(len(mix), 1 / 44100)
    strongest = sorted(freqs[np.argsort(spectrum)[-2:]].round())
    assert strongest == [330.0, 550.0]
    assert "2 files" not in run.stdout and "hedgewars-data (1.0-1): 1 files" in run.stdout


def test_fetch_refuses_a_package_it_may_not_take(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "scripts/fetch-music.sh"), str(tmp_path), "freedoom"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "not one of the packages" in run.stderr
