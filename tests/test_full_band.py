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


def test_the_remote_server_dreams_the_full_band_ears_44_1_khz_loops(micro_full_model_dir):
    """A real server and client on 127.0.0.1: the clip crosses the wire at 44.1 kHz, whole."""
    import time

    from immersions.dream.loop import start_clip
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats
    from immersions.registry import REGISTRY
    from immersions.remote.client import RemoteEngine
    from immersions.remote.server import DreamServer
    from immersions.selection import Region

    model = load_model(micro_full_model_dir)
    server = DreamServer("tcp://127.0.0.1:*", [str(micro_full_model_dir)], ["cpu"], 1, keys=None, insecure=True)
    server.start()
    try:
        got = []
        remote = RemoteEngine(model, load_stats(model), start_clip("noise", 4 * 44100, 44100), REGISTRY.defaults(),
                              address=server.endpoint, on_frame=got.append)
        remote.select(Region(3, (0.0, 0.5)))
        with remote:
            deadline = time.monotonic() + 60
            while not got and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got, remote.status
        frame = got[-1]
        assert frame.sample_rate == 44100 and frame.clip.shape == (4 * 44100,)
        assert np.isfinite(frame.clip).all() and np.abs(frame.clip).max() > 0
    finally:
        server.stop()
