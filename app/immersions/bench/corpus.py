"""`immersions bench corpus` and `immersions bench train`: what the corpus cache costs and saves.

bench corpus: decode speed (x real time) of every format, on files it encodes itself, side by
side with libsndfile (soundfile) + scipy's resampler where libsndfile reads the format; with
--data DIR, also the cache build of that folder: seconds per hour of audio, and the speed
per codec.

bench train: training items/s with excerpts cut from the cache against the in-memory folder
corpus (the way before the cache), in alternating blocks of steps so that both see the same
load; then the peak memory and speed of real `immersions train` runs from the --data folder,
keeping every activation (the default) and recomputing the first blocks' (--recompute 3).
Without --data, and always beside it: the speed choices side by side (`choices`): each preset
of --presets in float32 and in bfloat16 (--precisions), a training step at batch 16 on the
same excerpts in interleaved rounds, items/s and the ratio to the first preset's float32.
"""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from immersions.bench.kit import environment, timed
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

SR = 16000


def _encode_fixtures(folder: Path, seconds: float) -> dict[str, Path]:
    """A stereo music-like signal (chords plus noise bursts) in every format, as a library holds it."""
    from immersions.audio.io import ENCODINGS, encode_audio
    from immersions.synth import render_track

    paths = {}
    for name, (fmt, codec, rate) in ENCODINGS.items():
        signal = 0.7 * render_track(1, seconds, rate)
        paths[name] = encode_audio(folder / f"music.{name}", signal, rate, fmt, codec, video=name == "mp4")
    return paths


def _decode_all(path: Path) -> int:
    from immersions.audio.io import decode_chunks

    return sum(len(chunk) for chunk in decode_chunks(path, SR))


def _decode_soundfile(path: Path) -> int:
    import soundfile

    from immersions.audio.io import resample

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return len(resample(audio.mean(axis=1), rate, SR))


def bench_corpus(args) -> dict:
    from immersions.train.corpus import build_cache, read_manifest

    repeats = max(1, min(args.repeats, 5))
    seconds = args.seconds or 60.0
    doc = {"benchmark": "corpus", **environment(torch.device("cpu")), "sample_rate": SR,
           "fixture_seconds": seconds, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _encode_fixtures(Path(tmp), seconds).items():
            ours = timed(lambda: _decode_all(path), repeats, warmup=1)
            row = {"bytes": path.stat().st_size, "pyav": ours, "x_real_time": seconds / ours["median_s"]}
            try:
                import soundfile

                soundfile.info(str(path))
                base = timed(lambda: _decode_soundfile(path), repeats, warmup=1)
                row["soundfile_scipy"] = base
                row["soundfile_x_real_time"] = seconds / base["median_s"]
                row["speedup_vs_soundfile"] = base["median_s"] / ours["median_s"]
            except Exception as err:  # libsndfile does not read this format (M4A, Opus before 1.2, ...)
                row["soundfile_scipy"] = f"not readable by libsndfile: {type(err).__name__}"
            doc["formats"][name] = row
    if args.data:
        cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="immersions-bench-corpus-"))
        started = time.perf_counter()
        report = build_cache(args.data, SR, cache, min_seconds=6.0, progress=False)
        build_s = time.perf_counter() - started
        files = read_manifest(report.cache)["files"]
        used = [e for e in files.values() if e["status"] == "ok"]
        by_codec: dict[str, dict] = {}
        for entry in used:
            row = by_codec.setdefault(entry["codec"], {"files": 0, "hours": 0.0, "decode_s": 0.0})
            row["files"] += 1
            row["hours"] += entry["seconds"] / 3600
            row["decode_s"] += entry["decode_s"]
        for row in by_codec.values():
            row["x_real_time"] = row["hours"] * 3600 / row["decode_s"] if row["decode_s"] else None
        hours = report.seconds / 3600
        doc["data"] = {
            "folder": str(args.data), "cache": str(report.cache), "files": report.files, "hours": hours,
            "decoded_now": report.decoded, "skipped": report.skipped, "build_s": build_s,
            "build_s_per_hour": build_s / hours if hours and report.decoded == len(files) else None,
            "cache_bytes": sum(2 * e["samples"] for e in used), "by_codec": by_codec,
            # every file's own decode time as the manifest keeps it, whichever build decoded it
            "decode_s_per_hour": sum(e["decode_s"] for e in files.values()) / hours if hours else None,
            "note": "build_s_per_hour only when this run decoded every file (a fresh cache)",
        }
    return doc


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _training_step(model, optimizer):
    def step(audio: torch.Tensor) -> None:
        z, c = model(audio)
        loss, _ = model.cpc_loss(z, c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_choices(presets: list[str], precisions: list[str], steps: int, batch: int = 16) -> dict:
    """A training step (forward, InfoNCE with time negatives, backward, AdamW) per preset and
    precision, on the same random excerpts, in interleaved rounds so that every choice sees the
    same load. Items/s and each choice's speed over the first preset's float32."""
    from immersions.model import CPC, preset
    from immersions.model.precision import bf16_native, network_autocast, resolve_precision

    runs = {}
    for name in presets:
        cfg = preset(name)
        torch.manual_seed(0)
        model = CPC(cfg).train()
        audio = 0.1 * torch.randn(batch, int(round(cfg.item_seconds * cfg.scalogram.sample_rate)),
                                  generator=torch.Generator().manual_seed(0))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        for precision in precisions:
            resolve_precision(precision, "cpu")  # an unknown name is refused in one line

            def step(model=model, optimizer=optimizer, audio=audio, precision=precision) -> None:
                with network_autocast(precision, "cpu"):
                    z, c = model(audio)
                loss, _ = model.cpc_loss(z.float(), c.float(), negatives="times")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            runs[(name, precision)] = (step, [])
    for step, _ in runs.values():  # warm-up
        step()
    rounds = max(1, steps // 2)
    for _ in range(rounds):
        for step, times in runs.values():
            for _ in range(2):
                tick = time.perf_counter()
                step()
                times.append(time.perf_counter() - tick)
    rows: dict[str, dict] = {}
    first = None
    for (name, precision), (_, times) in runs.items():
        median = float(np.median(times))
        first = first or median
        cfg = preset(name)
        rows.setdefault(name, {"sample_rate": cfg.scalogram.sample_rate,
                               "frames_per_s": cfg.scalogram.frames_per_second, "top_hz": float(cfg.scalogram.frequencies()[-1]),
                               "item_seconds": cfg.item_seconds})[precision] = {
            "steps": len(times), "median_s": median, "min_s": min(times), "max_s": max(times),
            "items_per_s": batch / median, f"speed_over_{presets[0]}_fp32": first / median}
    return {"batch": batch, "bf16_native": bf16_native(torch.device("cpu")), "presets": rows}


def bench_train(args) -> dict:
    from immersions.audio.io import load_audio
    from immersions.model import CPC, preset
    from immersions.train.corpus import BatchStream, CachedCorpus, build_cache, cache_folder, read_manifest
    from immersions.train.dataset import Corpus

    choices = training_choices([n.strip() for n in args.presets.split(",") if n.strip()],
                               [p.strip() for p in (getattr(args, "precisions", None) or "fp32,bf16").split(",")],
                               args.steps or 6)
    if not args.data:
        return {"benchmark": "train", **environment(torch.device("cpu")), "choices": choices}
    name = args.presets.split(",")[0]
    cfg = preset(name)
    batch = 16
    samples = int(round(cfg.item_seconds * SR))
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="immersions-bench-train-"))
    if args.no_build:  # the cache as it stands, while another build may still be adding to it
        target = cache_folder(args.data, SR, cache)
        if not (target / "manifest.json").is_file():
            raise ImmersionsError(f"--no-build: no corpus cache for {args.data} in {cache}")
        cached = CachedCorpus(target, str(args.data))
    else:
        cached = CachedCorpus(build_cache(args.data, SR, cache, min_seconds=cfg.item_seconds, progress=False).cache,
                              str(args.data))

    # today's way on the same files until `baseline_hours` are in memory: the whole 12 h would
    # take 2.8 GB of float32 on a machine the training run shares
    entries = read_manifest(cached.cache)["files"]
    baseline_hours = args.baseline_hours
    signals, held = [], 0.0
    rss_before = _rss_kib()
    for relative in cached.files:
        if held >= baseline_hours * 3600:
            break
        signals.append(load_audio(Path(args.data) / relative, SR))
        held += entries[relative]["seconds"]
    in_memory = Corpus(signals, SR, "in memory")
    in_memory_rss_mib = (_rss_kib() - rss_before) / 1024

    torch.manual_seed(0)
    model = CPC(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    step = _training_step(model, optimizer)
    blocks, per_block = 3, max(1, (args.steps or 30) // 3)
    times: dict[str, list[float]] = {"cache": [], "in_memory": []}
    streams = {"cache": BatchStream(cached, batch, samples, np.random.default_rng(0)),
               "in_memory": BatchStream(in_memory, batch, samples, np.random.default_rng(0))}
    try:
        for stream in streams.values():  # warm-up
            step(next(stream))
        for _ in range(blocks):
            for source, stream in streams.items():
                for _ in range(per_block):
                    tick = time.perf_counter()
                    step(next(stream))
                    times[source].append(time.perf_counter() - tick)
    finally:
        for stream in streams.values():
            stream.close()
    cut = {label: timed(lambda c=corpus: c.batch(batch, samples, np.random.default_rng(1)), args.repeats)
           for label, corpus in (("cache", cached), ("in_memory", in_memory))}
    rows = {}
    for source, values in times.items():
        median = float(np.median(values))
        rows[source] = {"steps": len(values), "median_s": median, "min_s": min(values), "max_s": max(values),
                        "items_per_s": batch / median, "batch_cut": cut[source],
                        "hours": cached.seconds / 3600 if source == "cache" else held / 3600}
    doc = {"benchmark": "train", **environment(torch.device("cpu")), "preset": name,
           "batch": batch, "item_seconds": cfg.item_seconds, "training": rows,
           "cache_vs_in_memory": rows["cache"]["items_per_s"] / rows["in_memory"]["items_per_s"],
           "in_memory_rss_mib": in_memory_rss_mib,
           "in_memory_mib_per_hour": in_memory_rss_mib / (held / 3600) if held else None}
    del in_memory, signals

    doc["choices"] = choices
    doc["corpus"] = {"folder": str(args.data), "files": len(cached.files), "hours": cached.seconds / 3600,
                     "complete": not args.no_build}
    if not args.no_rss and not args.no_build:
        runs = [_train_process_rss(args.data, cached.cache.parent, name, args.steps or 30, recompute)
                for recompute in (0, LOW_MEMORY_RECOMPUTE)]
        doc["train_process"] = {"corpus_hours": cached.seconds / 3600, "default": runs[0], "low_memory": runs[1],
                                "low_memory_speed": runs[1]["items_per_s"] / runs[0]["items_per_s"]}
    return doc


LOW_MEMORY_RECOMPUTE = 3  # the --recompute the README gives for training in under 2 GB


def _high_water_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except OSError:  # gone
        return None


def _train_process_rss(data, cache_root: Path, name: str, steps: int, recompute: int) -> dict:
    """Peak RSS and speed of a real `immersions train` from the folder through the cache (already
    built). The peak is the high-water mark of the training process's own memory (VmHWM, read as
    it runs): a child's ru_maxrss would start from this large process's, the image it was forked
    from before its exec."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "immersions", "--quiet", "train", "--preset", name, "--data", str(data),
               "--cache", str(cache_root), "--steps", str(steps), "--batch-size", "16", "--out", out,
               "--recompute", str(recompute)]
        started = time.perf_counter()
        peak_kib = 0
        with tempfile.TemporaryFile() as err:
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            try:
                while child.poll() is None:
                    peak_kib = max(peak_kib, _high_water_kib(child.pid) or 0)
                    time.sleep(0.05)
            finally:  # the bench interrupted: no training left running behind it
                if child.poll() is None:
                    child.kill()
                    child.wait()
            wall = time.perf_counter() - started
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if child.returncode != 0:
            raise ImmersionsError(f"the training run failed: {stderr.strip().splitlines()[-1:]}")
        with open(Path(out) / "train_log.csv") as f:
            per_step = [float(row["items_per_s"]) for row in csv.DictReader(f)]
    steady = per_step[2:] or per_step  # the first steps warm up
    return {"command": " ".join(cmd[1:]), "steps": steps, "recompute": recompute, "wall_s": wall,
            "items_per_s": float(np.median(steady)), "peak_rss_mib": peak_kib / 1024,
            "note": "peak RSS of the training process (its VmHWM, read every 50 ms); it includes the file "
                    "pages of the shards that training touched and the statistics measured at the end"}
