"""`immersions bench dream`: dream steps per second at several batch sizes, the time split by
stage, against the plain step and the straightforward baseline (nnAudio CQT, loss.backward(),
SGD on the waveform) measured in the same run. `--model NAME` measures that ear instead of
the presets (any kind: `--model crepe-tiny`; the baseline only for CPC)."""

from __future__ import annotations

import math

import torch

from immersions.bench.kit import environment, timed, torch_device


def _baseline_dream_step(model, loop: torch.Tensor, copies: int, max_shift: int):
    """The straightforward way: nnAudio's convolutional CQT front end, the model's weights
    left requiring gradients, loss.backward(), a plain SGD step on the waveform."""
    from nnAudio.features import CQT1992v2

    sc = model.cfg.scalogram
    cqt = CQT1992v2(sr=sc.sample_rate, hop_length=sc.hop, fmin=sc.fmin, n_bins=sc.n_bins,
                    bins_per_octave=sc.bins_per_octave, filter_scale=sc.filter_scale, norm=1, window="hann",
                    center=True, pad_mode="constant", output_format="Complex", verbose=False).to(loop.device)
    for p in model.parameters():
        p.requires_grad_(True)
    x = loop.clone().requires_grad_()
    tap = len(model.taps) // 2
    generator = torch.Generator().manual_seed(0)

    def step():
        shifts = torch.randint(-max_shift, max_shift + 1, (copies,), generator=generator)
        batch = torch.stack([torch.roll(x, int(s)) for s in shifts])
        c = cqt(batch, normalization_type="convolutional")[..., : batch.shape[-1] // sc.hop, :]
        spec = torch.log1p((c[..., 0].square() + c[..., 1].square()) / sc.eps) / math.log(1 / sc.eps)
        acts: list = []
        model.context(model.encode(spec, acts), acts)
        loss = -acts[tap].mean()
        model.zero_grad()
        x.grad = None
        loss.backward()
        with torch.no_grad():
            x.sub_(0.01 * x.grad / x.grad.std())

    return step


def bench_dream(args) -> dict:
    from immersions.registry import REGISTRY
    from immersions.dream.dreamer import Dreamer
    from immersions.selection import Region
    from immersions.model.checkpoint import preset_ear

    device = torch_device(getattr(args, "device", "auto"))
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    params = REGISTRY.defaults()
    if getattr(args, "set", None):
        from immersions.dream.run import parse_settings

        params = parse_settings(args.set, params)
    doc = {"benchmark": "dream", **environment(device), "params": dict(params.values()), "presets": {}}
    if getattr(args, "model", None):  # a model (any ear: `--model crepe`) instead of the presets
        from immersions.model.checkpoint import load_model

        ears = [(args.model, lambda: load_model(args.model))]
    else:
        ears = [(name, lambda name=name: preset_ear(name)) for name in names]
    for name, make in ears:
        torch.manual_seed(0)
        model = make().to(device)
        sr = model.sample_rate
        samples = model.loop_samples()
        loop = 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(0))
        heavy = device.type == "cpu" and name not in ("tiny", "full")
        repeats = max(2, args.repeats // 3) if heavy else args.repeats
        rows = {}
        for batch in batches:
            dreamer = Dreamer(model, None, loop.numpy(), copies=batch, device=device)
            dreamer.select(Region(len(model.taps) // 2, (0.5, 0.2)))
            ours = timed(lambda: dreamer.step(params), repeats, device=device)
            dreamer.timings = {}
            for _ in range(repeats):
                dreamer.step(params)
            split = {k: v / repeats * 1000 for k, v in sorted(dreamer.timings.items())}
            row = {"ms_per_step": 1000 * ours["median_s"], "steps_per_s": 1.0 / ours["median_s"],
                   "min_s": ours["min_s"], "max_s": ours["max_s"], "split_ms": split}
            # the step as it was before the musical dreams: waveform space, no priors, no reach,
            # BatchNorms not folded
            plain = Dreamer(model, None, loop.numpy(), copies=batch, device=device, reach=False, fold=False)
            plain.select(Region(len(model.taps) // 2, (0.5, 0.2)))
            plain_params = params.replace(space="waveform", sparsity=0.0, balance=0.0, beat_repeat=0.0,
                                          harmonics=0.0, contrast=0.0)
            before = timed(lambda: plain.step(plain_params), repeats, device=device)
            row["plain_step_ms"] = 1000 * before["median_s"]
            row["share_of_plain_steps_per_s"] = before["median_s"] / ours["median_s"]
            if batch == args.baseline_batch and model.kind == "cpc":  # the baseline is CPC's own network
                base = timed(_baseline_dream_step(model, loop.to(device), batch, int(params["time_jitter"] * sr)),
                             max(2, repeats // 2), device=device)
                row["baseline_ms_per_step"] = 1000 * base["median_s"]
                row["speedup_vs_baseline"] = base["median_s"] / ours["median_s"]
                for p in model.parameters():
                    p.requires_grad_(False)
            if device.type == "cuda":
                row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
                torch.cuda.reset_peak_memory_stats(device)
            rows[str(batch)] = row
        # the faster path beside float32, at the baseline batch (model/precision.py)
        precisions = {}
        for precision in [p.strip() for p in (getattr(args, "precisions", None) or "fp32,bf16").split(",")]:
            if precision == "fp32" or str(args.baseline_batch) not in rows:
                continue
            fast = Dreamer(model, None, loop.numpy(), copies=args.baseline_batch, device=device, precision=precision)
            fast.select(Region(len(model.taps) // 2, (0.5, 0.2)))
            result = timed(lambda: fast.step(params), repeats, device=device)
            fp32_s = rows[str(args.baseline_batch)]["ms_per_step"] / 1000
            precisions[precision] = {"resolved": fast.precision, "ms_per_step": 1000 * result["median_s"],
                                     "steps_per_s": 1.0 / result["median_s"], "speed_over_fp32": fp32_s / result["median_s"]}
        doc["presets"][name] = {"ear": model.kind, "loop_seconds": model.loop_seconds, "sample_rate": sr,
                                "frames_per_s": model.describe().get("frames_per_second"), "batches": rows,
                                "precisions": precisions}
    from immersions.model.precision import bf16_native

    doc["bf16_native"] = bf16_native(device)
    return doc


