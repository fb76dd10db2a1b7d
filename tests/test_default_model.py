"""The shipped default model: present, small, loadable offline, with statistics."""

import torch

from immersions.model.checkpoint import STATS_FILE, WEIGHTS_FILE, load_model
from immersions.model.stats import load_stats
from immersions.paths import default_model_dir


def test_default_model_ships_complete_and_small():
    folder = default_model_dir()
    assert (folder / WEIGHTS_FILE).stat().st_size < 20 * 2**20
    assert (folder / STATS_FILE).is_file()
    model = load_model()  # no name: the shipped default
    assert model.cfg.preset == "tiny" and model.graph_nodes >= 20_000
    assert model.meta["step"] == model.meta["train"]["steps"]  # the run finished
    stats = load_stats(model)
    assert set(stats) == {tap.key for tap in model.taps}
    # a trained model's neurons respond to music: most have nonzero spread on data
    spread = torch.cat([s.data_std.flatten() for s in stats.values()])
    assert (spread > 1e-4).float().mean() > 0.5


def test_default_model_hears_the_difference_between_silence_and_a_groove():
    from immersions.audio.io import load_audio
    from immersions.paths import assets_dir

    model = load_model()
    groove = torch.from_numpy(load_audio(assets_dir() / "clips" / "groove.wav", 16000))[None]
    with torch.no_grad():
        loud = model.activations(groove)
        rest = model.activations(torch.zeros_like(groove))
    changed = [(a - b).abs().mean().item() for a, b in zip(loud, rest)]
    assert min(changed) > 0


def test_both_shipped_ears_load_by_name_and_only_the_default_has_heard_real_music():
    from immersions.paths import models_dir

    default, house = load_model("default"), load_model("house")
    assert (models_dir() / "house" / "layout.npz").is_file() and (models_dir() / "default" / "layout.npz").is_file()
    assert default.cfg == house.cfg  # the same architecture: one switches live to the other
    assert set(load_stats(house)) == {tap.key for tap in house.taps}

    def sources(model) -> list[str]:  # `--data` as the run recorded it: one source, or a list of them
        data = model.meta["train"]["data"]
        return [s.split(":")[0] for s in ([data] if isinstance(data, str) else data)]

    assert [s for s in sources(default) if s != "synth"], "the default model should have heard real music"
    assert sources(house) == ["synth"]
