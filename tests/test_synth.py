import wave
from dataclasses import replace

import numpy as np
import pytest

from immersions.synth import (
    BASS,
    CHORDS,
    KICK,
    PARTS,
    TrackStyle,
    arrangement,
    hat,
    render_loop,
    render_track,
    track_sections,
    write_starter_clips,
)
from immersions.errors import ImmersionsError
from immersions.registry import START_CLIPS

SR = 16000


def centroid(audio: np.ndarray, sample_rate: int) -> float:
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    return float((power * freqs).sum() / power.sum())


def band_rms(audio: np.ndarray, sample_rate: int, low: float, high: float) -> float:
    spectrum = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    spectrum[(freqs < low) | (freqs >= high)] = 0
    return float(np.sqrt(np.mean(np.fft.irfft(spectrum, len(audio)) ** 2)))


# ---------------------------------------------------------------- tracks


def test_same_seed_same_samples_other_seed_other_samples():
    a = render_track(7, 10.0, SR)
    assert np.array_equal(a, render_track(7, 10.0, SR))
    b = render_track(8, 10.0, SR)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("seconds, rate", [(0.0, SR), (1.0, SR), (3.3333, SR), (10.01, 22050), (2.5, 44100)])
def test_track_length_is_exact(seconds, rate):
    assert len(render_track(3, seconds, rate)) == round(seconds * rate)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, -5, 2**40])
def test_track_is_finite_float32_and_loud_but_never_clips(seed):
    audio = render_track(seed, 20.0, SR)
    assert audio.dtype == np.float32
    assert np.isfinite(audio).all()
    peak = np.max(np.abs(audio))
    assert 0.1 < peak <= 1.0
    assert peak == pytest.approx(10 ** (-1 / 20), abs=0.01)  # normalized to about -1 dBFS


def test_styles_differ_across_seeds():
    styles = [TrackStyle.from_seed(seed) for seed in range(40)]
    assert all(118.0 <= s.bpm <= 128.0 for s in styles)
    assert all(0.0 <= s.swing <= 0.2 for s in styles)
    assert all(0 <= s.key < 12 for s in styles)
    assert len({s.key for s in styles}) >= 8
    assert len({s.bpm for s in styles}) == 40
    assert len({s.mode for s in styles}) >= 3
    assert len({s.chord_timbre for s in styles}) >= 3
    assert len({s.bass_wave for s in styles}) >= 3
    assert len({s.perc_kind for s in styles}) >= 4
    assert len({s.bass_pattern for s in styles}) >= 5
    assert len({s.hat_pattern for s in styles}) >= 10
    assert TrackStyle.from_seed(5) == TrackStyle.from_seed(5)


def test_seeds_sound_different():
    """Long-term spectra of two tracks differ clearly (other key, timbres, tempo)."""
    def profile(seed):
        audio = render_track(seed, 20.0, SR).astype(np.float64)
        frames = audio[: len(audio) // 1024 * 1024].reshape(-1, 1024)
        return np.log(np.mean(np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)) ** 2, axis=0) + 1e-9)

    a, b = profile(11), profile(12)
    assert np.mean(np.abs(a - b)) > 0.5  # natural-log units: about 2 dB on average


def test_given_style_is_used():
    style = replace(TrackStyle.from_seed(1), bpm=118.0, key=0)
    assert not np.allclose(render_track(1, 5.0, SR, style=style), render_track(1, 5.0, SR))


def test_track_rejects_bad_arguments():
    with pytest.raises(ImmersionsError):
        render_track(0, -1.0, SR)
    with pytest.raises(ImmersionsError):
        render_track(0, 1.0, 0)


# ---------------------------------------------------------------- arrangement


@pytest.mark.parametrize("seed", range(10))
def test_arrangement_covers_the_track_and_changes_parts(seed):
    style = TrackStyle.from_seed(seed)
    sections = arrangement(style, 96)
    assert sections[0].start_bar == 0
    assert sum(s.bars for s in sections) == 96
    for prev, nxt in zip(sections, sections[1:]):
        assert nxt.start_bar == prev.start_bar + prev.bars
    assert len({s.parts for s in sections}) >= 3  # parts come and go
    assert any(KICK not in s.parts for s in sections)  # a breakdown drops the kick
    assert any(s.parts == frozenset(PARTS) for s in sections)  # a drop brings all back
    assert all(set(s.parts) <= set(PARTS) for s in sections)
    assert arrangement(style, 96) == sections


@pytest.mark.parametrize("seed", range(5))
def test_track_sections_tile_the_rendered_track(seed):
    seconds = 100.0
    plan = track_sections(seed, seconds)
    assert plan[0][1] == 0 and plan[-1][2] == seconds
    for (_, _, end), (_, start, _) in zip(plan, plan[1:]):
        assert end == pytest.approx(start)
    style = TrackStyle.from_seed(seed)
    bar_s = 4 * 60 / style.bpm
    names = [s.name for s in arrangement(style, int(np.ceil(seconds / bar_s)) + 1) if s.start_bar * bar_s < seconds]
    assert [name for name, _, _ in plan] == names


def test_breakdown_really_drops_the_low_end():
    style = TrackStyle.from_seed(0)
    bar_s = 4 * 60 / style.bpm
    sections = arrangement(style, 48)
    audio = render_track(0, 40 * bar_s, SR)
    quiet = [s for s in sections if KICK not in s.parts and BASS not in s.parts and s.start_bar + s.bars <= 40]
    full = [s for s in sections if {KICK, BASS, CHORDS} <= s.parts and s.start_bar + s.bars <= 40]
    assert quiet and full

    def low(section):
        a, b = (int(round(bar * bar_s * SR)) for bar in (section.start_bar, section.start_bar + section.bars))
        return band_rms(audio[a:b], SR, 20, 100)

    assert low(full[0]) > 4 * low(quiet[0])


# ---------------------------------------------------------------- loops


@pytest.mark.parametrize("kind", START_CLIPS)
def test_loop_lengths(kind):
    assert len(render_loop(kind, 2, 120.0, 44100)) == 176400  # 2 bars at 120 BPM = 4.0 s
    assert len(render_loop(kind, 1, 125.0, SR)) == round(1 * 4 * 60 / 125 * SR)
    audio = render_loop(kind, 2, 120.0, SR)
    assert audio.dtype == np.float32 and np.isfinite(audio).all() and np.max(np.abs(audio)) <= 1.0


def test_silence_is_silent():
    assert not np.any(render_loop("silence", 2, 120.0, SR))


def test_noise_is_moderate():
    noise = render_loop("noise", 2, 120.0, SR)
    rms = np.sqrt(np.mean(noise.astype(np.float64) ** 2))
    assert 0.03 < rms < 0.3
    assert np.max(np.abs(noise)) < 0.9


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_groove_loops_without_click(seed):
    groove = render_loop("groove", 2, 120.0, SR, seed=seed).astype(np.float64)
    largest_inside = np.max(np.abs(np.diff(groove)))
    assert abs(groove[0] - groove[-1]) <= largest_inside
    assert np.max(np.abs(groove)) > 0.5


def test_groove_is_deterministic():
    assert np.array_equal(render_loop("groove", seed=4), render_loop("groove", seed=4))


def test_kick_lives_low_and_hats_high():
    kick_loop = render_loop("kick", 2, 120.0, SR)
    assert centroid(kick_loop, SR) < 200
    for seed in range(5):
        style = TrackStyle.from_seed(seed)
        hit = hat(style, SR, np.random.default_rng(seed), style.hat_decay)
        assert centroid(hit, SR) > 3000


def test_kick_onsets_fall_on_the_beats():
    kick_loop = np.abs(render_loop("kick", 2, 120.0, SR).astype(np.float64))
    beat = SR // 2  # 0.5 s at 120 BPM
    for i in range(8):
        window = kick_loop[i * beat : (i + 1) * beat]
        assert np.argmax(window) < 0.03 * SR  # the peak comes right on the beat
        before = kick_loop[i * beat - int(0.02 * SR) : i * beat] if i else kick_loop[-int(0.02 * SR) :]
        assert np.max(before) < 0.3 * np.max(window)  # and it is an onset, not a tail


def test_unknown_loop_kind_raises():
    with pytest.raises(ImmersionsError) as err:
        render_loop("trance")
    message = str(err.value)
    assert "\n" not in message
    assert all(kind in message for kind in START_CLIPS)


def test_write_starter_clips(tmp_path):
    paths = write_starter_clips(tmp_path, sample_rate=SR)
    assert sorted(p.name for p in paths) == sorted(f"{kind}.wav" for kind in START_CLIPS)
    for path in paths:
        with wave.open(str(path)) as clip:
            assert clip.getframerate() == SR
            assert clip.getsampwidth() == 2
            assert clip.getnchannels() == 1
            assert clip.getnframes() == 4 * SR
