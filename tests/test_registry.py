import math

import pytest

from immersions.registry import (
    CHOICE, REGISTRY, INTEGER, LOG, TOGGLE, Parameter, Registry, Snapshot,
)
from immersions.errors import ImmersionsError


def test_every_parameter_is_declared_once_with_a_valid_default():
    names = [p.name for p in REGISTRY]
    assert len(names) == len(set(names))
    for p in REGISTRY:
        assert p.description and p.group
        assert p.validate(p.default) == p.default
    assert {"Selection", "Optimizer", "Regularizers", "Sound"} <= set(REGISTRY.groups())
    with pytest.raises(ValueError, match="declared twice"):
        Registry([Parameter("a", "g", 0.0), Parameter("a", "g", 1.0)])


@pytest.mark.parametrize("param", list(REGISTRY), ids=lambda p: p.name)
def test_unit_mapping_covers_the_range_and_inverts(param):
    lo, hi = param.from_unit(0.0), param.from_unit(1.0)
    if param.scale == TOGGLE:
        assert (lo, hi) == (False, True)
    elif param.scale == CHOICE:
        assert (lo, hi) == (param.choices[0], param.choices[-1])
    else:
        assert lo == pytest.approx(param.minimum) and hi == pytest.approx(param.maximum)
    for u in (0.0, 0.25, 0.5, 1.0):
        value = param.from_unit(u)
        assert param.from_unit(param.to_unit(value)) == pytest.approx(value)


def test_log_scale_is_geometric_and_int_scale_rounds():
    p = Parameter("gain", "g", 1.0, 0.01, 100.0, scale=LOG)
    assert p.from_unit(0.5) == pytest.approx(1.0)
    assert p.to_unit(10.0) == pytest.approx(0.75)
    bars = REGISTRY["bars"]
    assert bars.scale == INTEGER and bars.from_unit(0.5) == 4 and isinstance(bars.from_unit(0.3), int)


def test_out_of_range_values_are_clamped_when_coming_from_a_control():
    p = REGISTRY["time_jitter"]
    assert p.from_unit(-3) == p.minimum and p.from_unit(7) == p.maximum


def test_snapshot_is_immutable_and_validated():
    snap = REGISTRY.defaults()
    assert snap["learning_rate"] == -2.0
    with pytest.raises(TypeError):
        snap.values()["learning_rate"] = 1.0
    changed = snap.replace(learning_rate=-3.5, keep=True)
    assert changed["learning_rate"] == -3.5 and changed["keep"] is True
    assert snap["learning_rate"] == -2.0  # the old one is untouched


@pytest.mark.parametrize("changes,message", [
    ({"channel_span": 1.5}, "channel_span: 1.5 is outside 0 .. 1"),
    ({"learning_rate": math.nan}, "not a finite number"),
    ({"bars": 2.5}, "whole number"),
    ({"optimizer": "lbfgs"}, "not one of sgd, adam"),
    ({"keep": "yes"}, "on/off"),
    ({"time_jitter": "fast"}, "expected a number"),
    ({"volume_to_eleven": 11}, "unknown parameter 'volume_to_eleven'"),
])
def test_bad_values_are_rejected_and_the_last_good_snapshot_kept(changes, message):
    good = REGISTRY.defaults().replace(channel_span=0.25)
    with pytest.raises(ImmersionsError, match=message):
        good = good.replace(**changes)
    assert good["channel_span"] == 0.25


def test_snapshot_needs_every_parameter():
    with pytest.raises(ImmersionsError, match="lacks parameter"):
        Snapshot(REGISTRY, {"layer": 0.5})


def test_one_parser_for_text_refuses_typos_everywhere():
    from immersions.registry import REGISTRY

    keep, bars, space, rate = REGISTRY["keep"], REGISTRY["bars"], REGISTRY["space"], REGISTRY["learning_rate"]
    assert [keep.parse(w) for w in ("true", "On", " yes ", "1")] == [True] * 4
    assert [keep.parse(w) for w in ("false", "OFF", "no", "0")] == [False] * 4
    for typo in ("flase", "ture", "", "2"):
        with pytest.raises(ImmersionsError, match="keep: .* is not on/off"):
            keep.parse(typo)
    assert bars.parse("3") == 3 and isinstance(bars.parse("3.0"), int)
    with pytest.raises(ImmersionsError, match="whole number"):
        bars.parse("2.5")
    assert space.parse("stft") == "stft"
    with pytest.raises(ImmersionsError, match="not one of"):
        space.parse("spectrun")
    assert rate.parse("-2.5") == -2.5
    with pytest.raises(ImmersionsError, match="not a number"):
        rate.parse("fast")
    with pytest.raises(ImmersionsError, match="outside"):
        rate.parse("9")


def test_the_command_line_osc_and_journeys_use_that_parser():
    from immersions.control.osc import from_osc
    from immersions.dream.run import parse_settings
    from immersions.registry import REGISTRY

    with pytest.raises(ImmersionsError, match="is not on/off"):
        parse_settings(["keep=flase"], REGISTRY.defaults())
    with pytest.raises(ImmersionsError, match="is not on/off"):
        from_osc(REGISTRY["keep"], "flase")
    assert parse_settings(["quiet=on", "bars=4"], REGISTRY.defaults())["quiet"] is True


def test_every_parameter_names_a_known_consumer_and_a_valid_autopilot_range():
    from immersions.registry import CHOICE, CONSUMERS, REGISTRY

    for p in REGISTRY:
        assert p.consumer in CONSUMERS
        if p.autopilot and p.scale != CHOICE:
            low, high = p.autopilot
            assert p.minimum <= low <= high <= p.maximum
    with pytest.raises(ValueError, match="consumer"):
        Registry([Parameter("x", "G", 0.5, consumer="nobody")])
    with pytest.raises(ValueError, match="autopilot range: x: 2 is outside"):
        Registry([Parameter("x", "G", 0.5, autopilot=(0.0, 2.0))])
    with pytest.raises(ValueError, match="one weight"):
        Registry([Parameter("x", "G", "a", scale=CHOICE, choices=("a", "b"), autopilot=(1.0,))])


def test_the_loop_length_comes_from_one_function_of_a_snapshot():
    from immersions.registry import REGISTRY, loop_length, loop_seconds

    params = REGISTRY.defaults().replace(bpm=128.0, bars=2)
    assert loop_seconds(params) == pytest.approx(3.75) and loop_length(params, 16000) == 60000
