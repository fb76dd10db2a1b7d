"""`immersions bench ...`: honest timing scripts that print one JSON object.

Every figure is a median over repetitions after a warm-up, with min and max; speed
claims are ratios against a baseline measured side by side in the same run.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Callable

import torch

from immersions.errors import ImmersionsError


def environment(device: torch.device) -> dict:
    doc = {
        "machine": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        doc["device_name"] = torch.cuda.get_device_name(device)
    return doc


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2, device: torch.device | None = None) -> dict:
    """Median, min and max seconds of `fn` over `repeats` runs after `warmup` runs."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


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


def _device(name: str) -> torch.device:
    """`auto` is CUDA when there is one; a named device that is not there is an error, so that
    a GPU figure is never quietly measured on the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ImmersionsError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImmersionsError(f"device '{name}' asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                              "use --device cpu or install a CUDA build of torch")
    return device


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
    from immersions.model import CPC, preset

    device = _device(getattr(args, "device", "auto"))
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    params = REGISTRY.defaults()
    if getattr(args, "set", None):
        from immersions.dream.run import parse_settings

        params = parse_settings(args.set, params)
    doc = {"benchmark": "dream", **environment(device), "params": dict(params.values()), "presets": {}}
    for name in names:
        torch.manual_seed(0)
        model = CPC(preset(name)).eval().to(device)
        sr = model.cfg.scalogram.sample_rate
        samples = int(round(model.cfg.loop_seconds * sr))
        loop = 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(0))
        heavy = device.type == "cpu" and name != "tiny"
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
            plain_params = params.replace(space="waveform", sparsity=0.0, balance=0.0, beat_repeat=0.0)
            before = timed(lambda: plain.step(plain_params), repeats, device=device)
            row["plain_step_ms"] = 1000 * before["median_s"]
            row["share_of_plain_steps_per_s"] = before["median_s"] / ours["median_s"]
            if batch == args.baseline_batch:
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
        doc["presets"][name] = {"loop_seconds": model.cfg.loop_seconds, "batches": rows}
    return doc


def _layout_subprocess(extra: list[str], device: str) -> dict:
    """`immersions layout --json --force --no-save` in a fresh process: honest time and peak memory."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "immersions", "--quiet", "layout", "--json", "--force", "--no-save",
           "--device", device, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImmersionsError(f"layout run failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    doc = json.loads(done.stdout)
    doc.pop("per_level", None)
    return doc


def bench_layout(args) -> dict:
    """The full multilevel layout of the default model's graph and of the `seed` preset's
    (each in its own process), and our layout against Graphviz sfdp on the default graph
    coarsened to two sizes."""
    from immersions.layout.force import coarsened
    from immersions.layout.graph import build_graph
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    doc = {"benchmark": "layout", "environment": environment(device), "graphs": {}}
    doc["graphs"]["default"] = _layout_subprocess([], str(device))
    doc["graphs"]["seed"] = _layout_subprocess(["--preset", "seed"], str(device))

    model = load_model(None)
    full = build_graph(model, load_stats(model))
    doc["comparison"] = [_compare_with_sfdp(coarsened(full, int(edges)), int(edges), device, max(1, args.repeats // 3))
                         for edges in str(args.compare_edges).split(",")]
    return doc


def _compare_with_sfdp(graph, max_edges: int, device, repeats: int) -> dict:
    from immersions.layout.force import LayoutConfig, edge_length_ratio, layout
    from immersions.layout.sfdp import sfdp_available, sfdp_layout

    compare = {"graph": f"default model's graph coarsened to <= {max_edges} edges",
               "nodes": graph.nodes, "edges": graph.edges}
    # ours twice: with every edge alike and k = 1.8 (the plain spring-electrical model, as
    # sfdp runs it), and with the product's settings (springs balanced by degree, k = 2.5,
    # for an even picture; a longer mean edge is the price)
    for name, cfg in (("ours", LayoutConfig(degree_balance=0.0, repulsion_exponent=1.8)),
                      ("ours_product_settings", LayoutConfig())):
        layout(graph, cfg, device=device)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = layout(graph, cfg, device=device)
            times.append(time.perf_counter() - start)
        compare[name] = {"seconds": statistics.median(times), "min_s": min(times),
                         "edge_length_ratio": edge_length_ratio(result.positions, graph.src, graph.dst),
                         "settings": {"degree_balance": cfg.degree_balance, "repulsion_exponent": cfg.repulsion_exponent}}
    ratio = compare["ours"]["edge_length_ratio"]
    if sfdp_available():
        times = []
        for _ in range(repeats):
            positions, seconds = sfdp_layout(graph)
            times.append(seconds)
        compare["sfdp"] = {"seconds": statistics.median(times), "min_s": min(times),
                           "edge_length_ratio": edge_length_ratio(positions, graph.src, graph.dst),
                           "program": "Graphviz sfdp, -Goverlap=true (no overlap removal, like ours)"}
        compare["speedup_vs_sfdp"] = compare["sfdp"]["seconds"] / compare["ours"]["seconds"]
        compare["ratio_no_worse"] = bool(ratio <= compare["sfdp"]["edge_length_ratio"] * (1 + 1e-3))
    else:
        compare["sfdp"] = "not installed (apt-get install graphviz)"
    return compare


def _sizes(text: str) -> list[tuple[int, int]]:
    """'1280x720,1920x1080' -> [(1280, 720), (1920, 1080)]."""
    sizes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ImmersionsError(f"size '{item}' is not WIDTHxHEIGHT, e.g. 1920x1080") from None
        if w <= 0 or h <= 0:
            raise ImmersionsError(f"size '{item}' must be positive, e.g. 1920x1080")
        sizes.append((w, h))
    if not sizes:
        raise ImmersionsError("--sizes is empty: give WIDTHxHEIGHT, e.g. 1920x1080")
    return sizes


def bench_render(args) -> dict:
    """The map renderer offscreen (EGL) on the default model's map and the `seed` preset's,
    at 1280x720 and 1920x1080, with and without bloom, at several connection counts
    (`--maps`, `--sizes`, `--bloom` pick fewer, or another preset's map)."""
    from immersions.model.config import preset

    # bad settings fail before the slow imports and before a context opens
    names = [n.strip() for n in getattr(args, "maps", "default,seed").split(",") if n.strip()]
    sizes = _sizes(getattr(args, "sizes", "1280x720,1920x1080"))
    bloom = {"both": (True, False), "on": (True,), "off": (False,)}[getattr(args, "bloom", "both")]
    try:
        counts = [int(c) for c in args.edge_counts.split(",")]
    except ValueError:
        raise ImmersionsError(f"--edge-counts '{args.edge_counts}' is not whole numbers, e.g. 0,100000,1000000") from None
    for name in names:
        if name != "default":
            preset(name)

    from immersions.layout.cache import model_layout
    from immersions.model.checkpoint import load_model
    from immersions.model.cpc import CPC
    from immersions.model.stats import load_stats
    from immersions.paths import cache_dir
    from immersions.visual.performance import scene_from_layout
    from immersions.visual.render_bench import bench_scene, offscreen_context

    ctx = offscreen_context()
    doc = {"benchmark": "render", "environment": environment(torch.device("cpu")),
           "gl_renderer": ctx.info["GL_RENDERER"], "scenes": {}}
    for name in names:
        if name == "default":  # the shipped model with its statistics
            net = load_model(None)
            stats, folder = load_stats(net), None
        else:  # an untrained preset's map, laid out once into the cache as `immersions layout --preset` does
            net, stats, folder = CPC(preset(name)).eval(), None, cache_dir() / f"preset-{name}"
        scene = scene_from_layout(model_layout(net, stats, folder=folder))
        result = bench_scene(scene, sizes=sizes, frames=args.frames, edge_counts=[min(c, scene.edges) for c in counts],
                             bloom=bloom, ctx=ctx)
        doc["scenes"][name] = {"nodes": scene.nodes, "edges": scene.edges, **result}
    return doc


def bench_audio(args) -> dict:
    from immersions.audio.player_bench import bench_audio as run_audio

    return run_audio(args.seconds if args.seconds is not None else 60.0)


def bench_remote(args) -> dict:
    from immersions.remote.bench import bench_remote as run_remote

    return run_remote(args)


def bench_soak(args) -> dict:
    from immersions.install.soak import bench_soak as run_soak

    return run_soak(args)


def bench_link(args) -> dict:
    from immersions.control.link_bench import bench_link as run_link

    return run_link(args)


def bench_sound(args) -> dict:
    from immersions.bench_sound import bench_sound as run_sound

    return run_sound(args)

def bench_listen(args) -> dict:
    from immersions.dream.listen_bench import bench_listen as run_listen

    return run_listen(args)


BENCHMARKS = {"model": bench_model, "dream": bench_dream, "layout": bench_layout, "render": bench_render,
              "remote": bench_remote, "soak": bench_soak,
              "audio": bench_audio,
              "link": bench_link, "sound": bench_sound}


def bench_video(args) -> dict:
    from immersions.visual.video_bench import bench_video as run_video

    return run_video(args)


def bench_cap(args) -> dict:
    from immersions.visual.video_bench import bench_cap as run_cap

    return run_cap(args)


BENCHMARKS.update(video=bench_video, cap=bench_cap)


def bench_corpus(args) -> dict:
    from immersions.train.corpus_bench import bench_corpus as run_corpus

    return run_corpus(args)


def bench_train(args) -> dict:
    from immersions.train.corpus_bench import bench_train as run_train

    return run_train(args)


BENCHMARKS.update({"corpus": bench_corpus, "train": bench_train})


BENCHMARKS["listen"] = bench_listen


def run(what: str, args) -> dict:
    if what not in BENCHMARKS:
        raise ImmersionsError(f"unknown benchmark '{what}': choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[what](args)
