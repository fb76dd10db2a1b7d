"""Blending two ears weight by weight (`immersions blend`): the straight line between a model and
its fine-tune, with the blend's own statistics and layout."""

import json

import pytest
import torch

from helpers import run_cli
from immersions.errors import ImmersionsError
from immersions.model.blend import blend, blend_state
from immersions.model.checkpoint import CONFIG_FILE, STATS_FILE, load_model
from immersions.model.config import preset
from immersions.model.cpc import CPC


def _pair():
    torch.manual_seed(0)
    base = CPC(preset("micro")).eval()
    torch.manual_seed(1)
    tuned = CPC(preset("micro")).eval()
    with torch.no_grad():  # give the counters and running statistics values of their own
        for name, t in tuned.state_dict().items():
            if not t.is_floating_point():
                t.fill_(7)
            elif "running_var" in name:
                t.fill_(2.0)
    return base, tuned


def test_the_ends_of_the_line_are_the_two_models_and_the_middle_is_their_mean():
    base, tuned = _pair()
    a, b = base.state_dict(), tuned.state_dict()
    for weight, expect in ((0.0, a), (1.0, b)):
        state = blend_state(base, tuned, weight)
        assert all(torch.equal(state[k].float(), expect[k].float()) for k in b if b[k].is_floating_point())
    mid = blend_state(base, tuned, 0.5)
    floats = [k for k in b if b[k].is_floating_point()]
    assert floats and all(torch.allclose(mid[k], (a[k] + b[k]) / 2) for k in floats)
    assert any("running_var" in k for k in floats)  # batch-norm statistics are blended too
    counters = [k for k in b if not b[k].is_floating_point()]
    assert counters and all(int(mid[k]) == 7 and mid[k].dtype == b[k].dtype for k in counters)


def test_a_blend_is_a_new_model_that_remembers_its_parents():
    base, tuned = _pair()
    base.meta, tuned.meta = {"step": 5}, {"step": 9, "train": {"data": ["music:3", "synth:1"]}}
    model = blend(base, tuned, 0.75)
    x = torch.randn(1, int(model.cfg.loop_seconds * model.cfg.scalogram.sample_rate))
    with torch.no_grad():
        heard = [m.activations(x)[-1] for m in (base, model, tuned)]
    assert not torch.allclose(heard[1], heard[0]) and not torch.allclose(heard[1], heard[2])
    assert model.meta["blend"]["weight"] == 0.75
    assert model.meta["parents"]["tuned"]["train"]["data"] == ["music:3", "synth:1"]


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_weight_off_the_line_is_refused(weight):
    base, tuned = _pair()
    with pytest.raises(ImmersionsError, match="0, 1"):
        blend_state(base, tuned, weight)


def test_two_architectures_cannot_be_blended():
    with pytest.raises(ImmersionsError, match="different architectures"):
        blend_state(CPC(preset("micro")), CPC(preset("tiny")), 0.5)


def test_the_blend_command_writes_a_complete_model(micro_model_dir, tmp_path):
    out = tmp_path / "blend"
    done = run_cli("blend", str(micro_model_dir), str(micro_model_dir), "--weight", "0.5", "--out", str(out),
                   "--data", "synth", "--stats-clips", "8")
    assert done.returncode == 0, done.stderr
    assert (out / STATS_FILE).is_file() and (out / "layout.npz").is_file()
    meta = json.loads((out / CONFIG_FILE).read_text())["meta"]
    name = micro_model_dir.name  # a parent is recorded by its folder's name
    assert meta["blend"] == {"weight": 0.5, "base": name, "tuned": name, "stats_data": ["synth"]}
    model, parent = load_model(out), load_model(micro_model_dir)
    assert all(torch.allclose(a, b) for a, b in zip(model.state_dict().values(), parent.state_dict().values()))
    # the layout written is the one the app finds valid: a second look reads it from the file
    laid = run_cli("layout", "--model", str(out), "--json")
    assert laid.returncode == 0 and json.loads(laid.stdout)["cached"] is True, laid.stderr


def test_a_base_of_another_front_end_is_blended_on_the_tuned_models(micro_model_dir, micro_full_model_dir, tmp_path):
    """The full band's default: a 16-kHz ear's weights (the base) go onto the 44.1-kHz front end of the
    ear fine-tuned from them, as `train --init BASE --preset P` started it, and are blended there."""
    from immersions.train.trainer import transplant

    out = tmp_path / "full-blend"
    done = run_cli("blend", str(micro_model_dir), str(micro_full_model_dir), "--weight", "0.25", "--out", str(out),
                   "--data", "synth", "--stats-clips", "4")
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / CONFIG_FILE).read_text())["meta"]
    assert meta["blend"]["base_preset"] == "micro" and meta["blend"]["base"] == micro_model_dir.name
    model, tuned = load_model(out), load_model(micro_full_model_dir)
    assert model.cfg == tuned.cfg and model.cfg.scalogram.sample_rate == 44100
    moved = transplant(load_model(micro_model_dir), "micro-full").state_dict()
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, torch.lerp(moved[key], tuned.state_dict()[key], 0.25)), key
    # shapes that do not fit are still refused in one line
    refused = run_cli("blend", str(micro_model_dir), str(_tiny_dir(tmp_path)), "--weight", "0.5",
                      "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and not (tmp_path / "no").exists()


def _tiny_dir(tmp_path):
    from immersions.model.checkpoint import save_model

    return save_model(CPC(preset("tiny")), tmp_path / "tiny")


def test_the_blend_command_will_not_overwrite_a_parent(micro_model_dir):
    done = run_cli("blend", str(micro_model_dir), str(micro_model_dir), "--weight", "0.5", "--out", str(micro_model_dir))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "new folder" in done.stderr


def test_a_blend_that_cannot_measure_its_statistics_writes_nothing(micro_model_dir, tmp_path):
    out = tmp_path / "blend"
    done = run_cli("blend", str(micro_model_dir), str(micro_model_dir), "--weight", "0.5", "--out", str(out),
                   "--data", str(tmp_path / "no-such-folder"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert not out.exists()
