"""The autopilot plays a real control hub (registry-validated values) over a real model's taps,
hearing real DreamFrame instances built from numpy; the guard and the loudness rider judge
real waveforms; curated scenes walk the real preset library through the real preset player."""

from collections import Counter

import numpy as np
import pytest

from immersions.control.hub import AUTOPILOT, ControlHub
from immersions.registry import REGISTRY
from immersions.frames import HUD_BINS, HUD_FRAMES, DreamFrame
from immersions.dream.loop import start_clip
from immersions.errors import ImmersionsError
from immersions.install.autopilot import (REGION_SHAPES, STEERING, Autopilot, AutopilotConfig, Curator, Guard,
                                          Scenes)
from immersions.install.loudness import (LoudnessRider, clip_loudness, gain_for, read_clip, spectral_flatness)
from immersions.model.config import preset
from immersions.model.cpc import CPC
from immersions.paths import assets_dir

RATE = 16000
LOOP = 4 * RATE


class Board:
    """A tiny real target for the hub: a registry snapshot, validated on every change."""

    def __init__(self):
        self.params = REGISTRY.defaults()
        self.last_error = None

    def set(self, name, value) -> bool:
        try:
            self.params = self.params.replace(**{name: value})
            return True
        except ImmersionsError as err:
            self.last_error = str(err)
            return False


def make_hub():
    """A hub with the actions a Performance provides, and a log of everything done through it."""
    hub = ControlHub(Board())
    events = []
    hub.listen(lambda change: events.append(("set", change.name, change.value, change.source)))
    for action in ("select", "restart"):
        hub.handle(action, lambda arg, source, action=action: events.append(("act", action, arg, source)))
    return hub, events


@pytest.fixture(scope="module")
def taps():
    return CPC(preset("micro")).taps


@pytest.fixture(scope="module")
def groove():
    return start_clip("groove", LOOP, RATE)


def frame(serial, clip, scalogram=None, objective=-0.1, nan_resets=0, seed=None):
    """A DreamFrame as the engine publishes it; a fresh random scalogram unless one is given."""
    rng = np.random.default_rng(serial if seed is None else seed)
    if scalogram is None:
        scalogram = rng.integers(0, 256, (HUD_BINS, HUD_FRAMES), dtype=np.uint8)
    return DreamFrame(serial, np.asarray(clip, np.float32), RATE, np.zeros((8, 64), np.float16), np.zeros(8, bool),
                      objective, serial, 5.0, nan_resets, scalogram, "micro")


def fly(pilot, loops, clip):
    """Hear `loops` loops of a changing, musical clip, a few display frames each."""
    for loop in range(1, loops + 1):
        heard = frame(loop, clip)
        for _ in range(3):
            pilot.tick(loop, heard)


def test_the_same_seed_makes_the_same_moves(taps, groove):
    runs = []
    for seed in (7, 7, 8):
        hub, events = make_hub()
        fly(Autopilot(hub, taps, seed=seed), 120, groove)
        runs.append(events)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert all(source == AUTOPILOT for *_, source in runs[0])


def test_every_move_is_inside_the_registry_and_the_steering_table(taps, groove):
    hub, events = make_hub()
    pilot = Autopilot(hub, taps, seed=1, config=AutopilotConfig(steer_chance=1.0, keep_chance=0.3,
                                                                restart_chance=0.3))
    fly(pilot, 400, groove)
    assert hub.rejected == 0
    tables = dict(STEERING)
    for _, shape in REGION_SHAPES.values():  # a region parameter ranges over all the shapes
        for name, (low, high) in shape.items():
            was = tables.get(name, (low, high))
            tables[name] = (min(was[0], low), max(was[1], high))
    seen = Counter()
    for kind, name, value, _ in events:
        if kind != "set":
            continue
        assert REGISTRY[name].validate(value) == value  # the registry takes it as it is
        if name in tables:
            low, high = tables[name]
            assert low <= value <= high, (name, value)
        seen[name] += 1
    assert set(STEERING) <= set(seen), "every steering parameter is moved over a long run"
    assert {"optimizer", "repeat_every", "progression", "layer", "channel_pos", "pitch_span", "camera_ease"} <= set(seen)


def test_a_long_run_visits_shallow_and_deep_taps_with_narrow_and_wide_regions(taps, groove):
    hub, events = make_hub()
    pilot = Autopilot(hub, taps, seed=3)
    fly(pilot, 600, groove)
    n = len(taps)
    visited = set(pilot.visited)
    assert visited & set(range(n // 4)), "shallow encoder taps"
    assert visited & set(range(n - n // 4, n)), "deep context taps"
    assert len(visited) >= 0.8 * n
    # a walk, not noise: most moves go to a neighbouring tap, some leap far
    layers = [round(v * (n - 1)) for kind, name, v, _ in events if kind == "set" and name == "layer"]
    steps = np.abs(np.diff(layers))
    assert np.mean(steps <= 2) > 0.6 and np.any(steps >= n // 3)
    spans = [v for kind, name, v, _ in events if kind == "set" and name == "channel_span"]
    assert min(spans) == 0.0 and max(spans) >= 0.5  # one channel ... most of them
    # pacing: about every 4 loops, never two selections in one loop
    assert 600 / 6 <= pilot.selections <= 600 / 3
    # layering and restarts happen, from every kind of start
    actions = Counter(name for kind, name, *_ in events if kind == "act")
    assert actions["restart"] == pilot.restarts >= 5
    starts = {v for kind, name, v, _ in events if kind == "set" and name == "start_clip"}
    assert starts == {"silence", "noise", "kick", "groove"}
    assert ("set", "keep", True, AUTOPILOT) in events and actions["select"] >= 1
    assert hub.params["camera_follow"] and hub.params["camera_ease"] == AutopilotConfig().camera_ease


def test_layers_are_kept_and_released(taps, groove):
    hub, events = make_hub()
    pilot = Autopilot(hub, taps, seed=5, config=AutopilotConfig(keep_chance=1.0, max_layers=3))
    fly(pilot, 40, groove)
    keeps = [v for kind, name, v, _ in events if kind == "set" and name == "keep"]
    # keep on (2 regions), select (3), then off again at the limit: and round again
    assert keeps[:2] == [True, False] and keeps.count(True) >= 2
    assert pilot.layers <= 3


def test_a_silent_loop_makes_it_move_on_after_the_grace(taps):
    config = AutopilotConfig(grace_loops=1, silence_loops=2)
    hub, events = make_hub()
    pilot = Autopilot(hub, taps, seed=0, config=config)
    silence = np.zeros(LOOP, np.float32)
    for loop in range(1, 4):
        pilot.tick(loop, frame(loop, silence))
    assert pilot.reasons == {"silence": 1} and pilot.restarts == 1
    assert events[-1] == ("act", "restart", None, AUTOPILOT)
    assert hub.params["start_clip"] in ("kick", "groove")  # moving on starts from a starter clip


def test_a_stuck_loop_makes_it_move_on(taps, groove):
    config = AutopilotConfig(stuck_loops=5, loops_per_selection=1000, jitter=0.0)
    hub, _ = make_hub()
    pilot = Autopilot(hub, taps, seed=0, config=config)
    same = frame(1, groove)  # the same clip again and again: the dreamer stopped
    for loop in range(1, 6):
        pilot.tick(loop, same)
        assert pilot.restarts == 0
    pilot.tick(6, same)
    assert pilot.reasons == {"stuck": 1} and pilot.selections == 2 and pilot.restarts == 1


def test_noise_nan_resets_and_a_broken_objective_move_on(taps, groove):
    white = np.random.default_rng(0).uniform(-0.5, 0.5, LOOP).astype(np.float32)
    assert spectral_flatness(white, RATE) > 0.8 > 0.1 > spectral_flatness(groove, RATE)
    config = AutopilotConfig(grace_loops=0, noise_loops=3, nan_loops=2, loops_per_selection=1000, jitter=0.0)
    for make, reason, loops in ((lambda i: frame(i, white), "noise", 3),
                                (lambda i: frame(i, groove, nan_resets=i), "nan", 3),
                                (lambda i: frame(i, groove, objective=float("nan")), "objective", 1)):
        hub, _ = make_hub()
        pilot = Autopilot(hub, taps, seed=0, config=config)
        for loop in range(1, loops + 1):
            pilot.tick(loop, make(loop))
        assert pilot.reasons == {reason: 1}, reason


def test_music_does_not_trip_the_guard(taps, groove):
    guard = Guard()
    assert all(guard.observe(frame(i, groove * 0.5)) is None for i in range(1, 100))


def test_a_loud_loop_turns_the_volume_down_smoothly(groove):
    loud = np.clip(groove * 4.0, -1, 1)  # squashed to full scale: very loud
    quiet = groove * 0.01
    reading = read_clip(frame(1, loud))
    assert reading.loudness > -10 and reading.peak <= 1.0
    rider = LoudnessRider(gain=0.8, target=-16.0)
    rider.observe(reading)
    gains = [rider.step(1 / 30) for _ in range(30 * 4)]
    assert gains[-1] == pytest.approx(gain_for(reading.loudness, reading.peak), rel=1e-3) and gains[-1] < 0.5
    assert clip_loudness(loud * gains[-1], RATE) == pytest.approx(-16.0, abs=0.1)
    steps_db = np.abs(np.diff(20 * np.log10(gains)))
    assert steps_db.max() <= 12.0 / 30 + 1e-6  # a glide of at most 12 dB/s, never a step
    # the ceiling: unity for ordinary loops, more only for very quiet ones, peaks below 0 dBFS
    ordinary = read_clip(frame(2, groove * 0.7))  # 6.5 dB below a -8 LUFS target: not very quiet
    assert gain_for(ordinary.loudness, ordinary.peak, target=-8.0) == 1.0
    faint = read_clip(frame(3, quiet))
    lifted = gain_for(faint.loudness, faint.peak)
    assert 1.0 < lifted <= REGISTRY["volume"].maximum and lifted * faint.peak < 1.0
    assert gain_for(float("-inf"), 0.0) is None  # silence is not boosted; the guard deals with it


def test_loudness_of_a_short_loop_is_measured_round_and_round(sine):
    tone = sine(1000.0, 0.5, RATE, amplitude=0.5)
    long_tone = np.tile(tone, 8)
    assert clip_loudness(tone, RATE) == pytest.approx(clip_loudness(long_tone, RATE), abs=0.2)
    assert clip_loudness(np.zeros(RATE, np.float32), RATE) == float("-inf")


def test_scene_lists_are_checked_entry_by_entry(tmp_path):
    good = tmp_path / "evening.toml"
    good.write_text('morph_loops = 3\n[[scene]]\npreset = "pads"\nloops = 8\n'
                    '[[scene]]\npreset = 2\nloops = 4\nmorph_loops = 0\n')
    scenes = Scenes.load(good)
    assert [(c.preset, c.loops, c.morph_loops) for c in scenes.cues] == [("pads", 8, 3), (2, 4, 0)]
    for body, words in (('[[scene]]\npreset = "pads"\nloops = 0\n', "scene 1: loops = 0"),
                        ('[[scene]]\npreset = "pads"\nloops = 8\n[[scene]]\nloops = 8\n', "scene 2: preset = None"),
                        ('[[scene]]\npreset = "pads"\nloops = 8\nmorph_loops = 99\n', "scene 1: morph_loops"),
                        ('[[scene]]\npreset = "pads"\nlops = 8\n', "scene 1: unknown key 'lops'"),
                        ('title = "x"\n', "unknown setting 'title'"),
                        ('[[scene]\n', "not valid TOML"),
                        ('', "no [[scene]] entries")):
        bad = tmp_path / "bad.toml"
        bad.write_text(body)
        with pytest.raises(ImmersionsError) as err:
            Scenes.load(bad)
        assert str(bad) in str(err.value) and words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImmersionsError, match="no scene list at"):
        Scenes.load(tmp_path / "missing.toml")


def test_curated_scenes_walk_the_presets_for_their_loops(taps, groove, tmp_path):
    presets = pytest.importorskip("immersions.control.presets")
    library = presets.PresetLibrary([assets_dir() / "presets"])
    hub, events = make_hub()
    player = presets.PresetPlayer(hub, library, lambda: 4.0)
    scenes = Scenes.load(assets_dir() / "scenes" / "example.toml")
    curator = Curator(hub, scenes, player, library, config=AutopilotConfig(stuck_loops=1000))
    recalled = []  # (preset heard, scene index, loop it began)
    total = sum(c.loops for c in scenes.cues)
    for loop in range(1, 2 * total + 1):  # round the list twice
        for _ in range(4):  # display frames of one loop: the morph glides
            curator.tick(loop, frame(loop, groove))
            player.tick(1.0)
        if not recalled or recalled[-1][1] != curator.index:
            recalled.append((player.current, curator.index, loop))
    names = [name for name, _, _ in recalled]
    expected = [library.get(c.preset).name for c in scenes.cues]
    assert names == expected + expected
    starts = [start for _, _, start in recalled]
    assert np.diff(starts).tolist() == [c.loops for c in scenes.cues] + [c.loops for c in scenes.cues][:-1]
    # the last scene's values arrived through the hub, from the preset player
    last = library.get(scenes.cues[-1].preset)
    assert all(hub.params[name] == value for name, value in last.values.items())
    assert hub.rejected == 0 and curator.reasons == {}


def test_a_scene_list_naming_a_missing_preset_fails_before_the_show(taps, tmp_path):
    presets = pytest.importorskip("immersions.control.presets")
    library = presets.PresetLibrary([assets_dir() / "presets"])
    hub, _ = make_hub()
    path = tmp_path / "scenes.toml"
    path.write_text('[[scene]]\npreset = "pads"\nloops = 4\n[[scene]]\npreset = "no such"\nloops = 4\n')
    with pytest.raises(ImmersionsError) as err:
        Curator(hub, Scenes.load(path), presets.PresetPlayer(hub, library, lambda: 4.0), library)
    message = str(err.value)
    assert str(path) in message and "scene 2" in message and "no preset called 'no such'" in message


def test_a_curated_scene_that_falls_silent_is_left_for_the_next(taps, groove):
    presets = pytest.importorskip("immersions.control.presets")
    library = presets.PresetLibrary([assets_dir() / "presets"])
    hub, events = make_hub()
    player = presets.PresetPlayer(hub, library, lambda: 4.0)
    scenes = Scenes.load(assets_dir() / "scenes" / "example.toml")
    curator = Curator(hub, scenes, player, library, config=AutopilotConfig(grace_loops=1, silence_loops=2))
    curator.tick(1, frame(1, groove))
    assert curator.index == 0
    silence = np.zeros(LOOP, np.float32)
    loop = 1
    while curator.index == 0:
        loop += 1
        assert loop < scenes.cues[0].loops, "left before the scene would have ended"
        curator.tick(loop, frame(loop, silence))
    assert curator.reasons == {"silence": 1} and curator.restarts == 1
    assert ("act", "restart", None, AUTOPILOT) in events and hub.params["start_clip"] in ("kick", "groove")


def test_with_the_room_heard_the_autopilot_listens_and_captures_and_without_it_walks_as_before(taps, groove):
    hub, events = make_hub()
    captures = []
    hub.handle("capture", lambda arg, source: captures.append(source) or True)
    pilot = Autopilot(hub, taps, seed=7, config=AutopilotConfig(listen_chance=0.5, capture_chance=0.2), room=True)
    fly(pilot, 200, groove)
    listens = [value for kind, name, value, _ in events if kind == "set" and name == "listen"]
    assert True in listens and False in listens  # some selections listen to the room, others do not
    assert pilot.listened >= 10 and len(captures) == pilot.captures >= 5 and set(captures) == {AUTOPILOT}
    assert hub.params["capture_to"] == "start" and hub.rejected == 0  # a capture restarts from the room
    # without sound in, it never touches listen or capture
    hub, events = make_hub()
    fly(Autopilot(hub, taps, seed=7, config=AutopilotConfig(listen_chance=1.0, capture_chance=1.0)), 120, groove)
    assert not any(name in ("listen", "capture_to") for _, name, *_ in events)


def test_a_layered_region_is_sometimes_kept_quiet_and_a_lone_one_never(taps, groove):
    hub, events = make_hub()
    pilot = Autopilot(hub, taps, seed=5, config=AutopilotConfig(keep_chance=1.0, max_layers=3, quiet_chance=1.0))
    fly(pilot, 60, groove)
    changes = [(name, v) for kind, name, v, _ in events if kind == "set" and name in ("keep", "quiet")]
    assert ("quiet", True) in changes and ("quiet", False) in changes
    # quiet goes on only while keep is on, and off right after keep goes off: a lone region excites
    keep = quiet = False
    for i, (name, value) in enumerate(changes):
        if name == "keep":
            if not value and quiet:
                assert changes[i + 1] == ("quiet", False)
            keep = value
        else:
            quiet = value
            assert keep or not quiet
    hub2, events2 = make_hub()
    fly(Autopilot(hub2, taps, seed=5, config=AutopilotConfig(quiet_chance=0.0)), 60, groove)
    assert all(not v for kind, name, v, _ in events2 if kind == "set" and name == "quiet")
    with pytest.raises(ImmersionsError, match="quiet_chance"):
        AutopilotConfig(quiet_chance=1.5)


def test_a_fade_is_as_ready_as_the_share_of_its_prepared_rise_that_is_heard_when_it_ends():
    from immersions.frames import faded_in_objective, heard_objective
    from immersions.install.fades import FadeMeter, Move, readiness

    assert readiness(1.0, 1.8, 2.0) == pytest.approx(0.8)  # heard 0.8 of the rise from the cold start
    assert readiness(-0.5, -0.5, 0.5) == 0.0 and readiness(-0.5, 0.5, 0.5) == 1.0
    assert readiness(0.3, 0.2, 0.1) == pytest.approx(0.5)  # a dream that fell: the share of its fall
    assert readiness(0.4, 0.4, 0.4) is None  # nothing prepared: no share to speak of
    assert readiness(0.1, float("nan"), 0.4) is None
    # the loop heard, as bench cue reads it: a clip dreamed before the move counts as the cold start
    mask = np.zeros(8, bool)
    before, after = (DreamFrame(s, np.zeros(4, np.float32), RATE, np.zeros((8, 64), np.float16), mask, o, s, 5.0, 0,
                                np.zeros((HUD_BINS, HUD_FRAMES), np.uint8), "micro") for s, o in ((3, 9.0), (7, 0.9)))
    assert heard_objective(before, 4, 0.2) == 0.2 and heard_objective(after, 4, 0.2) == 0.9
    assert heard_objective(None, 4, 0.2) == 0.2
    # on air counted by the fader's power: all of the faded-in deck at the fade's end, the start before it
    assert faded_in_objective(1.0, 0.9, 0.2) == 0.9 and faded_in_objective(0.0, 0.9, 0.2) == 0.2
    assert faded_in_objective(0.5, 0.9, 0.2) == pytest.approx(0.55)

    # the cold start: the first frame after the move from which on the selection is the one it ends with
    def dreamed(serial, objective, selected):
        selection = np.zeros(8, bool)
        selection[selected] = True
        return DreamFrame(serial, np.zeros(4, np.float32), RATE, np.zeros((8, 64), np.float16), selection, objective,
                          serial, 5.0, 0, np.zeros((HUD_BINS, HUD_FRAMES), np.uint8), "micro")

    move = Move("B", since=2)
    for f in (dreamed(2, 5.0, 0), dreamed(3, 0.1, 0), dreamed(3, 0.1, 0), dreamed(4, 0.2, 5), dreamed(6, 0.7, 5)):
        move.watch(f)  # serial 2: before the move; 3: a step taken before the move's new region arrived
    assert move.cold.serial == 4 and move.cold.objective == 0.2

    # the summary: fades measured, the lowest and the median, how many at 80 % or more; no rise apart
    meter = FadeMeter(perf=None)
    for cold, heard, newest in ((0.0, 1.0, 1.0), (0.0, 0.5, 1.0), (0.2, 0.2, 0.2), (1.0, 1.9, 2.0), (2.0, 2.0, 2.0)):
        meter.record("B", cold, heard, newest)
    summary = meter.summary()
    assert summary["measured"] == 3 and summary["min"] == 0.5 and summary["median"] == 0.9
    assert summary["at_least_80_percent"] == 2 and summary["no_rise"] == 2 and summary["unmeasured"] == {}
    assert [f["ready"] for f in meter.figures()["fades"]] == [1.0, 0.5, None, 0.9, None]
    assert [f["why"] for f in meter.figures()["fades"]] == [None, None, "no rise", None, "no rise"]


def test_on_two_decks_a_moves_wait_starts_when_the_fade_that_took_its_deck_off_air_is_over(taps, groove):
    """The deck a fade takes off air holds its loop until the fade is over: the move prepared on
    it gets its whole wait after that. (Counted from the fade's start, the loops heard during the
    fade ate the wait: a 3-loop move dreamed for 3 s.)"""
    hub, events = make_hub()
    fades, fading = [], {"until": -1}
    loop = {"now": 0}

    def fade(arg, source):
        fades.append(loop["now"])
        fading["until"] = loop["now"] + 2  # the fade is heard for two loops
        hub.set("crossfader", 1.0 if hub.params["crossfader"] < 0.5 else 0.0, source)
        return True

    hub.handle("fade_bars", fade)
    pilot = Autopilot(hub, taps, seed=2, config=AutopilotConfig(decks=1, loops_per_selection=3, jitter=0.0))
    pilot.fading = lambda: loop["now"] < fading["until"]
    for n in range(1, 30):
        loop["now"] = n
        heard = frame(n, groove)
        for _ in range(3):
            pilot.tick(n, heard)
    # the first move (made on loop 1) is due 3 loops on; each next one 3 loops after its fade is over
    assert fades[:4] == [4, 9, 14, 19]
    assert pilot.fades == len(fades) and pilot.selections == len(fades) + 2  # deck A's first, B's first, one a fade

    hub2, _ = make_hub()
    fades2 = []
    hub2.handle("fade_bars", lambda arg, source: fades2.append(loop["now"]) or True)
    plain = Autopilot(hub2, taps, seed=2, config=AutopilotConfig(decks=1, loops_per_selection=3, jitter=0.0))
    for n in range(1, 30):  # told nothing of fades (no session): the wait counts from the fade's start
        loop["now"] = n
        plain.tick(n, frame(n, groove))
    assert fades2[:4] == [4, 7, 10, 13]
