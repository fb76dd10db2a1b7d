"""The loop's parameterizations (dream/spaces.py) and the musical priors (dream/priors.py)."""

import math
import numpy as np
import pytest
import torch

from immersions.audio import measures as M
from immersions.dream import priors as P
from immersions.dream import transforms as T
from immersions.dream.dreamer import Dreamer, default_params
from immersions.dream.loop import start_clip
from immersions.selection import Region
from immersions.dream.recipe import make_space
from immersions.dream.spaces import SPACES, START_SPACES

SR = 16000
SAMPLES = 32000  # one bar at 120 BPM


@pytest.fixture(scope="module")
def groove():
    return torch.as_tensor(start_clip("groove", SAMPLES, SR))


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("tilt", [0.0, -6.0])
def test_every_space_resynthesizes_a_clip_faithfully(name, tilt, groove):
    space = make_space(name, SAMPLES, SR, tilt)
    back = space.synthesize(space.analyze(groove))
    assert back.shape == groove.shape
    assert float((back - groove).abs().max()) < 1e-4 * float(groove.abs().max())


@pytest.mark.parametrize("name", ["spectrum", "stft"])
def test_a_unit_step_in_any_space_is_a_unit_step_on_the_waveform(name):
    space = make_space(name, SAMPLES, SR, -3.0)
    shape = space.analyze(torch.zeros(SAMPLES)).shape
    step = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    rms = float(space.synthesize(step).square().mean().sqrt())
    assert 0.8 < rms < 1.25


def _octave_power_db(x: torch.Tensor, lo: float) -> float:
    power = torch.fft.rfft(x).abs().square().numpy()
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(10 * np.log10(power[(freqs >= lo) & (freqs < 2 * lo)].mean()))


@pytest.mark.parametrize("tilt", [-3.0, -6.0])
def test_the_tilt_sets_how_a_steps_power_falls_per_octave(tilt):
    """A white waveform gradient, taken as a step in the spectrum space (chain rule, then
    synthesis), has its power falling by `tilt` dB per octave."""
    space = make_space("spectrum", SAMPLES, SR, tilt)
    white = torch.randn(SAMPLES, generator=torch.Generator().manual_seed(1))
    coefficients = space.analyze(torch.zeros(SAMPLES)).requires_grad_()
    (grad,) = torch.autograd.grad((space.synthesize(coefficients) * white).sum(), coefficients)
    step = space.synthesize(grad)
    slope = (_octave_power_db(step, 2000.0) - _octave_power_db(step, 250.0)) / 3.0
    assert slope == pytest.approx(tilt, abs=0.75)


def _white_step(floor_hz: float) -> torch.Tensor:
    space = make_space("spectrum", SAMPLES, SR, -4.5, floor_hz=floor_hz)
    white = torch.randn(SAMPLES, generator=torch.Generator().manual_seed(1))
    coefficients = space.analyze(torch.zeros(SAMPLES)).requires_grad_()
    (grad,) = torch.autograd.grad((space.synthesize(coefficients) * white).sum(), coefficients)
    return space.synthesize(grad)


@pytest.mark.parametrize("floor", [80.0, 160.0])
def test_the_tilt_stops_rising_below_the_floor_as_musics_balance_does(floor):
    """Under `step_floor` a step's power stays level (real music's octave profile is nearly
    level under 250 Hz) instead of piling into the lowest octave; above it, the tilt."""
    step = _white_step(floor)
    below = _octave_power_db(step, floor / 4) - _octave_power_db(step, floor / 2)
    above = _octave_power_db(step, 2 * floor) - _octave_power_db(step, 4 * floor)
    assert abs(below) < 1.5 and above == pytest.approx(4.5, abs=0.75)


def test_the_floor_is_a_parameter_that_defaults_to_musics_level_bass(micro):
    from immersions.dream.spaces import TILT_FLOOR_HZ

    params = default_params()
    assert params["step_floor"] == TILT_FLOOR_HZ == 160.0  # the registry's default is the spaces' default

    def lowest_over_mid(step):
        return _octave_power_db(step, 40.0) - _octave_power_db(step, 640.0)

    # in the octave from 40 Hz (its middle 57 Hz), a floor at 40 lets the tilt add 4.5 dB per
    # octave from 160 Hz down: 4.5 * log2(160 / 57) = 6.7 dB more bass
    assert lowest_over_mid(_white_step(40.0)) - lowest_over_mid(_white_step(160.0)) == pytest.approx(6.7, abs=1.0)
    dreamer = Dreamer(micro, None, np.zeros(SAMPLES, np.float32), copies=2, seed=0)
    first = dreamer._space(params)
    assert dreamer._space(params) is first  # kept while the settings stay
    assert dreamer._space(params.replace(step_floor=40.0)) is not first  # rebuilt when the floor moves


@pytest.mark.parametrize("settings", [
    {"space": "spectrum"}, {"space": "stft", "optimizer": "adam"},
    {"space": "spectrum", "sparsity": 0.5, "balance": 0.2, "beat_repeat": 0.2, "harmonics": 1.0},
    {"space": "waveform", "sparsity": 0.5, "balance": 0.2, "beat_repeat": 0.2, "harmonics": 1.0},
    {"space": "spectrum", "beat_repeat": 0.0, "rhythm_repeat": 1.0},
    {"space": "spectrum", "progression": "I-vi-IV-V", "repeat_every": "half_bar", "rhythm_repeat": 0.3},
])
def test_every_space_and_prior_dreams_finite_loops_within_full_scale(micro, settings):
    params = default_params().replace(learning_rate=0.5, bars=1, **settings)  # a huge step: peak must be scaled
    d = Dreamer(micro, None, start_clip("noise", SAMPLES, SR, 0), copies=2, seed=3)
    d.select(Region(len(micro.taps) - 1, (0.3, 0.0)))
    for _ in range(3):
        report = d.step(params)
    assert torch.isfinite(d.loop).all() and report.nan_resets == 0
    assert d.peak <= 1.0 + 1e-6


@pytest.mark.parametrize("space", SPACES)
def test_from_silence_every_space_moves_the_first_and_the_last_tap(micro, space):
    params = default_params().replace(space=space, sparsity=0.3, balance=0.1, beat_repeat=0.1, bars=1)
    for tap in (0, len(micro.taps) - 1):
        d = Dreamer(micro, None, np.zeros(SAMPLES, np.float32), copies=2, seed=0)
        d.select(Region(tap, (0.2, 0.0)))
        for _ in range(3):
            d.step(params)
        assert float(d.loop.square().mean().sqrt()) > 1e-3, f"tap {tap} stayed silent in {space}"


@pytest.mark.parametrize("space", SPACES + START_SPACES)
def test_pausing_holds_the_loop_exactly_and_a_seed_repeats_exactly(micro, space):
    params = default_params().replace(space=space, sparsity=0.3, balance=0.1, beat_repeat=0.1, rhythm_repeat=0.1,
                                      harmonics=0.3, bars=1, progression="I-IV")
    loops = []
    for _ in range(2):
        d = Dreamer(micro, None, start_clip("kick", SAMPLES, SR, 0), copies=2, seed=4)
        d.select(Region(2, (0.5, 0.0)))
        for _ in range(2):
            d.step(params)
        loops.append(d.loop.clone())
        d.step(params.replace(learning_rate=-4.95))
        assert torch.equal(d.loop, loops[-1])
    assert torch.equal(loops[0], loops[1])
    assert not torch.equal(loops[0], torch.as_tensor(start_clip("kick", SAMPLES, SR, 0)))  # it moved


def test_beat_repeat_makes_the_loop_repeat_at_the_beat():
    x = torch.randn(SAMPLES, generator=torch.Generator().manual_seed(2))
    beat = SAMPLES // 4
    same = P.beat_repeat(x, 4, 1.0)
    assert torch.allclose(torch.roll(same, beat), same, atol=1e-6)
    half = P.beat_repeat(x, 4, 0.5)
    assert torch.allclose(half, 0.5 * x + 0.5 * same, atol=1e-6)
    assert torch.equal(P.beat_repeat(x, 4, 0.0), x)


def test_rhythm_repeat_repeats_the_rhythm_and_keeps_each_beats_notes():
    """Eight beats, each its own note; a hit on every other beat and a soft hold between.
    After the prior the band envelopes repeat at the beat (the onsets do), and each beat still
    plays its own note (the harmony moves): what `beat_repeat` would average away."""
    sr, beats = 16000, 8
    beat = 4 * sr // beats
    t = torch.arange(beat) / sr
    notes = (262.0, 294.0, 330.0, 349.0, 392.0, 440.0, 494.0, 277.0)  # inside one octave band: the band's rhythm is shared
    loop = torch.cat([(torch.exp(-8 * t) if k % 2 == 0 else 0.1 * torch.ones(beat)) * torch.sin(2 * math.pi * f * t)
                      for k, f in enumerate(notes)])

    def onsets(x):  # level of each beat's first 50 ms
        return torch.stack([x[k * beat:k * beat + 800].square().mean().sqrt() for k in range(beats)])

    def pitch(x):  # the loudest frequency of each beat
        freqs = torch.fft.rfftfreq(beat, 1.0 / sr)
        return [float(freqs[torch.fft.rfft(x[k * beat:(k + 1) * beat]).abs().argmax()]) for k in range(beats)]

    out = loop
    for _ in range(20):
        out = P.rhythm_repeat(out, beats, 0.3, sr)
    before, after = onsets(loop), onsets(out)
    assert float(before.max() / before.min()) > 5  # loud, soft, loud, soft ...
    assert float(after.max() / after.min()) < 1.5  # every beat begins alike
    assert pitch(out) == pytest.approx(pitch(loop), abs=3.0)  # and plays its own note
    assert torch.equal(P.rhythm_repeat(loop, beats, 0.0, sr), loop)
    assert torch.allclose(P.rhythm_repeat(loop, beats, 1e-9, sr), loop, atol=1e-5)  # the bands sum back to the loop
    averaged = P.beat_repeat(loop, beats, 1.0)
    assert len(set(round(p) for p in pitch(averaged))) == 1  # beat_repeat: one sound on every beat


def _tone_and_hiss(seed=0):
    t = torch.arange(SAMPLES) / SR
    tone = 0.3 * torch.sin(2 * np.pi * 440.0 * t)
    hiss = 0.05 * torch.randn(SAMPLES, generator=torch.Generator().manual_seed(seed))
    return tone, hiss


def test_sparsify_removes_hiss_and_keeps_the_tone():
    tone, hiss = _tone_and_hiss()
    x = tone + hiss
    y = x
    for _ in range(5):
        y = P.sparsify(y, 0.5)
    assert M.spectral_flatness(y.numpy()) < 0.05 * M.spectral_flatness(x.numpy())
    kept = float((y * tone).sum() / tone.square().sum())
    assert kept > 0.8  # the tone is still there, at most a little quieter
    assert float((y - tone).square().mean()) < 0.2 * float(hiss.square().mean())


def test_sparsify_spares_what_the_selection_pulls_on():
    """A quiet high band the gradient pulls on survives; without the pull it goes."""
    tone, hiss = _tone_and_hiss(1)
    t = torch.arange(SAMPLES) / SR
    quiet = 0.01 * torch.sin(2 * np.pi * 3000.0 * t)
    pull = torch.sin(2 * np.pi * 3000.0 * t)  # the objective's gradient points at that band
    x = tone + hiss + quiet
    spared, plain = x, x
    for _ in range(5):
        spared = P.sparsify(spared, 0.5, pull)
        plain = P.sparsify(plain, 0.5)
    left_spared = float((spared * quiet).sum() / quiet.square().sum())
    left_plain = float((plain * quiet).sum() / quiet.square().sum())
    assert left_spared > 0.8 and left_plain < 0.2


def _amplitude_at(x: torch.Tensor, hz: float) -> float:
    """Peak spectral amplitude within 20 Hz of `hz` (whole-loop FFT)."""
    spectrum, freqs = torch.fft.rfft(x).abs(), torch.fft.rfftfreq(len(x), 1.0 / SR)
    return float(spectrum[(freqs > hz - 20) & (freqs < hz + 20)].max())


def test_harmonics_give_a_tone_its_overtones_and_settle():
    """A bare 437 Hz sine grows a harmonic series (each overtone steady, phase-locked to the
    tone, so its energy stays in one narrow line); repeated steps settle; hiss without a
    partial is left as it was; at 0 nothing changes."""
    t = torch.arange(SAMPLES) / SR
    f0 = 437.0
    x = 0.5 * torch.sin(2 * np.pi * f0 * t) + 0.003 * torch.randn(SAMPLES, generator=torch.Generator().manual_seed(0))
    assert _amplitude_at(x, 2 * f0) < 0.01 * _amplitude_at(x, f0)
    y, ratios = x, []
    for _ in range(30):
        y = P.harmonics(y, 0.5)
        ratios.append([_amplitude_at(y, k * f0) / _amplitude_at(y, f0) for k in range(2, 7)])
    assert all(r > 0.1 for r in ratios[-1]), ratios[-1]  # every overtone from the 2nd to the 6th
    assert ratios[-1][0] > ratios[-1][4]  # falling with k, as 1/k falls
    assert np.allclose(ratios[-1], ratios[-10], rtol=0.02)  # settled, not piling up
    assert _amplitude_at(y, f0) == pytest.approx(_amplitude_at(x, f0), rel=0.05)  # the tone itself stays
    assert _amplitude_at(y, 2.5 * f0) < 0.02 * _amplitude_at(y, f0)  # no energy between the overtones
    # phase-locked: the 2nd overtone is one steady line, as loud in the loop's first half as in its second
    half = SAMPLES // 2
    assert _amplitude_at(y[:half], 2 * f0) == pytest.approx(_amplitude_at(y[half:], 2 * f0), rel=0.1)
    hiss = 0.1 * torch.randn(SAMPLES, generator=torch.Generator().manual_seed(1))
    assert float((P.harmonics(hiss, 1.0) - hiss).norm() / hiss.norm()) < 0.01
    assert torch.equal(P.harmonics(x, 0.0), x)


def test_balance_moves_a_bright_loop_toward_real_musics_balance():
    reference = torch.tensor(P.music_balance())
    assert len(reference) == len(P.octave_edges(SR)) - 1
    x = torch.randn(SAMPLES, generator=torch.Generator().manual_seed(3))  # white: far too bright
    distances = []
    for _ in range(6):
        distances.append(M.balance_distance(M.octave_profile(x.numpy(), SR), reference.numpy()))
        x = P.toward_balance(x, SR, reference, 0.5)
    assert all(b < a for a, b in zip(distances, distances[1:]))
    assert distances[-1] < 0.4 * distances[0]
    assert torch.equal(P.toward_balance(torch.zeros(SAMPLES), SR, reference, 0.5), torch.zeros(SAMPLES))


def test_a_full_band_ear_gets_the_balance_measured_at_its_own_rate_and_16_khz_ears_the_old_one():
    import json

    from immersions.paths import assets_dir

    full, narrow = P.music_balance(sample_rate=44100), P.music_balance(sample_rate=16000)
    assert len(full) == len(P.octave_edges(44100)) - 1 == 9  # up to the 8-16 kHz octave
    assert narrow == P.music_balance()  # the 16-kHz ears' dreams are unchanged
    shipped = json.loads((assets_dir() / "reference" / "music-balance-44100.json").read_text())
    assert shipped["sample_rate"] == 44100 and tuple(shipped["profile_db"]) == full
    # the top octave of real music is far below the middle, but not silence
    assert -40 < full[-1] < full[4] - 10
    # a bright loop moves toward it in the top octave too
    x = torch.randn(2 * 44100, generator=torch.Generator().manual_seed(3))
    reference = torch.tensor(full)
    top = lambda loop: float(P.band_profile(loop, 44100, 9)[-1] - reference[-1])  # noqa: E731
    before = abs(top(x))
    for _ in range(4):
        x = P.toward_balance(x, 44100, reference, 0.5)
    assert abs(top(x)) < 0.6 * before


@pytest.mark.parametrize("rate", [44100, 8000])
def test_balance_works_at_a_rate_other_than_the_references(rate):
    """The reference is measured at 16 kHz (8 octave bands). A 44.1-kHz model has 9 bands and
    an 8-kHz one 7: the bands both have are compared (this crashed at 44.1 kHz), and the
    loop still moves toward real music's balance there."""
    reference = torch.tensor(P.music_balance())
    bands = min(len(reference), len(P.octave_edges(rate)) - 1)
    x = torch.randn(rate * 2, generator=torch.Generator().manual_seed(3))

    def distance(loop):
        profile = P.band_profile(loop, rate, bands)
        return float((profile - (reference[:bands] - reference[:bands].mean())).abs().mean())

    before = distance(x)
    for _ in range(4):
        x = P.toward_balance(x, rate, reference, 0.5)
    assert torch.isfinite(x).all() and distance(x) < 0.6 * before


def test_immersions_balance_measures_a_folder_and_names_what_it_skips(tmp_path):
    """`immersions balance DIR --out F`: real music's octave balance as JSON; a bad file is
    skipped and named, and the profile tells a low tone from a high one."""
    import json
    import subprocess
    import sys

    from helpers import encode_format

    music = tmp_path / "music"
    music.mkdir()
    encode_format(music, "flac", seconds=10.0, freq=110.0, stem="low")
    encode_format(music, "ogg", seconds=10.0, freq=3000.0, stem="high")
    (music / "broken.mp3").write_bytes(b"not audio at all")
    from immersions.paths import assets_dir

    shipped = assets_dir() / P.BALANCE_FILE
    before = shipped.read_bytes()
    # no --out: a file in the working folder, never the shipped target
    done = subprocess.run([sys.executable, "-m", "immersions", "balance", str(music)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "broken.mp3" in done.stderr
    out = tmp_path / "music-balance.json"
    assert done.stdout.startswith("wrote music-balance.json") and shipped.read_bytes() == before
    doc = json.loads(out.read_text())
    assert doc["files"] == 3 and doc["excerpts"] == 16  # 8 excerpts from each good file
    profile = doc["profile_db"]
    assert len(profile) == len(doc["band_edges_hz"]) - 1 == len(P.octave_edges(SR)) - 1
    assert abs(sum(profile)) < 0.1  # loudness removed
    assert profile[2] > profile[0] and profile[6] > profile[5]  # the two tones' octaves stand out
    assert P.music_balance(str(out)) == tuple(profile)

    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "immersions", "balance", str(empty), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_repeat_every_sets_the_period_that_beat_repeat_makes_the_loop_repeat_at():
    """beat: the loop repeats every beat; half_bar: every two beats, and a beat need not equal
    the next; bar: every bar."""
    from immersions.dream.recipe import projections

    x = torch.randn(2 * SAMPLES, generator=torch.Generator().manual_seed(5))  # two bars
    beat = SAMPLES // 4
    for every, period in (("beat", beat), ("half_bar", 2 * beat), ("bar", 4 * beat)):
        params = default_params().replace(bars=2, beat_repeat=1.0, repeat_every=every, balance=0.0, sparsity=0.0,
                                          harmonics=0.0, rhythm_repeat=0.0, mix_original=0.0, denoise=0.0)
        (step,) = projections(params, SR, torch.zeros_like(x), lambda: None)
        y = step(x, None)
        assert torch.allclose(torch.roll(y, period), y, atol=1e-5)
        if period > beat:
            assert not torch.allclose(torch.roll(y, beat), y, atol=1e-2)


def test_a_progression_lets_the_ear_hear_every_chord_at_the_root(micro):
    """`progression` I-IV: a loop whose second half is its first a fourth up (A4, then D5)
    reaches the network as one note throughout, whatever the copies' time shifts; so what
    the dream plays on the second half is the first half's figure on the IV chord."""
    from immersions.dream.recipe import PROGRESSIONS

    cfg = micro.cfg.scalogram
    half = SAMPLES // 2
    t = torch.arange(half) / cfg.sample_rate
    loop = torch.cat([torch.sin(2 * math.pi * 440.0 * t), torch.sin(2 * math.pi * 440.0 * 2 ** (5 / 12) * t)])
    record = {}
    copies = T.jitter(3, 2000, record=record)(loop, torch.Generator().manual_seed(1))
    spec = micro.scalogram(copies, circular=True)
    heard = T.transpose_parts(PROGRESSIONS["I-IV"], cfg.bins_per_octave, cfg.hop, record)(spec, torch.Generator())
    frames = spec.shape[-1]
    for c in range(3):
        start = int(record["shifts"][c]) // cfg.hop  # where the loop's first half begins in this copy
        inside = [(start + f) % frames for f in (frames // 8, frames // 4, 5 * frames // 8, 3 * frames // 4)]
        played = {int(spec[c, :, f].argmax()) for f in inside}
        peaks = {int(heard[c, :, f].argmax()) for f in inside}
        assert len(played) == 2  # two notes played ...
        assert max(peaks) - min(peaks) <= 1  # ... one heard
    assert torch.equal(T.transpose_parts((0,), cfg.bins_per_octave, cfg.hop, record)(spec, torch.Generator()), spec)


def test_a_chord_too_short_for_two_periods_repeats_its_beats():
    """I-vi-IV-V over two bars: a chord lasts half a bar, which holds one `half_bar` period
    and nothing to repeat, so each chord repeats its beats; I-IV keeps the half bar."""
    from immersions.dream.recipe import projections

    x = torch.randn(2 * SAMPLES, generator=torch.Generator().manual_seed(7))
    beat = SAMPLES // 4
    for chords, period in (("I-vi-IV-V", beat), ("I-IV", 2 * beat)):
        params = default_params().replace(bars=2, beat_repeat=1.0, repeat_every="half_bar", progression=chords,
                                          balance=0.0, sparsity=0.0, harmonics=0.0, rhythm_repeat=0.0)
        (step,) = projections(params, SR, torch.zeros_like(x), lambda: None)
        y = step(x, None)
        part = 2 * SAMPLES // (4 if chords == "I-vi-IV-V" else 2)
        first = y[:part]
        assert torch.allclose(torch.roll(first, period), first, atol=1e-5)
        assert not torch.allclose(y[:part], y[part:2 * part], atol=1e-2)


def test_with_a_progression_each_part_repeats_its_own_beats():
    x = torch.randn(2 * SAMPLES, generator=torch.Generator().manual_seed(6))  # two bars, eight beats
    beat = SAMPLES // 4
    y = P.beat_repeat(x, 8, 1.0, parts=2)  # I for a bar, IV for a bar
    first, second = y[:4 * beat], y[4 * beat:]
    assert torch.allclose(torch.roll(first, beat), first, atol=1e-5)
    assert torch.allclose(torch.roll(second, beat), second, atol=1e-5)
    assert not torch.allclose(first, second, atol=1e-2)  # the two chords are not averaged together
