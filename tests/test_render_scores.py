"""scripts/render_scores.py: music21's corpus scores, played by FluidSynth through the General MIDI
soundfont, as training music. Real music21, real FluidSynth: the `scores` extra and the Debian
packages fluidsynth and fluid-soundfont-gm, which scripts/test.sh installs (IMMERSIONS_EXTRAS=...,scores)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
pytest.importorskip("music21")
pytestmark = pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(),
                                reason="needs fluidsynth and fluid-soundfont-gm (scripts/render-scores.sh installs them)")


def render(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts/render_scores.py"), str(out), *args],
                          capture_output=True, text=True, timeout=600)


def test_scores_become_ensemble_music_once_and_a_rerun_goes_on(tmp_path):
    out = tmp_path / "scores"
    run = render(out, "--hours", "0.05", "--limit", "40")
    assert run.returncode == 0, run.stderr
    pieces = sorted(out.rglob("*.flac"))
    assert pieces, run.stderr
    total = 0.0
    for piece in pieces:
        audio, rate = soundfile.read(str(piece), dtype="float32")
        assert rate == 44100 and audio.ndim == 1
        assert 30.0 <= len(audio) / rate <= 600.0
        assert 0.01 < float(np.max(np.abs(audio))) <= 0.9  # heard, and never clipped
        spectrum = np.abs(np.fft.rfft(audio[: 30 * rate])) ** 2
        assert spectrum[: int(4000 * 30)].sum() > 0.9 * spectrum.sum()  # tones, not noise: their power lies low
        total += len(audio) / rate
    assert 0.05 * 3600.0 <= total < 0.05 * 3600.0 + 600.0  # stopped once the hours asked were there
    assert {p.parent.name for p in pieces} <= {"palestrina", "bach", "trecento", "monteverdi", "beethoven",
                                               "mozart", "haydn", "josquin", "schumann_robert", "schumann_clara",
                                               "schoenberg", "corelli", "handel", "chopin", "schubert", "verdi",
                                               "weber", "webern", "joplin", "beach", "ciconia", "cpebach",
                                               "johnson_j_r", "liliuokalani", "luca", "lusitano"}
    notice = (out / "copyright").read_text()
    assert "music21" in notice and "fluid-soundfont-gm" in notice and f"{len(pieces)} pieces" in notice
    before = {p: p.stat().st_mtime_ns for p in pieces}
    again = render(out, "--hours", "0.3", "--limit", "30")  # more hours: the pieces made are kept
    assert again.returncode == 0, again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert len(list(out.rglob("*.flac"))) > len(pieces)


def test_the_same_score_always_gets_the_same_ensemble():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from render_scores import ENSEMBLES, ensemble_for
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    names = [f"bach-bwv{n}" for n in range(250, 350)]
    drawn = [ensemble_for(n) for n in names]
    assert drawn == [ensemble_for(n) for n in names]
    assert {key for key, _ in drawn} == set(ENSEMBLES)  # every ensemble in use


def test_without_fluidsynth_it_says_what_to_install(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(ROOT / "scripts/render_scores.py"), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "fluidsynth" in run.stderr and "render-scores.sh" in run.stderr
