"""The full band through the instrument: a 44.1-kHz ear (micro's widths on the `full` preset's
front end) plays, records and saves 44.1-kHz loops on the real player (miniaudio's NULL backend),
resampled once at most, to the output's rate."""

import shutil

import numpy as np
import soundfile

from immersions.install.run import run_install_headless
from immersions.install.session import StateFolder


def test_a_headless_installation_plays_the_full_band_ears_loops_at_44_1_khz(micro_full_model_dir, tmp_path):
    model = tmp_path / "full"
    shutil.copytree(micro_full_model_dir, model)  # its map gets cached there
    state = tmp_path / "state"
    doc = run_install_headless(12.0, model=str(model), state_dir=str(state))
    assert doc["clips_played"] >= 1 and doc["loudness_lufs"] is not None
    assert isinstance(doc["underruns"], int)
    saved = StateFolder(state).clip_path
    info = soundfile.info(str(saved))
    assert info.samplerate == 44100  # the loop as the ear dreamed it, never brought down to 16 kHz
    audio, _ = soundfile.read(str(saved))
    assert len(audio) % 588 == 0 and np.isfinite(audio).all()  # whole frames of the 75-frames/s ear
