import json
from pathlib import Path

import numpy as np
import pytest
import torch

from immersions.errors import ImmersionsError
from immersions.model import CPC, PRESETS, preset
from immersions.model.checkpoint import load_model, save_model
from immersions.model.config import ModelConfig


@pytest.mark.parametrize("name", ["seed", "tiny", "hifi", "full", "micro", "micro-full"])
def test_shapes_per_preset(name):
    cfg = preset(name)
    model = CPC(cfg).eval()
    sr, hop = cfg.scalogram.sample_rate, cfg.scalogram.hop
    samples = int(cfg.loop_seconds * sr)
    frames = samples // hop
    with torch.no_grad():
        acts = model.activations(0.1 * torch.randn(1, samples))
    assert len(acts) == len(model.taps) == 2 * len(cfg.encoder) + len(cfg.ar)
    for tap, act in zip(model.taps, acts):
        assert act.shape == (1, *tap.shape(frames)), tap.name
    # pitch collapses to 1, ~16 encodings per second, one context vector of the promised size
    assert model.taps[2 * len(cfg.encoder) - 1].pitches == 1
    with torch.no_grad():
        z, c = model.train()(0.1 * torch.randn(2, int(cfg.item_seconds * sr)))
    assert z.shape[1] == cfg.encoding_channels
    # ~16 encodings per second at 125 frames/s; the full band's 75 frames/s give ~9
    low, high = (8, 10) if cfg.scalogram.frames_per_second == 75 else (12, 17)
    assert low < z.shape[-1] / cfg.item_seconds < high
    assert c.shape[1] == cfg.context_channels
    assert model.graph_nodes == sum(t.channels * t.pitches for t in model.taps)


def test_paper_numbers_of_seed_preset():
    cfg = preset("seed")
    sc = cfg.scalogram
    assert (sc.sample_rate, sc.n_bins, sc.bins_per_octave, sc.fmin) == (16000, 256, 32, 30.0)
    assert sc.frames_per_second == 125
    assert cfg.encoding_channels == 512 and cfg.context_channels == 256 and cfg.prediction_steps == 16
    assert sc.sample_rate / (sc.hop * cfg.encoder_time_stride) == pytest.approx(15.625)
    kernels = {b.conv2 for b in cfg.encoder}
    assert (25, 1) in kernels and (15, 1) in kernels  # pitch-only kernels beside the square ones


def test_tiny_is_narrow_but_keeps_a_big_graph():
    tiny, seed = CPC(preset("tiny")), CPC(preset("seed"))
    assert tiny.graph_nodes >= 20_000
    assert sum(p.numel() for p in tiny.parameters()) < sum(p.numel() for p in seed.parameters()) / 5
    assert [t.pitches for t in tiny.taps] == [t.pitches for t in seed.taps]  # same topology


def test_tap_names_and_lookup():
    model = CPC(preset("micro"))
    assert model.taps[0].name == "enc 1 conv 1" and model.taps[-1].name == "ar 9"
    assert model.tap("enc 3 conv 2") is model.tap("enc3.conv2") is model.tap(5)
    with pytest.raises(KeyError):
        model.tap("enc 99")


def test_encoder_and_context_are_causal():
    model = CPC(preset("micro")).eval()
    cfg = model.cfg
    frames = 512
    spec = torch.rand(1, cfg.scalogram.n_bins, frames)
    changed = spec.clone()
    cut = 320  # scalogram frame from which the future differs
    changed[..., cut:] = torch.rand_like(changed[..., cut:])
    with torch.no_grad():
        z1, z2 = model.encode(spec), model.encode(changed)
        c1, c2 = model.context(z1), model.context(z2)
    stride = cfg.encoder_time_stride
    last_past = cut // stride  # encodings whose pooling windows end before the cut
    assert torch.equal(z1[..., :last_past], z2[..., :last_past])
    assert not torch.equal(z1[..., last_past:], z2[..., last_past:])  # the future did change
    ar_stride = cfg.ar_time_stride
    last_ctx = last_past // ar_stride
    assert torch.equal(c1[..., :last_ctx], c2[..., :last_ctx])
    assert not torch.equal(c1, c2)


def test_cpc_loss_falls_and_accuracy_rises():
    torch.manual_seed(0)
    model = CPC(preset("micro")).train()
    # audio with predictable structure: a few tones switching on a beat grid
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(4 * sr) / sr
    batch = []
    for _ in range(8):
        freqs = rng.uniform(60, 2000, size=8)
        steps = (t * 4).astype(int) % 8
        batch.append(0.3 * np.sin(2 * np.pi * freqs[steps] * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2)
    audio = torch.tensor(np.stack(batch), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, accs = [], []
    for _ in range(60):
        z, c = model(audio)
        loss, acc = model.cpc_loss(z, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append(acc.mean().item())
    chance = np.log(len(batch))
    assert np.mean(losses[:3]) > chance - 0.1  # starts at chance level
    assert np.mean(losses[-5:]) < chance - 0.15
    assert np.mean(accs[-5:]) > np.mean(accs[:5]) + 0.08


def test_across_steps_loss_has_more_negatives():
    model = CPC(preset("micro")).train()
    z, c = model(0.1 * torch.randn(4, 4 * 16000))
    plain, acc_plain = model.cpc_loss(z, c)
    across, acc_across = model.cpc_loss(z, c, negatives="steps")
    assert acc_plain.shape == acc_across.shape == (model.cfg.prediction_steps,)
    # chance level: log(batch) vs log(batch * steps)
    assert across.item() > plain.item()


def test_times_negatives_are_every_other_items_encodings_at_every_time():
    torch.manual_seed(0)
    model = CPC(preset("micro")).eval()  # eval: the predictor's dropout off, so both sides see one prediction
    with torch.no_grad():
        z, c = model(0.1 * torch.randn(3, 4 * 16000))
        loss, acc = model.cpc_loss(z, c, negatives="times")
        # the same loss written out one prediction at a time
        cfg, stride = model.cfg, model.cfg.ar_time_stride
        batch, _, t_z = z.shape
        zn = torch.nn.functional.normalize(z, dim=1)
        terms, hits = [], torch.zeros(cfg.prediction_steps)
        ends = [n * stride + stride - 1 for n in range(c.shape[-1])]
        ends = [e for e in ends if e >= 15 and e + cfg.prediction_steps < t_z]
        for b in range(batch):
            for e in ends:
                pred = model.predictor(c[b, :, e // stride]).view(cfg.prediction_steps, -1)
                for k in range(cfg.prediction_steps):
                    p = torch.nn.functional.normalize(pred[k], dim=0) / cfg.temperature
                    others = torch.cat([zn[x].T for x in range(batch) if x != b])  # [(batch - 1) * t_z, C]
                    scores = torch.cat([(p @ zn[b, :, e + k + 1])[None], others @ p])
                    terms.append(torch.logsumexp(scores, 0) - scores[0])
                    hits[k] += float(scores.argmax() == 0)
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-4)
    assert torch.allclose(acc, hits / (batch * len(ends)))
    # chance level: one positive among 1 + (batch - 1) * t_z candidates, far more than "batch"
    assert loss.item() > model.cpc_loss(z, c)[0].item() + 2
    with pytest.raises(ValueError):
        model.cpc_loss(z, c, negatives="everything")


def test_training_mode_really_trains_batch_norm_and_dropout():
    model = CPC(preset("micro")).train()
    before = model.encoder[0].bn1.running_mean.clone()
    model(0.3 * torch.randn(2, 4 * 16000))
    assert not torch.equal(before, model.encoder[0].bn1.running_mean)  # BN updated its statistics
    z1, c1 = model(torch.ones(1, 4 * 16000) * 0.1)
    z2, c2 = model(torch.ones(1, 4 * 16000) * 0.1)
    assert not torch.equal(c1, c2)  # dropout and input noise act in training


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = CPC(preset("micro")).train()
    model(0.3 * torch.randn(2, 4 * 16000))  # move BN statistics off their defaults
    save_model(model.eval(), tmp_path / "m", {"step": 7})
    assert not any(p.suffix in (".pt", ".pkl", ".pth") for p in (tmp_path / "m").iterdir())
    loaded = load_model(tmp_path / "m")
    assert loaded.cfg == model.cfg and loaded.meta["step"] == 7
    audio = 0.1 * torch.randn(1, 64000)
    with torch.no_grad():
        for a, b in zip(model.activations(audio), loaded.activations(audio)):
            assert torch.equal(a, b)


def test_config_json_round_trip():
    for name in PRESETS:
        cfg = preset(name)
        assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_bad_model_folders_give_one_line_errors(tmp_path):
    with pytest.raises(ImmersionsError, match="no model at"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ImmersionsError, match="cannot read model config"):
        load_model(tmp_path / "broken")
    save_model(CPC(preset("micro")), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ImmersionsError, match="cannot read weights"):
        load_model(tmp_path / "m")
    with pytest.raises(ImmersionsError, match="unknown preset"):
        preset("huge")


def test_a_loop_has_no_seam_at_its_start():
    """Taps of a loop see the loop's end as their past: a steady sound reads the same at the
    loop's first frame as in its middle (causal zero padding would read silence first)."""
    torch.manual_seed(0)
    model = CPC(preset("micro")).eval()
    t = torch.arange(64000) / 16000
    steady = (0.3 * torch.sin(2 * np.pi * 250 * t))[None]  # 250 Hz: a whole number of periods
    with torch.no_grad():
        looped = model.activations(steady)
        padded = model.activations(steady, circular=False)
    tap = model.tap("enc 3 conv 2").index
    first, middle = looped[tap][..., 0], looped[tap][..., 60]
    assert torch.allclose(first, middle, atol=1e-3)
    assert not torch.allclose(padded[tap][..., 0], padded[tap][..., 60], atol=1e-2)
    # rolling the loop by whole encodings rolls the encoder's taps
    shifted = model.activations(torch.roll(steady * (1 + t[None]), 64 * 128, -1))
    plain = model.activations(steady * (1 + t[None]))
    assert torch.allclose(torch.roll(plain[tap], 64 // model.taps[tap].time_stride, -1), shifted[tap], atol=1e-3)
    for act, spec_tap in zip(looped, model.taps):
        assert act.shape[1:] == spec_tap.shape(500)


def _two_training_steps(recompute_blocks: int):
    torch.manual_seed(0)
    model = CPC(preset("micro")).train()
    model.recompute_blocks = recompute_blocks
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    audio = torch.randn(4, 64000) * 0.1
    grads = []
    for _ in range(2):
        z, c = model(audio)
        loss, _ = model.cpc_loss(z, c, negatives="times")
        optimizer.zero_grad()
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        optimizer.step()
    return loss.item(), grads, model.state_dict()


def test_recomputed_blocks_train_exactly_as_kept_ones():
    """--recompute trades speed for memory only: the same loss, gradients, weights and
    batch-norm statistics (a recomputed forward must not count its batch twice)."""
    loss, grads, state = _two_training_steps(0)
    loss_r, grads_r, state_r = _two_training_steps(8)
    assert loss_r == pytest.approx(loss, rel=1e-6)
    for step, step_r in zip(grads, grads_r):
        for name in step:
            torch.testing.assert_close(step_r[name], step[name], rtol=1e-5, atol=1e-7)
    for name in state:
        torch.testing.assert_close(state_r[name], state[name], rtol=1e-5, atol=1e-7)
    assert int(state_r["encoder.0.bn1.num_batches_tracked"]) == 2


def _bytes_kept_for_backward(recompute_blocks: int) -> int:
    torch.manual_seed(0)
    model = CPC(preset("micro")).train()
    model.recompute_blocks = recompute_blocks
    kept = []

    def pack(t):
        kept.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z, c = model(torch.randn(2, 64000) * 0.1)
        model.cpc_loss(z, c)[0].backward()
    return sum(kept)


def test_recomputed_blocks_keep_less_for_backward():
    kept = _bytes_kept_for_backward(0)
    first = _bytes_kept_for_backward(1)
    every = _bytes_kept_for_backward(8)
    assert every < first < kept
    assert every < kept / 2  # the encoder's maps are most of what a step keeps


def test_recompute_leaves_taps_and_dreaming_alone():
    torch.manual_seed(0)
    model = CPC(preset("micro")).train()
    audio = torch.randn(1, 64000) * 0.1
    model.eval()
    taps = model.activations(audio)
    model.recompute_blocks = 8
    for a, b in zip(taps, model.activations(audio)):
        assert torch.equal(a, b)
    model.train()  # asked for its taps, a training model keeps every one
    assert [t.shape[:3] for t in model.activations(audio)] == [t.shape[:3] for t in taps]


def test_a_shipped_models_name_wins_over_a_folder_of_that_name_that_holds_no_model(tmp_path, monkeypatch):
    from immersions.paths import models_dir, resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "house").mkdir()  # e.g. a folder of house music beside the user
    assert resolve_model("house") == models_dir() / "house"
    save_model(CPC(preset("micro")), tmp_path / "house")  # a model there is the user's own: it wins
    assert resolve_model("house") == Path("house")
    with pytest.raises(ImmersionsError, match="no model at"):
        resolve_model("nothing-here")


def test_the_full_band_preset_hears_44_1_khz_to_16_khz_with_tiny_s_graph():
    full, tiny = preset("full"), preset("tiny")
    sc = full.scalogram
    assert sc.sample_rate == 44100 and sc.fmin <= 30.0 and sc.frequencies()[-1] >= 16000
    assert sc.frames_per_second < tiny.scalogram.frames_per_second  # fewer frames pay for the band
    assert (full.loop_seconds * sc.sample_rate) % sc.hop == 0  # a 4-s loop is whole frames
    full_model, tiny_model = CPC(full), CPC(tiny)
    assert full_model.graph_nodes == tiny_model.graph_nodes >= 20000
    # the same shapes: a tiny ear's weights can start the full band's training
    assert {k: v.shape for k, v in full_model.state_dict().items()} == \
        {k: v.shape for k, v in tiny_model.state_dict().items()}
    # a 12-kHz tone lights the scalogram's top octave, which a 16-kHz ear cannot hear at all
    t = torch.arange(int(sc.sample_rate)) / sc.sample_rate
    with torch.no_grad():
        spec = full_model.scalogram(0.5 * torch.sin(2 * torch.pi * 12000 * t)[None])[0]
    peak = int(spec.mean(-1).argmax())
    assert abs(sc.frequencies()[peak] - 12000) < 12000 * 0.03
