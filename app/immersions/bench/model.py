"""`immersions bench model`: the ear's parts timed on random input: the scalogram's forward
and backward against nnAudio's CQT, a dream step's forward and input gradient, a training step."""

from __future__ import annotations

import torch

from immersions.bench.kit import environment, timed


def bench_scalogram(cfg, batch: int, seconds: float, repeats: int, device: torch.device) -> dict:
    from nnAudio.features import CQT1992v2

    from immersions.audio.scalogram import Scalogram

    sc = cfg.scalogram
    samples = int(round(seconds * sc.sample_rate))
    ours = Scalogram(sc).to(device)
    reference = CQT1992v2(sr=sc.sample_rate, hop_length=sc.hop, fmin=sc.fmin, n_bins=sc.n_bins,
                          bins_per_octave=sc.bins_per_octave, filter_scale=sc.filter_scale, norm=1,
                          window="hann", center=True, pad_mode="constant", output_format="Complex",
                          verbose=False).to(device)
    audio = (0.1 * torch.randn(batch, samples, device=device)).requires_grad_()

    def step_ours():
        ours(audio).sum().backward()

    def step_reference():  # same log power, from nnAudio's complex output
        c = reference(audio, normalization_type="convolutional")
        power = c[..., 0].square() + c[..., 1].square()
        (torch.log1p(power / sc.eps)).sum().backward()

    a = timed(step_ours, repeats, device=device)
    b = timed(step_reference, max(2, repeats // 2), device=device)
    return {"batch": batch, "seconds_of_audio": seconds, "ours": a, "nnaudio_cqt1992v2": b,
            "speedup": b["median_s"] / a["median_s"]}


def bench_dream_step(model, batch: int, repeats: int, device: torch.device) -> dict:
    """Forward through every tap + gradient w.r.t. the waveform (weights frozen), as dreaming does."""
    cfg = model.cfg
    samples = int(round(cfg.loop_seconds * cfg.scalogram.sample_rate))
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    loop = (0.1 * torch.randn(batch, samples, device=device)).requires_grad_()
    tap = len(model.taps) // 2

    def step():
        acts = model.activations(loop)
        torch.autograd.grad(acts[tap].mean(), loop)

    t = timed(step, repeats, device=device)
    return {"batch": batch, "loop_seconds": cfg.loop_seconds, **t, "steps_per_s": 1.0 / t["median_s"],
            "ms_per_step": 1000 * t["median_s"]}


def bench_training(model, batch: int, repeats: int, device: torch.device) -> dict:
    cfg = model.cfg
    samples = int(round(cfg.item_seconds * cfg.scalogram.sample_rate))
    model = model.train().to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    audio = 0.1 * torch.randn(batch, samples, device=device)

    def step():
        z, c = model(audio)
        loss, _ = model.cpc_loss(z, c)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    t = timed(step, repeats, warmup=1, device=device)
    return {"batch": batch, "item_seconds": cfg.item_seconds, **t, "items_per_s": batch / t["median_s"]}


def bench_model(args) -> dict:
    from immersions.model import CPC, preset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    doc = {"benchmark": "model", **environment(device), "presets": {}}
    for name in names:
        torch.manual_seed(0)
        model = CPC(preset(name))
        heavy = device.type == "cpu" and name != "tiny"
        repeats = max(2, args.repeats // 3) if heavy else args.repeats
        doc["presets"][name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "graph_nodes": model.graph_nodes,
            "scalogram_forward_backward": bench_scalogram(model.cfg, 4, model.cfg.loop_seconds, repeats, device),
            "dream_step": bench_dream_step(model, 4, repeats, device),
            "training": bench_training(model, 4 if heavy else 16, 2 if heavy else 3, device),
        }
    return doc


