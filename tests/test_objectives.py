import pytest
import torch

from immersions.dream.objectives import Reading, activation_penalty, energy, high_frequency, selection, surround
from immersions.selection import Region, Selection, axis_range
from immersions.errors import ImmersionsError
from immersions.model import CPC, preset
from immersions.model.stats import TapStats


@pytest.mark.parametrize("pos,span,n,expected", [
    (0.0, 0.0, 10, (0, 1)),     # one neuron at the start
    (1.0, 0.0, 10, (9, 10)),    # one neuron at the end, not past it
    (0.5, 0.0, 10, (5, 6)),
    (0.0, 1.0, 10, (0, 10)),    # the whole axis
    (1.0, 1.0, 10, (0, 10)),    # position has no room left at full span
    (1.0, 0.5, 10, (5, 10)),    # right-aligned half
    (0.0, 0.5, 10, (0, 6)),
    (0.3, 0.0, 1, (0, 1)),      # AR taps have a single pitch
])
def test_axis_range_at_the_edges(pos, span, n, expected):
    start, end = axis_range(pos, span, n)
    assert (start, end) == expected and 0 <= start < end <= n


@pytest.mark.parametrize("pos,span", [(-0.1, 0.5), (0.5, 1.01), (float("nan"), 0.0)])
def test_out_of_range_selection_is_a_clear_error(pos, span):
    with pytest.raises(ImmersionsError, match="outside 0 .. 1"):
        axis_range(pos, span, 10)


def test_span_zero_everywhere_is_one_neuron_and_span_one_is_the_tap():
    shape = (8, 16, 20)
    assert Region(0, (0.5, 0.0), (0.5, 0.0), (0.5, 0.0)).mask(shape).sum() == 1
    assert Region(0, (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)).mask(shape).all()


def test_keep_ors_regions_and_replace_starts_anew():
    shapes = {0: (4, 4, 4), 1: (2, 1, 4)}
    a = Region(0, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    b = Region(0, (1.0, 0.0), (1.0, 0.0), (1.0, 0.0))
    c = Region(1, (0.0, 1.0), (0.0, 1.0), (0.0, 1.0))
    kept = Selection().add(a, keep=False).add(b, keep=True).add(c, keep=True)
    masks = kept.masks(shapes)
    assert masks[0].sum() == 2 and masks[0][0, 0, 0] and masks[0][3, 3, 3]
    assert masks[1].all()
    replaced = kept.add(b, keep=False)
    assert replaced.regions == (b,) and replaced.masks(shapes)[0].sum() == 1


def make_probe(acts, stats=None, spec=None):
    taps = [type("T", (), {"key": f"t{i}"})() for i in range(len(acts))]
    return Reading(taps, acts, spec if spec is not None else torch.zeros(1, 8, 4), stats)


def test_selection_reads_only_the_selected_neurons_normalized():
    acts = torch.zeros(2, 3, 4, 5)
    acts[:, 1, 2, :] = 4.0
    stats = {"t0": TapStats(silence_mean=torch.ones(3, 4), data_mean=torch.zeros(3, 4), data_std=torch.full((3, 4), 0.9))}
    one = Region(0, (0.5, 0.0), (2 / 3, 0.0), (0.5, 1.0))  # channel 1, pitch 2, all time
    assert one.bounds((3, 4, 5))[:2] == ((1, 2), (2, 3))
    value = selection(Selection((one,)))(make_probe([acts], stats))
    assert value.item() == pytest.approx((4.0 - 1.0) / (0.9 + 0.1))
    unnormalized = selection(Selection((one,)))(make_probe([acts]))
    assert unnormalized.item() == pytest.approx(4.0)
    with pytest.raises(ImmersionsError, match="nothing is selected"):
        selection(Selection())


def test_objectives_compose_like_numbers():
    spec = torch.zeros(2, 8, 4)
    spec[:, 6:, :] = 1.0  # energy only in the top bins
    probe = make_probe([torch.ones(2, 1, 1, 4)], spec=spec)
    assert energy()(probe).item() == pytest.approx(0.25)
    assert high_frequency()(probe).item() > energy()(probe).item()
    combo = energy() - 0.5 * high_frequency() + 2 * activation_penalty()
    expected = 0.25 - 0.5 * high_frequency()(probe).item() + 2 * 1.0
    assert combo(probe).item() == pytest.approx(expected)
    assert "energy" in repr(combo)
    low = spec.flip(1)
    assert high_frequency()(make_probe([torch.ones(1, 1, 1, 1)], spec=low)).item() == 0.0


def test_selection_gradient_reaches_the_waveform_of_a_real_model():
    model = CPC(preset("micro")).eval()
    loop = (0.1 * torch.randn(2, 16000)).requires_grad_()
    spec = model.scalogram(loop)
    acts = []
    model.context(model.encode(spec, acts), acts)
    probe = Reading(model.taps, acts, spec, None)
    objective = selection(Selection((Region(5, (0.5, 0.5), (0.5, 1.0), (0.5, 1.0)),))) - 0.1 * energy()
    objective(probe).backward()
    assert torch.isfinite(loop.grad).all() and loop.grad.abs().sum() > 0


def test_a_quieted_region_counts_against_the_objective_each_weight_over_its_own_union():
    acts = torch.zeros(1, 2, 1, 3)
    acts[:, 0] = 2.0  # channel 0: A
    acts[:, 1] = 5.0  # channel 1: B
    a = Region(0, (0.0, 0.0), (0.0, 1.0), (0.0, 1.0))
    b = Region(0, (1.0, 0.0), (0.0, 1.0), (0.0, 1.0), weight=-1.0)
    reading = make_probe([acts])
    assert selection(Selection((a, b)))(reading).item() == pytest.approx(2.0 - 5.0)
    assert selection(Selection((a, Region(0, b.channel, b.pitch, b.time, weight=-0.5))))(reading).item() == pytest.approx(2.0 - 2.5)
    # regions of one weight are one union: a region kept twice does not count twice
    assert selection(Selection((a, a)))(reading).item() == pytest.approx(2.0)
    # its gradient lowers B and raises A
    acts = acts.clone().requires_grad_()
    selection(Selection((a, b)))(make_probe([acts])).backward()
    assert (acts.grad[:, 0] > 0).all() and (acts.grad[:, 1] < 0).all()


def test_objectives_sum_and_divide():
    spec = torch.ones(1, 8, 4)
    reading = make_probe([torch.ones(1, 1, 1, 4)], spec=spec)
    total = sum([energy(), energy(), 2 * activation_penalty()])
    assert total(reading).item() == pytest.approx(1.0 + 1.0 + 2.0)
    assert (total / 4)(reading).item() == pytest.approx(1.0)
    assert "/ 4" in repr(total / 4)


def test_surround_is_the_rest_of_the_excited_layer_and_contrast_subtracts_it():
    """`contrast` with `contrast_share` 1: the selection minus the mean of its layer's other
    neurons; neurons of any selected region (a quieted one too) are not surround, and a
    layer with only a quieted region has none."""
    from immersions.dream.recipe import objective_for
    from immersions.registry import REGISTRY

    acts = torch.zeros(1, 4, 1, 2)
    acts[:, 0] = 3.0  # A, excited
    acts[:, 1] = 1.0  # B, quieted
    acts[:, 2] = 2.0
    acts[:, 3] = 4.0
    other = torch.full((1, 2, 1, 2), 7.0)  # a tap only B's kind of region touches
    a = Region(0, (0.0, 0.0), (0.0, 1.0), (0.0, 1.0))
    b = Region(0, (1 / 3, 0.0), (0.0, 1.0), (0.0, 1.0), weight=-2.0)
    c = Region(1, (0.0, 0.0), (0.0, 1.0), (0.0, 1.0), weight=-1.0)
    reading = make_probe([acts, other])
    assert surround(Selection((a,)))(reading).item() == pytest.approx((1.0 + 2.0 + 4.0) / 3)
    assert surround(Selection((a, b, c)))(reading).item() == pytest.approx((2.0 + 4.0) / 2)
    assert surround(Selection((c,)))(reading).item() == 0.0
    params = REGISTRY.defaults().replace(contrast=0.5, contrast_share=1.0)
    assert objective_for(Selection((a,)), params)(reading).item() == pytest.approx(3.0 - 0.5 * 7.0 / 3)
    assert objective_for(Selection((a,)), params.replace(contrast=0.0))(reading).item() == pytest.approx(3.0)
    # its gradient raises A and lowers the rest of A's layer
    acts = acts.clone().requires_grad_()
    objective_for(Selection((a,)), params)(make_probe([acts, other])).backward()
    assert (acts.grad[:, 0] > 0).all() and (acts.grad[:, 1:] < 0).all()


def test_surround_of_the_loudest_channels_is_the_mean_of_the_top_share_found_every_reading():
    """`contrast_share` below 1: the surround is the mean of the loudest share of the layer's
    other channels (each by its mean over its unselected positions; at least one channel),
    chosen again at every reading, so it follows whichever channels rise with the selection;
    its gradient lowers those and leaves the rest alone. At 1 it is the layer's mean."""
    from immersions.dream.recipe import objective_for
    from immersions.registry import REGISTRY

    acts = torch.zeros(1, 11, 2, 2)
    acts[:, 0] = 5.0  # the selection
    for c in range(1, 11):
        acts[:, c] = float(c)  # channel 10 the loudest, then 9, ...
    acts[:, 9, 0, 0] = 13.0  # channel 9's mean over its four positions: (13 + 3 * 9) / 4 = 10
    a = Region(0, (0.0, 0.0), (0.0, 1.0), (0.0, 1.0))
    reading = make_probe([acts])
    layer_mean = (acts[:, 1:].sum() / 40).item()
    assert surround(Selection((a,)), 1.0)(reading).item() == pytest.approx(layer_mean)
    assert surround(Selection((a,)))(reading).item() == pytest.approx(layer_mean)
    assert surround(Selection((a,)), 0.0)(reading).item() == pytest.approx(10.0)  # the loudest one (a tie)
    assert surround(Selection((a,)), 0.2)(reading).item() == pytest.approx((10.0 + 10.0) / 2)
    assert surround(Selection((a,)), 0.3)(reading).item() == pytest.approx((10.0 + 10.0 + 8.0) / 3)
    # the loudest change with the reading: channel 1 now leads
    louder = acts.clone()
    louder[:, 1] = 20.0
    assert surround(Selection((a,)), 0.0)(make_probe([louder])).item() == pytest.approx(20.0)
    # only the selection's own unselected positions count for a channel partly selected
    half = Region(0, (0.0, 0.0), (0.0, 0.0), (0.0, 1.0))  # channel 0, the lower pitch only
    part = acts.clone()
    part[:, 0, 1] = 50.0
    assert surround(Selection((half,)), 0.0)(make_probe([part])).item() == pytest.approx(50.0)
    # the objective subtracts it with contrast's weight; its gradient lowers the loudest only
    params = REGISTRY.defaults().replace(contrast=0.5, contrast_share=0.2)
    assert objective_for(Selection((a,)), params)(reading).item() == pytest.approx(5.0 - 0.5 * 10.0)
    acts = acts.clone().requires_grad_()
    objective_for(Selection((a,)), params)(make_probe([acts])).backward()
    assert (acts.grad[:, 0] > 0).all()
    assert (acts.grad[:, 9:] < 0).all() and (acts.grad[:, 1:9] == 0).all()


def test_a_fall_from_silence_is_explained_when_the_neurons_rest_high_on_silence(caplog):
    """Neurons whose resting level on silence is above their mean plus one std on real
    material: when a dream from silence on them falls, `immersions dream` says why."""
    from immersions.dream.run import DreamResult, explain_fall

    model = CPC(preset("micro"))
    tap = model.taps[1]
    silence = torch.zeros(tap.channels, tap.pitches)
    silence[0] = 2.0  # channel 0 rests at 2 on silence, above real material's 0 + 1
    stats = {t.key: TapStats(silence_mean=torch.zeros(t.channels, t.pitches), data_mean=torch.zeros(t.channels, t.pitches),
                             data_std=torch.ones(t.channels, t.pitches)) for t in model.taps}
    stats[tap.key] = TapStats(silence, torch.zeros_like(silence), torch.ones_like(silence))
    assert stats[tap.key].silence_loving((0, 1), (0, tap.pitches)) == 1.0
    assert stats[tap.key].silence_loving((0, 2), (0, tap.pitches)) == 0.5
    fell = DreamResult(0.0, -1.3, 0.0, 0.1, 10, 1.0, 0, 0.5)
    rose = DreamResult(0.0, 1.3, 0.0, 0.1, 10, 1.0, 0, 0.5)
    with caplog.at_level("WARNING"):
        assert explain_fall(model, stats, Region(1, (0.0, 0.0)), fell) == 1.0
    assert "rest higher on silence" in caplog.text and tap.name in caplog.text and "-1.300" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert explain_fall(model, stats, Region(1, (0.0, 0.0)), rose) == 1.0  # it rose: nothing to explain
        assert explain_fall(model, stats, Region(1, (1.0, 0.0)), fell) == 0.0  # fell, but not for that reason
        assert explain_fall(model, None, Region(1, (0.0, 0.0)), fell) == 0.0
    assert caplog.text == ""
