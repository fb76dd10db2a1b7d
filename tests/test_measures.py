"""The sound measures tell white noise, a sine and a click track apart as a listener would."""

import numpy as np
import pytest

from immersions.audio import measures as M

SR = 16000
BPM = 120.0


def white_noise(seconds=4.0, seed=0):
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def click_track(seconds=4.0, bpm=BPM):
    audio = np.zeros(int(seconds * SR), np.float32)
    beat = int(round(60.0 / bpm * SR))
    decay = np.exp(-np.arange(400) / 60.0) * np.random.default_rng(1).standard_normal(400)
    for start in range(0, len(audio), beat):
        audio[start:start + 400] += 0.8 * decay[: len(audio) - start]
    return audio


def test_flatness_orders_noise_clicks_and_sine(sine):
    noise, clicks, tone = white_noise(), click_track(), sine(440.0, 4.0)
    f_noise, f_clicks, f_tone = (M.spectral_flatness(x) for x in (noise, clicks, tone))
    assert f_noise > 0.5  # white noise is flat
    assert f_tone < 0.01  # one tone is as far from flat as it gets
    assert f_clicks > 0.1  # clicks are broadband too: it is their repetition that sets them apart


def test_peak_share_finds_pitched_content(sine):
    tone = sine(440.0, 4.0) + 0.01 * white_noise()
    assert M.peak_energy_share(tone) > 0.9
    assert M.peak_energy_share(white_noise()) < 0.02
    assert M.peak_energy_share(click_track()) < 0.05


def test_onset_repetition_hears_the_beat(sine):
    clicks = click_track()
    rep = M.onset_repetition(clicks, SR, BPM)
    assert rep["beat"] > 0.8 and rep["bar"] > 0.8
    assert abs(M.onset_repetition(white_noise(), SR, BPM)["beat"]) < 0.2
    assert M.onset_repetition(sine(440.0, 4.0), SR, BPM)["beat"] == 0.0  # a steady tone has no onsets
    # clicks at 120 BPM heard as a 100 BPM loop do not repeat at its beat
    assert M.onset_repetition(click_track(bpm=BPM), SR, 100.0)["beat"] < 0.5 * rep["beat"]


def test_silence_has_no_spectrum():
    silence = np.zeros(SR * 2, np.float32)
    assert M.spectral_flatness(silence) is None
    assert M.peak_energy_share(silence) is None
    assert M.octave_profile(silence, SR) is None
    doc = M.measure(silence, SR, BPM)
    assert doc["onset_repetition_beat"] == 0.0 and doc["balance_distance_db"] is None


def test_balance_distance_tells_bright_from_dark(sine):
    noise = white_noise()
    dark = sine(80.0, 4.0) + 0.001 * noise
    reference = M.octave_profile(noise, SR)
    assert M.balance_distance(M.octave_profile(white_noise(seed=3), SR), reference) < 1.0
    assert M.balance_distance(M.octave_profile(dark, SR), reference) > 10.0
    # loudness is not balance
    assert M.balance_distance(M.octave_profile(0.01 * noise, SR), reference) == pytest.approx(0.0, abs=1e-6)


def test_measure_is_json_ready(sine):
    import json

    doc = M.measure(sine(440.0, 2.0), SR, BPM, reference=M.octave_profile(white_noise(), SR))
    json.dumps(doc, allow_nan=False)
    assert set(doc) >= {"spectral_flatness", "peak_energy_share", "onset_repetition_beat",
                        "onset_repetition_bar", "balance_distance_db"}


def test_a_loop_at_any_tempo_is_measured_frame_by_frame():
    """A loop whose length is no multiple of the hop (2 bars at 130 BPM: 59 077 samples) is
    measured whole: one frame per hop, the last one wrapping round the loop's start."""
    samples = int(round(8 * 60.0 / 130.0 * SR))
    assert samples % M.HOP
    frames = M.power_frames(white_noise(samples / SR))
    assert frames.shape == (-(-samples // M.HOP), M.N_FFT // 2 + 1)
    rows = M.onset_repetition(click_track(samples / SR, 130.0), SR, 130.0)
    assert rows["beat"] > 0.8


def melody(notes, seconds=4.0, bpm=BPM):
    """One sine per beat, a new note on each (a hard cut at the beat line)."""
    beat = int(round(60.0 / bpm * SR))
    t = np.arange(beat) / SR
    return np.concatenate([0.3 * np.sin(2 * np.pi * notes[k % len(notes)] * t)
                           for k in range(int(seconds * SR) // beat)]).astype(np.float32)


def test_harmonic_change_hears_notes_move_and_nothing_else(sine):
    """A tune with a new note on each beat changes; a held note, white noise and a click track
    (the same sound on every beat) do not; silence has no notes to compare."""
    tune = M.harmonic_change(melody([262.0, 330.0, 392.0, 494.0]), SR, BPM)
    held = M.harmonic_change(sine(440.0, 4.0), SR, BPM)
    assert tune > 0.8
    assert held < 0.01
    assert M.harmonic_change(white_noise(), SR, BPM) < 0.05
    assert M.harmonic_change(click_track(), SR, BPM) < 0.05
    # the same note an octave up is the same pitch class: no change
    assert M.harmonic_change(melody([220.0, 440.0]), SR, BPM) < 0.05
    assert M.harmonic_change(np.zeros(4 * SR, np.float32), SR, BPM) is None
    assert "harmonic_change" in M.measure(melody([262.0, 330.0]), SR, BPM)
