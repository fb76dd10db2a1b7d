"""The full band through the instrument: a 44.1-kHz ear (micro's widths on the `full` preset's
front end) plays, records and saves 44.1-kHz loops on the real player (miniaudio's NULL backend),
resampled once at most, to the output's rate."""

import shutil

import numpy as np
import pytest
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


def test_without_pyav_libsndfile_decodes_opus_as_pyav_does(tmp_path, monkeypatch):
    """A lent GPU machine may lack PyAV: the carried Opus music is then read by libsndfile and
    resampled by scipy, and sounds as PyAV's decoding does."""
    from immersions.audio import io

    t = np.arange(48000 * 3) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 9000 * t)).astype(np.float32)
    path = io.encode_audio(tmp_path / "x.opus", tone, 48000, "opus", "libopus", channels=1, bit_rate=24000)
    default = io.encode_audio(tmp_path / "y.opus", tone, 48000, "opus", "libopus", channels=1)
    assert path.stat().st_size < 0.6 * default.stat().st_size  # the bit rate asked for, not libopus's own
    with_av = io.load_audio(path, 44100)
    monkeypatch.setattr(io, "_pyav", lambda: None)
    info = io.probe_audio(path)
    assert info.source_rate == 48000 and info.channels == 1 and abs(info.declared_seconds - 3.0) < 0.05
    without = io.load_audio(path, 44100)
    n = min(len(with_av), len(without))
    assert abs(len(with_av) - len(without)) < 0.02 * 44100
    # the same sound, up to the decoders' own start (pre-skip) alignment
    best = max(float(np.corrcoef(with_av[4410:n - 4410], np.roll(without, k)[4410:n - 4410])[0, 1]) for k in range(-400, 401, 1))
    assert best > 0.99
    (tmp_path / "bad.opus").write_bytes(b"OggS not really")
    with pytest.raises(io.BadAudioFile):
        io.load_audio(tmp_path / "bad.opus", 44100)
