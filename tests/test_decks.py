"""Two decks and a cue: the crossfader's gains, both decks on one bar, fades that land on the bar,
no click at a fader move (the real player on miniaudio's NULL backend, heard through a WAV), and
the cue output on a second NULL device."""

import logging
import time

import numpy as np
import pytest
import soundfile

from immersions.audio.mixing import fader_gains
from immersions.devices.cue import CueOutput
from immersions.devices.player import RETRY_S, STALL_S, LoopPlayer, LoopRenderer
from immersions.devices.recorder import record
from immersions.errors import ImmersionsError

import helpers
from helpers import heard_clip

SR = 8000


def tone(freq, n, sample_rate=SR, **shape):
    return helpers.tone(freq, n, sample_rate, **shape)


def clicks(n, every, sample_rate=SR):
    """A loop of n samples with a one-sample pulse every `every` samples, the first at 0."""
    x = np.zeros(n, np.float32)
    x[::every] = 0.9
    return x


def play(renderer, frames, block):
    out = []
    while frames > 0:
        b = renderer.render(min(block, frames))
        out.append(b[:, 0].copy())
        frames -= len(b)
    return np.concatenate(out)


@pytest.mark.parametrize("curve, middle", [("equal_power", (np.sqrt(0.5), np.sqrt(0.5))), ("cut", (1.0, 1.0))])
def test_the_faders_gains_at_both_ends_and_in_the_middle(curve, middle):
    assert fader_gains(0.0, curve) == (1.0, 0.0)  # exactly: deck B costs nothing, deck A is untouched
    assert fader_gains(1.0, curve) == (0.0, 1.0)
    np.testing.assert_allclose(fader_gains(0.5, curve), middle, atol=1e-6)
    if curve == "equal_power":
        for x in np.linspace(0, 1, 11):
            a, b = fader_gains(x, curve)
            assert a * a + b * b == pytest.approx(1.0, abs=1e-6)  # the power stays
    with pytest.raises(ValueError, match="curve"):
        fader_gains(0.5, "linear")


def test_deck_b_starts_on_deck_as_bar_and_costs_nothing_while_the_fader_is_on_a():
    r = LoopRenderer(SR, volume=1.0)
    r.offer(heard_clip(1, 0.4 * clicks(2000, 500), SR), deck=0)
    alone = play(r, 700, 128)
    r.offer(heard_clip(2, tone(300, 2000), SR), deck=1)  # B arrives mid-loop
    more = play(r, 3300, 128)
    heard = np.concatenate([alone, more])
    # with the fader on A the output is deck A's loop and nothing of B, and B's buffer was never written
    # (the first pulse is inside the fade-in from silence)
    assert np.flatnonzero(np.abs(heard) > 0.1).tolist() == list(range(500, 4000, 500))
    assert not r.decks[1].mix.any()
    # yet B plays on, on A's bar: at every frame both decks are at the same place in their loops
    for frame in (800, 1999, 2500, 3999):
        assert r.playhead_at(frame, deck=1).fraction == pytest.approx(r.playhead_at(frame, deck=0).fraction)
    assert r.playhead_at(3999, deck=1).serial == 2


@pytest.mark.parametrize("block", [100, 1])
def test_a_fade_runs_from_a_bar_line_to_a_bar_line_and_lands_on_the_other_deck(block):
    r = LoopRenderer(SR, volume=1.0)
    r.offer(heard_clip(1, tone(200, 4000), SR), deck=0)  # a loop of two "bars" of 2000 samples
    r.offer(heard_clip(2, tone(300, 4000, phase=1.0), SR), deck=1)
    play(r, 2700, block)
    r.fade_to(1.0, 2, 2000 / SR)
    play(r, 1, block)
    assert r.fade_start == 4000 and r.fade_end == 8000  # the next bar line, and two bars on
    out = play(r, 7000 - 2701, block)
    assert r.fader == pytest.approx(0.75, abs=1e-6) and r.on_air == 1
    play(r, 999, block)
    assert r.fader < 1.0
    play(r, 1, block)
    assert r.fader == 1.0 and r.frames == 8000  # landed on the bar
    after = play(r, 2000, block)
    np.testing.assert_allclose(after, tone(300, 4000, phase=1.0)[:2000], atol=1e-6)  # deck B alone
    before = out[:4000 - 2701]
    np.testing.assert_allclose(before, np.tile(tone(200, 4000), 2)[2701:4000], atol=1e-6)  # held on A till the bar
    # a hand on the fader stops the fade and the fader glides to it
    r.fade_to(0.0, 4, 2000 / SR)
    play(r, 10, block)
    r.set_crossfader(0.25)
    play(r, 1000, block)
    assert r.fader == 0.25
    with pytest.raises(ImmersionsError):
        r.fade_to(0.0, 0, 1.0)


def max_jump(x):
    return float(np.abs(np.diff(x)).max())


def test_moving_the_fader_never_clicks_on_the_real_player(tmp_path):
    """The real player on the NULL backend, recorded to a WAV: the largest sample-to-sample step
    while a hand throws the fader end to end is no larger than in a steady fade over a bar."""
    with LoopPlayer(backend="null", sample_rate=SR, buffer_ms=30, periods=3) as player:
        player.renderer.set_volume(1.0)
        player.offer(heard_clip(1, tone(46, 4000, amplitude=0.5), SR), deck=0)
        player.offer(heard_clip(2, tone(46, 4000, amplitude=0.5, phase=np.pi), SR), deck=1)  # opposite phase
        time.sleep(0.3)
        recorder = record(player.renderer, tmp_path / "moves.wav", lossless=True)
        for position in (1.0, 0.0, 1.0, 0.0, 1.0, 0.0):  # a hand throws the fader end to end
            player.renderer.set_crossfader(position)
            time.sleep(0.12)
        info = player.stop_recording()
        assert info is not None and recorder is not None
        time.sleep(0.05)
        record(player.renderer, tmp_path / "fade.wav", lossless=True)
        player.fade_to(1.0, 1, 0.5)
        time.sleep(1.3)
        player.stop_recording()
        assert player.fader == 1.0
    moves, _ = soundfile.read(tmp_path / "moves.wav", dtype="float32")
    fade, _ = soundfile.read(tmp_path / "fade.wav", dtype="float32")
    steady = 0.5 * 2 * np.pi * 46 / SR  # the tone's own largest step
    assert len(moves) > 0.5 * SR and len(fade) > SR
    # opposite phases: a step in the fader would jump by up to a whole sample of both tones
    assert max_jump(moves) <= 1.1 * max(max_jump(fade), steady)
    assert max_jump(moves) < 0.1


def test_the_cue_plays_the_deck_off_air_on_a_second_null_device_on_the_same_bar():
    with LoopPlayer(backend="null", sample_rate=SR, buffer_ms=60, periods=3) as player:
        player.renderer.set_volume(1.0)
        player.offer(heard_clip(1, tone(200, 4000), SR), deck=0)
        time.sleep(0.2)
        with CueOutput(player.renderer, "null", "null", player.sample_rate, buffer_ms=60, periods=3) as cue:
            player.offer(heard_clip(2, clicks(4000, 1000), SR), deck=1)  # the cue deck: a pulse every quarter
            time.sleep(1.0)
            ring = cue.ring
            assert cue.callbacks > 20 and cue.faults == 0
            # it runs dry only where the player's callback came late (this machine stalled): never on its own
            assert ring.underruns == 0 or player.stats().late_callbacks > 0
            # what the headphones got: deck B's pulses, on deck A's bar (master frames of the pulses)
            written = ring.written
            frames = np.arange(written - 4000, written)
            samples = ring._ring[frames % ring.frames]
            pulses = frames[samples > 0.5] + ring.first_frame
            assert len(pulses) == 4
            for frame in pulses:
                quarter = player.renderer.playhead_at(frame, deck=0).fraction * 4  # on A's beat
                assert quarter == pytest.approx(round(quarter), abs=1e-6)
                assert player.renderer.playhead_at(frame, deck=0).fraction == pytest.approx(
                    player.renderer.playhead_at(frame, deck=1).fraction)
            # and heard at (nearly) the same moment as the master: within the ring's lead and a block
            now = time.perf_counter()
            lag = player.heard_frame(now) - cue.heard_frame(now)
            assert -0.02 * SR < lag < 0.15 * SR
            assert cue.position(now).serial == 2 and player.position(now).serial == 1
    assert player.renderer.cue is None


def test_a_missing_cue_device_is_one_line():
    r = LoopRenderer(SR)
    with pytest.raises(ImmersionsError, match="no audio output 'headphones'") as err:
        CueOutput(r, "headphones", "null", SR)
    assert "\n" not in str(err.value) and r.cue is None


def test_a_cue_whose_device_dies_goes_off_the_master_untouched_and_comes_back_only_on_its_own_device(caplog):
    caplog.set_level(logging.INFO)
    with LoopPlayer(backend="null", sample_rate=SR, buffer_ms=60, periods=3, cue_device="null") as player:
        cue, output = player.cue, player._device
        player.offer(heard_clip(1, tone(200, 4000), SR), deck=0)
        player.offer(heard_clip(2, clicks(4000, 1000), SR), deck=1)
        time.sleep(0.3)
        assert player.check() and cue.playing and player.renderer.cue is cue.ring
        # a healthy cue is never closed, even when the check comes late: its callback runs in the grace
        assert player.check(time.perf_counter() + 2 * STALL_S) and cue.playing and cue.reopens == 0
        cue._device.stop()  # the headphones' interface is unplugged behind the cue's back
        time.sleep(0.1)
        callbacks = cue.callbacks
        time.sleep(0.1)
        assert cue.callbacks == callbacks  # dead
        caplog.clear()
        assert player.check() and cue.playing  # 0.2 s of silence is not yet a dead device
        t1 = time.perf_counter() + STALL_S  # as if a second and a half had passed
        assert player.check(t1)  # the master plays on
        assert not cue.playing and cue._device is None and player.renderer.cue is None
        assert cue.heard_frame() is None and cue.status() == {"device": "NULL Playback Device", "playing": False,
                                                              "reopens": 0, "underruns": cue.underruns}
        assert cue.line() == "cue: NULL Playback Device, gone, looking for it"  # the HUD's line
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "NULL Playback Device is gone" in warnings[0] and "cue is off" in warnings[0]
        # the master was never touched: the same device, no reopen, and it renders on
        master, written = player.stats(), cue.ring.written
        time.sleep(0.2)
        assert player.stats().callbacks > master.callbacks + 5 and player.stats().reopens == 0
        assert player._device is output and not player.fallback
        assert cue.ring.written == written  # nobody writes the ring nobody reads
        # looked for again at the next check, by its name: while it is not listed nothing else is opened
        cue._backend_name = "webaudio"  # no such outputs on this machine: the headphones are still unplugged
        assert player.check(t1 + 1)
        cue._looking.join(5)
        assert not cue.playing and cue._device is None and cue.reopens == 0 and player.renderer.cue is None
        assert [r.levelno for r in caplog.records if r.levelno >= logging.INFO] == [logging.WARNING]  # quiet
        last_look = cue._looking
        assert player.check(t1 + 2) and cue._looking is last_look  # one look per RETRY_S
        # plugged back in: the same device opens again (miniaudio's NULL backend, as asked for)
        cue._backend_name = "null"
        read_before = cue.ring.read
        assert player.check(t1 + 1 + RETRY_S)
        cue._looking.join(5)
        assert cue.playing and cue.reopens == 1 and player.renderer.cue is cue.ring
        assert cue.device_name == "NULL Playback Device" and cue.backend == "Null"
        assert cue.line() == "cue: NULL Playback Device, playing, back 1x" and cue.status()["playing"]
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert len(infos) == 1 and "NULL Playback Device is back" in infos[0]
        callbacks = cue.callbacks
        time.sleep(0.5)
        assert cue.callbacks > callbacks + 10 and cue.faults == 0
        assert cue.ring.read > 0 and cue.ring.read != read_before  # read again, from a fresh lead
        assert cue.position().serial == 2 and player.position().serial == 1  # the deck off air, in time
        now = time.perf_counter()
        assert -0.02 * SR < player.heard_frame(now) - cue.heard_frame(now) < 0.15 * SR
        assert player.check() and cue.check() and player.stats().reopens == 0
        # back only to go silent again at once (a driver that keeps failing): looked for after RETRY_S only
        cue._device.stop()
        t2 = time.perf_counter() + STALL_S
        assert player.check(t2) and not cue.playing and player.renderer.cue is None
        last_look = cue._looking
        assert player.check(t2 + 1) and cue._looking is last_look and not cue.playing
        assert player.check(t2 + RETRY_S)
        cue._looking.join(5)
        assert cue.playing and cue.reopens == 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2 and all("is gone" in w for w in warnings)
    assert not cue.playing and player.renderer.cue is None


# (both callbacks allocate nothing: test_player.py, test_rendering_a_block_allocates_no_buffers)


# -- the performance's two decks ------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(micro_model_dir, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("decks") / "micro"
    shutil.copytree(micro_model_dir, folder)
    return folder


@pytest.fixture
def performance(model_dir):
    from immersions.performance.performance import OfflineClock, Performance
    from immersions.visual.gl import offscreen_context

    ctx = offscreen_context()
    perf = Performance(ctx, (160, 90), OfflineClock(), model=str(model_dir), device="cpu")
    yield perf
    perf.close()
    ctx.release()


def until(predicate, what, timeout=60.0, perf=None, dt=0.1):
    began = time.perf_counter()
    while not predicate():
        assert time.perf_counter() - began < timeout, what
        if perf is not None:
            perf.clock.advance(dt)
            perf.frame(dt)
        time.sleep(0.02)


def test_both_decks_dream_hold_and_swap(performance):
    perf = performance
    seen = []
    perf.controls.listen(seen.append)
    perf.start()
    a = perf.decks["A"]
    until(lambda: a.engine.latest() is not None, "deck A's first clip", perf=perf)
    middle = a.engine.selection.regions[-1].tap
    # the controls move to deck B: it is made with A's settings, and edited on its own from now on
    assert perf.controls.set("deck", "B", "midi") and perf.edited == "B" and set(perf.decks) == {"A", "B"}
    b = perf.decks["B"]
    assert perf.engine is b.engine and b.engine is not a.engine
    assert perf.set("layer", 0.0) and perf.set("learning_rate", -1.5)
    until(lambda: b.engine.selection.regions and b.engine.selection.regions[-1].tap == 0, "B's selection")
    assert a.engine.selection.regions[-1].tap == middle and a.engine.params["learning_rate"] == -2.0
    # the fader is on A: A is heard and holds its loop, B (off air) dreams
    perf.frame(0.05)
    assert a.engine.paused and not b.engine.paused and perf.on_air == "A"
    until(lambda: perf.clock.position(deck=1).serial > 0, "deck B plays (in the cue)", perf=perf)
    steps = b.engine.dreamer.steps
    until(lambda: b.engine.dreamer.steps > steps + 1, "deck B dreams on", perf=perf)  # A's last step is done
    held, steps = a.engine.dreamer.steps, b.engine.dreamer.steps
    until(lambda: b.engine.dreamer.steps > steps + 1, "deck B dreams on", perf=perf)
    assert a.engine.dreamer.steps == held
    # each deck has its own objective curve (the HUD plots both); the overlay's main one is the edited deck's
    held_curve = len(a.objectives)
    until(lambda: len(b.objectives) >= 2, "deck B's curve", perf=perf)
    assert a.objectives and len(a.objectives) == held_curve and perf.objectives is b.objectives
    # fade B in over one bar: it lands on B, which now holds while A dreams
    perf.controls.act("fade_bars", 1, "keys")
    assert perf.params["crossfader"] == 1.0
    until(lambda: perf.clock.fader == 1.0, "the fade ends", perf=perf, timeout=30)
    perf.frame(0.05)
    assert perf.on_air == "B" and b.engine.paused and not a.engine.paused
    assert perf.clock.position().serial == perf.clock.position(deck=1).serial  # the master is deck B
    # back to editing A: A's own values come back, and the controls hear about them
    seen.clear()
    assert perf.controls.set("deck", "A", "midi")
    assert perf.params["layer"] == 0.5 and perf.params["learning_rate"] == -2.0 and perf.engine is a.engine
    assert perf.objectives is a.objectives
    assert {(c.name, c.value) for c in seen} >= {("layer", 0.5), ("learning_rate", -2.0), ("deck", "A")}
    # the tempo is shared: both decks' engines get it
    assert perf.set("bpm", 100.0)
    until(lambda: a.engine.params["bpm"] == 100.0 and b.engine.params["bpm"] == 100.0, "the tempo")
    lines = perf.deck_lines()  # the HUD's lines for the decks
    assert lines[0].startswith("deck A (cue, edited): dreams") and lines[1].startswith("deck B (on air): holds")
    # both dream when asked to, in turn: one device, one step at a time
    assert perf.set("dream_decks", "both")
    perf.frame(0.05)
    assert not a.engine.paused and not b.engine.paused
    assert a.engine.turns is not None and a.engine.turns is b.engine.turns
    steps = (a.engine.dreamer.steps, b.engine.dreamer.steps)
    until(lambda: a.engine.dreamer.steps > steps[0] + 3 and b.engine.dreamer.steps > steps[1] + 3, "both dream",
          perf=perf)


def test_the_map_glows_with_both_decks_weighted_by_the_fader(performance):
    """What the map is given to draw: the deck on air's activations at either end of the fader,
    both decks' weighted by its gains between, with each deck's selection for its own halo."""
    perf = performance
    perf.start()
    a = perf.decks["A"]
    until(lambda: a.engine.latest() is not None, "deck A's first clip", perf=perf)
    assert perf.controls.set("deck", "B", "keys") and perf.set("layer", 0.0)
    b = perf.decks["B"]

    def heard_apart():  # both decks play a clip, deck B's of its own selection
        fa, fb = perf.clock.position(deck=0).frame, perf.clock.position(deck=1).frame
        return fa is not None and fb is not None and not np.array_equal(fa.selection, fb.selection)

    until(heard_apart, "both decks play, each its own selection", perf=perf, timeout=120)
    shown = []
    draw = perf.renderer.set_clip

    def seen(acts, sel_a=None, quiet_a=None, sel_b=None, quiet_b=None):
        shown.append((np.array(acts, np.float32), sel_a, sel_b))
        return draw(acts, sel_a, quiet_a, sel_b, quiet_b)

    perf.renderer.set_clip = seen  # the real renderer still draws: this only keeps what it was given
    for x in (0.0, 0.5, 1.0):
        assert perf.set("crossfader", x)
        until(lambda: abs(perf.clock.fader - x) < 1e-6, "the fader glides there", perf=perf)
        shown.clear()
        perf._shown_decks = None  # draw what is heard now, even if nothing changed since
        perf.frame(0.02)
        assert shown, x
        acts, sel_a, sel_b = shown[-1]
        fa, fb = perf.clock.position(deck=0).frame, perf.clock.position(deck=1).frame
        ga, gb = fader_gains(x, perf.params["crossfader_curve"])
        want = {0.0: fa.activations, 1.0: fb.activations}.get(x)
        if want is None:
            want = ga * fa.activations.astype(np.float32) + gb * fb.activations
        assert np.allclose(acts, np.asarray(want, np.float32), atol=1e-3), x
        assert sel_a is not None and np.array_equal(sel_a, fa.selection)
        assert sel_b is not None and np.array_equal(sel_b, fb.selection) and not np.array_equal(sel_a, sel_b)
    assert b.engine is not a.engine


def test_closed_hours_rest_both_decks_and_opening_gives_them_back_to_the_schedule(performance):
    """An installation's night: no deck dreams (the schedule must not wake the one off air), and
    in the morning the deck off air dreams again while the one on air holds."""
    perf = performance
    perf.start()
    a = perf.decks["A"]
    until(lambda: a.engine.latest() is not None, "deck A's first clip", perf=perf)
    assert perf.controls.set("deck", "B", "keys")
    b = perf.decks["B"]
    perf.frame(0.05)
    assert a.engine.paused and not b.engine.paused  # A on air holds, B off air dreams
    perf.rest(True)
    for _ in range(5):
        perf.frame(0.05)
    assert a.engine.paused and b.engine.paused
    steps = b.engine.dreamer.steps
    time.sleep(1.0)
    assert b.engine.dreamer.steps <= steps + 1  # at most the step under way when it was told
    perf.rest(False)
    perf.frame(0.05)
    assert a.engine.paused and not b.engine.paused
    until(lambda: b.engine.dreamer.steps > steps + 2, "deck B dreams again", perf=perf)


def test_a_preset_loads_into_deck_b_while_a_plays(performance, tmp_path):
    from immersions.control.presets import PresetLibrary, PresetPlayer, load_preset

    perf = performance
    perf.start()
    player = PresetPlayer(perf.controls, PresetLibrary([tmp_path]), lambda: 0.0, kept=perf.kept_regions)
    assert perf.set("layer", 1.0) and perf.set("time_jitter", 0.3)
    path = player.save("deep")
    assert "crossfader" not in load_preset(path).values and "deck" not in load_preset(path).values
    assert perf.set("layer", 0.5) and perf.set("time_jitter", 0.1)
    a = perf.decks["A"]
    assert perf.controls.set("deck", "B", "osc")
    player.recall("deep")
    perf.controls.apply()
    b = perf.decks["B"]
    last = len(perf.model.taps) - 1
    until(lambda: b.engine.selection.regions[-1].tap == last, "the preset on deck B")
    assert b.engine.params["time_jitter"] == 0.3
    assert a.engine.params["time_jitter"] == 0.1 and a.engine.selection.regions[-1].tap != last
    assert perf.clock.fader == 0.0 and perf.on_air == "A"  # deck A still plays


def test_the_bcf2000_edits_either_deck_and_its_motors_follow_the_deck_being_edited(performance):
    from immersions.control.midi import MidiController, MidiMap
    from test_midi import Device, Studio, step

    perf = performance
    dev = Device("BCF2000 Port 1")
    ctl = MidiController(perf.controls, MidiMap.named("bcf2000"), backend=Studio(dev).ports())
    cc = lambda name, value: round(perf.params.registry[name].to_unit(value) * 127)
    try:
        dev.cc(73, 127)  # lower row, button 1: edit the other deck
        dev.cc(73, 0)
        step(ctl, perf.controls)
        assert perf.edited == "B" and "B" in perf.decks
        dev.cc(3, 0)  # encoder 3: layer, on deck B
        step(ctl, perf.controls)
        assert perf.params["layer"] == 0.0
        dev.shown.clear()
        dev.cc(73, 127)  # back to deck A: the layer encoder's ring shows A's layer again
        dev.cc(73, 0)
        step(ctl, perf.controls)
        assert perf.edited == "A" and perf.params["layer"] == 0.5
        assert (3, cc("layer", 0.5)) in dev.shown_cc()
        dev.cc(9, 127)  # encoder 1 of group 2: the crossfader, all the way to B
        step(ctl, perf.controls)
        assert perf.params["crossfader"] == 1.0 and perf.clock.fader_target == 1.0
        dev.cc(70, 127)  # upper row, button 6: fade back to A over fade_length bars
        dev.cc(70, 0)
        step(ctl, perf.controls)
        assert perf.clock.fader_target == 0.0 and perf.params["crossfader"] == 0.0
        assert (9, 0) in dev.shown_cc()  # the crossfader's ring shows where the fade goes
    finally:
        ctl.close()
