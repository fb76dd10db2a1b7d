"""The selection in one module: regions with weights, the layer fader, tap names, checks."""

import pytest
import torch

from immersions.errors import ImmersionsError
from immersions.model import CPC, preset
from immersions.registry import REGISTRY
from immersions.selection import (
    Region, Selection, check_region, fits, layer_of_tap, region_from_params, resolve_tap, tap_of_layer,
)


@pytest.fixture(scope="module")
def taps():
    return CPC(preset("micro")).taps


def test_a_region_excites_by_default_and_a_negative_weight_quiets_it():
    assert Region(0).weight == 1.0 and not Region(0).quiet
    assert Region(0, weight=-1.0).quiet


@pytest.mark.parametrize("weight", [0, 0.0, 5.0, -4.5, float("nan"), float("inf"), True, "1"])
def test_a_weight_of_zero_beyond_the_range_or_not_a_number_is_refused(weight):
    with pytest.raises(ImmersionsError, match="region weight"):
        Region(0, weight=weight)


def test_regions_group_by_weight_in_order_of_first_appearance():
    a, b, c = Region(0), Region(1, weight=-1.0), Region(2)
    groups = Selection((a, b, c)).by_weight()
    assert list(groups) == [1.0, -1.0]
    assert groups[1.0].regions == (a, c) and groups[-1.0].regions == (b,)


def test_masks_can_be_asked_for_the_quieted_or_the_excited_regions_only():
    shapes = {0: (4, 3, 2), 1: (4, 3, 2)}
    sel = Selection((Region(0, (0.0, 0.0)), Region(1, (1.0, 0.0), weight=-2.0)))
    assert set(sel.masks(shapes)) == {0, 1}
    assert set(sel.masks(shapes, quiet=True)) == {1} and set(sel.masks(shapes, quiet=False)) == {0}
    assert sel.masks(shapes, quiet=True)[1].sum() == 3 * 2  # one channel, every pitch and frame


def test_keep_adds_edit_replaces_the_last_region_and_keeps_its_weight_change():
    sel = Selection().add(Region(0), keep=False).add(Region(1), keep=True).edit(Region(1, weight=-1.0))
    assert [r.tap for r in sel.regions] == [0, 1] and sel.regions[-1].quiet
    assert Selection((Region(0), Region(1))).add(Region(2), keep=False).regions == (Region(2),)


def test_the_layer_fader_and_the_tap_index_map_onto_each_other():
    for taps in (1, 2, 25):
        for tap in range(taps):
            assert tap_of_layer(layer_of_tap(tap, taps), taps) == tap
    assert tap_of_layer(0.0, 25) == 0 and tap_of_layer(1.0, 25) == 24


def test_the_region_being_edited_comes_from_the_snapshot_and_quiet_gives_it_minus_quiet_weight():
    params = REGISTRY.defaults().replace(layer=1.0, channel_pos=0.3, channel_span=0.2)
    region = region_from_params(25, params)
    assert region.tap == 24 and region.channel == (0.3, 0.2) and region.weight == 1.0
    assert region_from_params(25, params.replace(quiet=True)).weight == -2.0  # quiet_weight's default
    assert region_from_params(25, params.replace(quiet=True, quiet_weight=0.5)).weight == -0.5


def test_taps_resolve_by_name_key_or_index_and_an_unknown_one_names_the_valid_ones(taps):
    last = taps[-1]
    assert resolve_tap(taps, last.name) == last.index == resolve_tap(taps, str(last.index))
    assert resolve_tap(taps, last.key) == last.index
    with pytest.raises(ImmersionsError, match=f"unknown layer 'nope'; valid layers: {taps[0].name}"):
        resolve_tap(taps, "nope")
    with pytest.raises(ImmersionsError, match="unknown layer"):
        resolve_tap(taps, str(len(taps)))


def test_a_region_is_checked_against_the_model_before_it_reaches_a_dream_thread(taps):
    check_region(taps, Region(len(taps) - 1, (1.0, 1.0)))
    with pytest.raises(ImmersionsError, match="no tap"):
        check_region(taps, Region(len(taps)))
    with pytest.raises(ImmersionsError, match="outside 0 .. 1"):
        check_region(taps, Region(0, (1.5, 0.0)))
    assert fits(taps, Selection((Region(0), Region(len(taps) - 1))))
    assert not fits(taps, Selection((Region(len(taps)),)))


def test_a_region_mask_is_a_block_of_the_tap():
    m = Region(0, (0.0, 0.0), (0.0, 1.0), (0.5, 0.5)).mask((2, 3, 4))
    assert m.dtype == torch.bool and m[0].sum() == 3 * 3 and not m[1].any()
