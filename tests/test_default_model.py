"""The shipped default model: present, small, loadable offline, with statistics. The default is
the full-band ear (models/full); the 16-kHz blend it replaced ships as models/blend."""

import torch

from immersions.model.checkpoint import STATS_FILE, WEIGHTS_FILE, load_model
from immersions.model.stats import load_stats
from immersions.paths import default_model_dir


def test_default_model_ships_complete_and_small():
    folder = default_model_dir()
    assert (folder / WEIGHTS_FILE).stat().st_size < 20 * 2**20
    assert (folder / STATS_FILE).is_file()
    model = load_model()  # no name: the shipped default
    assert model.cfg.preset == "full" and model.cfg.scalogram.sample_rate == 44100 and model.graph_nodes >= 20_000
    assert load_model("default").cfg == model.cfg  # the name `default` means it too
    assert all(run["step"] == run["train"]["steps"] for run in _runs(load_model("blend").meta))  # every run finished
    stats = load_stats(model)
    assert set(stats) == {tap.key for tap in model.taps}
    # a trained model's neurons respond to music: most have nonzero spread on data
    spread = torch.cat([s.data_std.flatten() for s in stats.values()])
    assert (spread > 1e-4).float().mean() > 0.5


def test_default_model_hears_the_difference_between_silence_and_a_groove():
    from immersions.audio.io import load_audio
    from immersions.paths import assets_dir

    model = load_model()
    groove = torch.from_numpy(load_audio(assets_dir() / "clips" / "groove.wav", model.cfg.scalogram.sample_rate))[None]
    with torch.no_grad():
        loud = model.activations(groove)
        rest = model.activations(torch.zeros_like(groove))
    changed = [(a - b).abs().mean().item() for a, b in zip(loud, rest)]
    assert min(changed) > 0


def _runs(meta: dict) -> list[dict]:
    """The training runs behind a model: its own, or each parent's of a blend."""
    return [run for parent in meta["parents"].values() for run in _runs(parent)] if "parents" in meta else [meta]


def _sources(model) -> set[str]:
    """What a model heard: `--data` as each of its runs recorded it (one source or a list), weights dropped."""
    out = set()
    for run in _runs(model.meta):
        data = run["train"]["data"]
        out |= {s.split(":")[0] for s in ([data] if isinstance(data, str) else data)}
    return out


def test_the_shipped_16_khz_ears_load_by_name_and_share_one_architecture():
    from immersions.paths import models_dir

    ears = {name: load_model(name) for name in ("blend", "real", "house")}
    for name, model in ears.items():
        assert (models_dir() / name / "layout.npz").is_file()
        assert model.cfg == ears["blend"].cfg  # one switches live to another
        assert model.cfg.scalogram.sample_rate == 16000
        assert set(load_stats(model)) == {tap.key for tap in model.taps}
    assert _sources(ears["house"]) == {"synth"}
    assert _sources(ears["real"]) - {"synth"}, "the fine-tune should have heard real music"
    assert _sources(ears["blend"]) == _sources(ears["real"]) | _sources(ears["house"])


def test_the_16_khz_blend_is_the_one_the_readme_command_makes():
    """`immersions blend house real --weight 0.75`: the shipped weights, reproduced exactly."""
    from immersions.model.blend import blend_state

    default, house, real = load_model("blend"), load_model("house"), load_model("real")
    assert default.meta["blend"]["weight"] == 0.75
    assert (default.meta["blend"]["base"], default.meta["blend"]["tuned"]) == ("house", "real")
    made = blend_state(house, real, 0.75)
    assert all(torch.equal(made[k], v) for k, v in default.state_dict().items())


def test_the_full_band_ear_is_the_default():
    """No --model, or `--model default`, is the full-band ear; no stale models/default beside it."""
    from immersions.paths import DEFAULT_MODEL, default_model_dir, models_dir

    assert DEFAULT_MODEL == "full" and default_model_dir() == models_dir() / "full"
    assert not (models_dir() / "default").exists()  # one name, one folder: no stale copy


def test_the_full_band_ear_ships_with_its_map_statistics_and_the_checkpoint_it_resumes_from():
    """models/full: 44.1 kHz, tiny's graph, statistics and layout, and a checkpoint (optimizer and
    random generator) that `train --resume` goes on from; it started from the default's weights."""
    import json

    from immersions.model.checkpoint import TRAIN_META_FILE, TRAIN_STATE_FILE
    from immersions.paths import models_dir
    from safetensors.torch import load_file

    folder = models_dir() / "full"
    model = load_model("full")
    assert model.cfg.preset == "full" and model.cfg.scalogram.sample_rate == 44100
    assert model.graph_nodes == load_model("blend").graph_nodes >= 20_000
    for name in ("layout.npz", STATS_FILE, TRAIN_STATE_FILE, TRAIN_META_FILE, "train_log.csv", "train_plot.png"):
        assert (folder / name).is_file(), name
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20 * 2**20
    state = json.loads((folder / TRAIN_META_FILE).read_text())
    assert state["meta"]["step"] == model.meta["step"] > 0
    assert "rng.torch" in load_file(str(folder / TRAIN_STATE_FILE))
    train = model.meta["train"]
    # it started from the 16-kHz blend: models/blend, called models/default until the full-band ear took that place
    assert train["preset"] == "full" and train["init"] in ("models/blend", "models/default")
    stats = load_stats(model)
    assert set(stats) == {tap.key for tap in model.taps}
    rows = (folder / "train_log.csv").read_text().splitlines()
    assert int(rows[-1].split(",")[0]) == model.meta["step"]  # the log goes as far as the checkpoint
