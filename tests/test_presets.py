import math

import pytest

from immersions.control.hub import GUI, MIDI, PRESET, ControlHub, Values
from immersions.registry import DECK_GROUP, REGISTRY, Snapshot
from immersions.control.presets import (
    Morph, PresetLibrary, PresetPlayer, load_preset, shipped_presets_dir, smoothstep, user_presets_dir, write_preset,
)
from immersions.errors import ImmersionsError


class Params(Values):
    """A real hub target (a Snapshot validated by the registry) that counts what it was asked."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def set(self, name, value) -> bool:
        self.calls.append(name)
        return super().set(name, value)


def scene(folder, file, name, **values):
    return write_preset(folder / f"{file}.toml", name, values)


@pytest.fixture
def user(tmp_path, monkeypatch):
    folder = tmp_path / "user"
    monkeypatch.setenv("IMMERSIONS_PRESETS", str(folder))
    return folder


# -- files ------------------------------------------------------------------------------------------


def test_save_and_load_round_trip_every_parameter(tmp_path, user):
    snap = REGISTRY.defaults().replace(learning_rate=-3.25, optimizer="adam", keep=True, bars=5,
                                       crossfade=0.0123, edge_count=2_345_678, start_clip="kick", bloom=False)
    path = PresetLibrary([tmp_path / "shipped", user]).save("My Scene #2", snap)
    assert path == user / "my-scene-2.toml" and user_presets_dir() == user
    preset = load_preset(path)
    assert preset.name == "My Scene #2" and preset.skipped == []
    decks = {p.name for p in REGISTRY if p.group == DECK_GROUP}  # which deck, the fader: not a scene's
    assert decks >= {"deck", "crossfader"}
    assert preset.values == {n: v for n, v in snap.values().items() if n not in decks}
    assert Snapshot(REGISTRY, {**snap.values(), **preset.values}) == snap
    assert isinstance(preset.values["bars"], int) and preset.values["keep"] is True


def test_unknown_and_bad_values_are_skipped_and_named(tmp_path, caplog):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\nlayer = 0.3\n[values]\nfoo = 1\nlearning_rate = 9\nbars = 2.5\n'
                    'optimizer = "rmsprop"\nbloom = "maybe"\nvolume = 0.5\nstart_clip = "kick"\n')
    preset = load_preset(path)
    assert preset.values == {"volume": 0.5, "start_clip": "kick"}
    assert preset.skipped == ["layer (not in [values])", "foo (unknown)", "learning_rate=9 (outside -5 .. 2 log10)",
                              "bars=2.5 (expected a whole number, got 2.5)",
                              "optimizer='rmsprop' (not one of sgd, adam)",
                              "bloom='maybe' (expected on/off (true/false), got 'maybe')"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"preset 'x' ({path}): skipped layer")
    assert "learning_rate=9" in warnings[0] and "\n" not in warnings[0]


@pytest.mark.parametrize("text", ['name = "x"\n[values\nlayer = 0.3\n', 'name = \n', 'values = 3\n', 'name = 4\n'])
def test_a_malformed_file_is_one_line_error_naming_it(tmp_path, text):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ImmersionsError, match="broken.toml") as err:
        load_preset(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ImmersionsError, match="cannot read preset file"):
        load_preset(tmp_path / "missing.toml")


def test_every_shipped_preset_loads_cleanly_and_sounds_different():
    library = PresetLibrary([shipped_presets_dir()])
    assert 5 <= len(library) <= 8
    files = [p.path.name for p in library.presets]
    assert files == sorted(files)
    for preset in library.presets:
        assert preset.skipped == [] and preset.description
        assert {"layer", "pitch_pos", "pitch_span", "time_jitter", "learning_rate"} <= set(preset.values)
        # tempo, loop length, level and morph time stay the performer's
        assert not {"bpm", "bars", "volume", "morph_loops"} & set(preset.values)
        Snapshot(REGISTRY, {**REGISTRY.defaults().values(), **preset.values})
    sounds = {tuple(sorted((k, v) for k, v in p.values.items() if REGISTRY[k].group != "Visuals"))
              for p in library.presets}
    assert len(sounds) == len(library)
    by = {p.name: p.values for p in library.presets}
    assert by["hats and air"]["high_frequency_penalty"] == 0 and by["hats and air"]["pitch_pos"] >= 0.7
    assert by["deep context"]["layer"] == 1.0
    assert by["pads"]["time_jitter"] >= 1.0
    assert by["from silence"]["start_clip"] == "silence"


# -- the library ------------------------------------------------------------------------------------


def test_slots_follow_file_names_then_user_presets_and_a_user_preset_overrides(tmp_path):
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    scene(shipped, "02-b", "bravo", layer=0.2)
    scene(shipped, "01-a", "alpha", layer=0.1)
    scene(shipped, "03-c", "charlie", layer=0.3)
    (shipped / "04-broken.toml").write_text("not toml ===")  # skipped with a warning, the rest stays
    scene(user, "zulu", "zulu", layer=0.9)
    scene(user, "bravo", "Bravo", layer=0.25)  # the performer's own "bravo" takes its slot
    library = PresetLibrary([shipped, user])
    assert library.names() == ["alpha", "Bravo", "charlie", "zulu"]
    assert library.get(2).values == {"layer": 0.25} and library.get(2).path.parent == user
    assert library.get("charlie") is library.get(3) and library.get("ZULU") is library.get(4)
    assert library.get("3").name == "charlie"
    assert library.next("alpha").name == "Bravo" and library.next("zulu").name == "alpha"
    assert library.previous("alpha").name == "zulu" and library.previous("charlie").name == "Bravo"
    assert library.next(None).name == "alpha" and library.previous("gone").name == "zulu"
    for bad, message in ((5, "no preset in slot 5: slots are 1 .. 4"), (0, "slot 0"), ("delta", "no preset called 'delta'"),
                         (True, "give a slot number")):
        with pytest.raises(ImmersionsError, match=message):
            library.get(bad)
    with pytest.raises(ImmersionsError, match="no presets found"):
        PresetLibrary([tmp_path / "nothing"]).get(1)


def test_save_overwrites_the_same_name_and_never_another_preset(tmp_path):
    user = tmp_path / "user"
    library = PresetLibrary([tmp_path / "shipped", user])
    snap = REGISTRY.defaults()
    first = library.save("night", snap.replace(layer=0.1))
    library.reload()
    again = library.save("Night", snap.replace(layer=0.2))
    assert again == first and load_preset(first).values["layer"] == 0.2
    other = library.save("night!", snap.replace(layer=0.3))  # same slug, another name
    library.reload()
    assert other != first and sorted(library.names()) == ["Night", "night!"]
    with pytest.raises(ImmersionsError, match="at least one letter"):
        library.save("***", snap)


# -- morphs -------------------------------------------------------------------------------------------


def test_morph_glides_in_unit_space_and_switches_choices_at_the_end():
    start = REGISTRY.defaults().replace(crossfade=0.01, bars=1, layer=0.0, bloom=True, optimizer="sgd")
    target = {"crossfade": 1.0, "bars": 8, "layer": 1.0, "bloom": False, "optimizer": "adam", "volume": start["volume"]}
    morph = Morph(start, target, 4.0)
    assert set(morph.names) == {"crossfade", "bars", "layer", "bloom", "optimizer"}  # volume does not differ
    assert morph.values_at(0.0) == {k: start[k] for k in morph.names}
    half = morph.values_at(2.0)
    assert half["crossfade"] == pytest.approx(math.sqrt(0.01 * 1.0))  # geometric midpoint of a log parameter
    assert half["layer"] == pytest.approx(0.5) and half["bars"] in (4, 5) and isinstance(half["bars"], int)
    assert half["bloom"] is True and half["optimizer"] == "sgd"
    quarter = morph.values_at(1.0)
    assert quarter["layer"] == pytest.approx(smoothstep(0.25)) and quarter["layer"] < 0.25  # eased: slow start
    assert quarter["crossfade"] == pytest.approx(0.01 * 100 ** smoothstep(0.25))
    late = morph.values_at(3.999)
    assert late["bloom"] is True and late["optimizer"] == "sgd" and not morph.done(3.999)
    assert morph.done(4.0) and morph.values_at(4.0) == {k: target[k] for k in morph.names}
    previous = -1.0
    for i in range(41):  # monotonic, within the range, integers stay integers
        v = morph.values_at(i * 0.1)
        assert previous <= v["crossfade"] <= 1.0 and isinstance(v["bars"], int)
        previous = v["crossfade"]


def test_a_morph_of_no_length_lands_at_once_and_bad_targets_are_refused():
    start = REGISTRY.defaults()
    morph = Morph(start, {"layer": 0.9, "keep": True}, 0)
    assert morph.done(0.0) and morph.values_at(0.0) == {"layer": 0.9, "keep": True}
    with pytest.raises(ImmersionsError, match="outside"):
        Morph(start, {"layer": 3.0}, 1.0)
    with pytest.raises(ImmersionsError, match="unknown parameter"):
        Morph(start, {"nope": 3.0}, 1.0)


# -- the player on a real hub -----------------------------------------------------------------------------


@pytest.fixture
def stage(tmp_path):
    """A hub over a real validated target, a library of three scenes and a player at 2 s per loop."""
    shipped = tmp_path / "shipped"
    scene(shipped, "01", "low", layer=0.0, crossfade=0.01, bloom=False, morph_loops=8)
    scene(shipped, "02", "high", layer=1.0, crossfade=1.0, pitch_pos=0.9, start_clip="silence")
    scene(shipped, "03", "same", layer=0.5)
    hub = ControlHub(Params())
    restarts = []
    hub.handle("restart", lambda arg, source: restarts.append(hub.params["start_clip"]))
    player = PresetPlayer(hub, PresetLibrary([shipped, tmp_path / "user"]), lambda: 2.0)
    return hub, player, restarts


def run(player, seconds, fps=60):
    for _ in range(int(round(seconds * fps))):
        player.tick(1.0 / fps)


def test_recall_morphs_over_the_loops_in_force_and_lands_exactly(stage):
    hub, player, restarts = stage
    hub.set("morph_loops", 2, GUI)  # 2 loops x 2 s = 4 s
    hub.target.calls.clear()
    pushes = []
    hub.listen(lambda change: pushes.append(change) if change.source == PRESET else None)
    player.recall(1, source=MIDI)
    assert player.current == "low" and player.morphing and hub.params["layer"] == 0.5
    run(player, 2.0)
    assert 0.0 < hub.params["layer"] < 0.5 and player.morphing
    assert hub.params["crossfade"] == pytest.approx(math.sqrt(0.05 * 0.01), rel=0.05)  # eased log midpoint
    assert hub.params["bloom"] is True  # toggles switch at the end
    assert hub.params["morph_loops"] == 5  # integers glide rounded
    run(player, 1.9)
    assert player.morphing
    run(player, 0.2)
    assert not player.morphing and player.progress == 1.0
    assert (hub.params["layer"], hub.params["crossfade"], hub.params["bloom"], hub.params["morph_loops"]) == (0.0, 0.01, False, 8)
    assert restarts == []  # start_clip did not change
    # only values that moved are pushed: a toggle once, at the end; nothing once the morph is over
    calls = hub.target.calls
    assert calls.count("bloom") == 1 and calls.count("morph_loops") == 6  # 2 -> 8, one whole step at a time
    assert len(calls) == len(pushes) and all(p.source == PRESET for p in pushes)
    count = len(calls)
    run(player, 1.0)
    assert len(calls) == count


def test_the_recalled_presets_own_morph_time_does_not_stretch_its_morph(stage):
    hub, player, _ = stage
    hub.set("morph_loops", 1, GUI)  # 2 s, although "low" itself says 8 loops
    player.recall("low")
    run(player, 2.05)
    assert not player.morphing and hub.params["layer"] == 0.0


def test_a_manual_change_during_a_morph_wins_and_a_new_start_clip_restarts_at_the_end(stage):
    hub, player, restarts = stage
    hub.set("morph_loops", 1, GUI)
    player.recall("high")
    run(player, 1.0)
    assert 0.5 < hub.params["layer"] < 1.0
    hub.request("layer", 0.2, MIDI)  # the performer grabs the layer knob
    hub.apply()
    run(player, 0.5)
    assert hub.params["layer"] == 0.2 and restarts == []
    assert hub.params["start_clip"] == "groove"  # choices switch at the end
    run(player, 0.6)
    assert not player.morphing
    assert hub.params["layer"] == 0.2 and hub.params["crossfade"] == 1.0 and hub.params["pitch_pos"] == 0.9
    assert hub.params["start_clip"] == "silence" and restarts == ["silence"]


def test_preset_actions_through_the_hub_with_slots_names_and_steps(stage):
    hub, player, restarts = stage
    hub.set("morph_loops", 0, GUI)  # at once
    hub.request_action("preset", 3, MIDI)
    hub.apply()
    assert player.current == "same" and hub.params["layer"] == 0.5 and not player.morphing
    hub.request_action("preset", 2, MIDI)
    hub.apply()
    assert hub.params["layer"] == 1.0 and restarts == ["silence"]
    hub.act("preset_next", None, GUI)
    assert player.current == "same"
    hub.act("preset_next", None, GUI)
    assert player.current == "low" and hub.params["layer"] == 0.0
    hub.act("preset_previous", None, GUI)
    assert player.current == "same"
    hub.act("preset", "High", GUI)
    assert player.current == "high"
    rejected = hub.rejected
    hub.request_action("preset", 9, MIDI)
    hub.apply()
    assert hub.rejected == rejected + 1 and "no preset in slot 9" in hub.last_error and player.current == "high"


def test_save_from_the_player_adds_a_slot(stage):
    hub, player, _ = stage
    hub.set("edge_brightness", 3.5, GUI)
    path = player.save("my night")
    assert path.parent.name == "user" and player.current == "my night"
    assert player.library.names()[-1] == "my night" and player.library.get(4).values["edge_brightness"] == 3.5
    assert set(player.library.get(4).values) == {p.name for p in REGISTRY if p.group != DECK_GROUP}


def test_the_default_library_is_the_shipped_scenes_then_the_users_folder(tmp_path, monkeypatch, user):
    scene(user, "mine", "mine", layer=0.5)
    library = PresetLibrary()
    assert library.folders == [shipped_presets_dir(), user] and library.names()[-1] == "mine"
    assert library.names()[:2] == ["kick pressure", "deep context"]
    monkeypatch.delenv("IMMERSIONS_PRESETS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert user_presets_dir() == tmp_path / "config" / "immersions" / "presets"


def test_a_preset_carries_the_quiet_toggle_of_its_region(tmp_path):
    from immersions.control.presets import load_preset, write_preset

    path = write_preset(tmp_path / "quiet.toml", "quiet", {"layer": 0.4, "keep": True, "quiet": True})
    assert load_preset(path).values == {"layer": 0.4, "keep": True, "quiet": True}
    (tmp_path / "typo.toml").write_text('name = "typo"\n[values]\nquiet = "flase"\n')
    preset = load_preset(tmp_path / "typo.toml")
    assert preset.values == {} and preset.skipped and preset.skipped[0].startswith("quiet=")


def test_a_preset_keeps_the_frozen_regions_of_a_compound_selection_by_tap_name(tmp_path):
    from immersions.control.presets import load_preset, write_preset
    from immersions.selection import NamedRegion

    regions = (NamedRegion("ar 9", (0.2, 0.1), (0.5, 1.0), (0.5, 1.0)),
               NamedRegion("enc 3 conv 1", (0.7, 0.1), (0.0, 0.5), (0.5, 1.0), -2.0))
    path = write_preset(tmp_path / "compound.toml", "compound", {"keep": True}, regions=regions)
    assert "[[region]]" in path.read_text() and 'layer = "enc 3 conv 1"' in path.read_text()
    assert load_preset(path).regions == regions
    # a bad region is skipped and named; the good one and the values stay
    path.write_text('name = "x"\n[values]\nkeep = true\n[[region]]\nlayer = "ar 9"\nweight = 0\n'
                    '[[region]]\nlayer = "ar 9"\nchannel = [0.2, 1.5]\n[[region]]\nlayer = "ar 1"\n')
    preset = load_preset(path)
    assert preset.values == {"keep": True} and [r.layer for r in preset.regions] == ["ar 1"]
    assert [s.split(" (")[0] for s in preset.skipped] == ["region 1", "region 2"]
    assert "region weight" in preset.skipped[0] and "channel must be [position, span]" in preset.skipped[1]
