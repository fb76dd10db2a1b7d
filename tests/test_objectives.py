import pytest
import torch

from immersions.dream.objectives import Reading, activation_penalty, energy, high_frequency, selection
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
