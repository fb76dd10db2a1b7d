"""The faster path (the network in bfloat16) against the float32 step: the same direction and
about the same size, and a processor without native bfloat16 falls back to float32 quietly."""

import logging

import numpy as np
import pytest
import torch

from immersions.dream.dreamer import Dreamer, default_params
from immersions.dream.loop import start_clip
from immersions.errors import ImmersionsError
from immersions.model import CPC, preset
from immersions.model import precision as P
from immersions.selection import Region


def test_auto_takes_bf16_only_where_native_and_falls_back_quietly(monkeypatch, caplog):
    cpu = torch.device("cpu")
    monkeypatch.setattr(P, "bf16_native", lambda device: False)
    with caplog.at_level(logging.WARNING):
        assert P.resolve_precision("auto", cpu) == "fp32"
    assert not caplog.records  # quietly
    monkeypatch.setattr(P, "bf16_native", lambda device: True)
    assert P.resolve_precision("auto", cpu) == "bf16"
    assert P.resolve_precision("fp32", cpu) == "fp32" and P.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ImmersionsError, match="unknown precision 'half'"):
        P.resolve_precision("half", cpu)
    monkeypatch.undo()
    # on this machine: whatever oneDNN says, auto never picks an emulated bf16
    assert P.resolve_precision("auto", cpu) == ("bf16" if P.bf16_native(cpu) else "fp32")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_a_bf16_training_step_moves_the_weights_as_the_fp32_step_does():
    torch.manual_seed(0)
    model = CPC(preset("micro")).eval()  # eval: no dropout, so both passes see the same network
    audio = 0.1 * torch.randn(4, int(model.cfg.item_seconds * model.cfg.scalogram.sample_rate),
                              generator=torch.Generator().manual_seed(1))
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with P.network_autocast(precision, "cpu"):
            z, c = model(audio)
        assert z.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        loss, _ = model.cpc_loss(z.float(), c.float(), negatives="times")
        assert loss.dtype == torch.float32
        loss.backward()
        grads[precision] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    (loss32, g32), (loss16, g16) = grads["fp32"], grads["bf16"]
    assert loss16 == pytest.approx(loss32, rel=0.05)
    assert _cosine(g32, g16) > 0.9
    assert 0.8 < float(g16.norm() / g32.norm()) < 1.25


def test_a_bf16_dream_raises_its_selection_as_the_fp32_dream_does():
    torch.manual_seed(0)
    model = CPC(preset("micro")).eval()
    sr = model.cfg.scalogram.sample_rate
    params = default_params()
    region = Region(4, (0.3, 0.2))
    rises, loops = {}, {}
    for precision in ("fp32", "bf16"):
        d = Dreamer(model, None, start_clip("noise", 2 * sr, sr), seed=0, precision=precision)
        assert d.precision == precision
        d.select(region)
        before = d.measure(region, params)
        start = d.loop.clone()
        d.step(params)
        loops[precision] = d.loop - start
        for _ in range(9):
            d.step(params)
        rises[precision] = d.measure(region, params) - before
    assert rises["fp32"] > 0 and rises["bf16"] > 0
    assert 0.5 < rises["bf16"] / rises["fp32"] < 2.0
    assert _cosine(loops["fp32"], loops["bf16"]) > 0.8  # the first step: the same direction


def test_the_fp32_dream_is_unchanged_by_the_precision_argument():
    torch.manual_seed(0)
    model = CPC(preset("micro")).eval()
    sr = model.cfg.scalogram.sample_rate
    params = default_params()
    out = []
    for kwargs in ({}, {"precision": "fp32"}):
        d = Dreamer(model, None, start_clip("noise", sr, sr), seed=0, **kwargs)
        d.select(Region(4, (0.3, 0.2)))
        for _ in range(3):
            d.step(params)
        out.append(d.loop.clone())
    assert torch.equal(out[0], out[1])
    assert np.isfinite(out[0].numpy()).all()
