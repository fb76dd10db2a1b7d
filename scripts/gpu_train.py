"""The GPU training run of the full-band ear: `scripts/gpu-train.sh` calls this; run that.

    prepare   (here, where the music and a package registry are) make the compact music that
              travels: Opus at 24 kbit/s, mono, at most --budget-mb in all (40 MB): an excerpt
              of every training file, as long as the budget allows, each package's copyright
              file beside its music, and the first 192 s of the 15 longest held-out probe
              tracks. Needs PyAV (the project's environment).
    run       (on the lent machine) train the `full` preset from models/full for --minutes on
              that music mixed 3 : 1 with the procedural corpus (generated there), then both
              probes (the procedural tracks, and the held-out tracks against the untrained
              network), and write train.json and the model (weights, config, statistics, log,
              plot) under --out: six files, which a lease brings back.

Each step of `run` is an `immersions` command in its own process group under a time limit
(run_limited from gpu_check.py), so that a hung step is ended and the summary still says why.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpu_check import ROOT, run_limited

OPUS_BIT_RATE = 24_000
OPUS_RATE = 48_000
PROBE_SECONDS = 192.0  # the first 192 s of each probe track, as the protocol
PROBE_TRACKS = 15
MODEL_FILES = ("config.json", "model.safetensors", "stats.safetensors", "train_log.csv", "train_plot.png")


# -- prepare ------------------------------------------------------------------------------

def prepare(music: Path, probe: Path, out: Path, budget_mb: float) -> dict:
    import numpy as np

    from immersions.audio.io import audio_files, encode_audio, load_audio, probe_audio
    from immersions.errors import ImmersionsError

    bytes_per_second = OPUS_BIT_RATE / 8 * 1.04  # Ogg pages add a few per cent
    if out.exists():
        shutil.rmtree(out)
    (out / "train").mkdir(parents=True)
    (out / "probe").mkdir(parents=True)

    def usable(files: list[Path]) -> list[tuple[Path, float]]:
        found = []
        for path in files:
            try:
                info = probe_audio(path)
            except ImmersionsError as err:
                print(f"gpu-train: skipped {path}: {err}", file=sys.stderr)
                continue
            if info.declared_seconds and info.declared_seconds >= 8.0:
                found.append((path, info.declared_seconds))
        return found

    def encode(path: Path, dest: Path, start_s: float, seconds: float) -> float:
        audio = load_audio(path, OPUS_RATE)
        start = max(0, min(int(start_s * OPUS_RATE), len(audio) - int(seconds * OPUS_RATE)))
        piece = audio[start:start + int(seconds * OPUS_RATE)]
        peak = float(np.abs(piece).max()) if len(piece) else 0.0
        if peak > 1.0:
            piece = piece / peak
        encode_audio(dest, piece.astype(np.float32), OPUS_RATE, "opus", "libopus", channels=1, bit_rate=OPUS_BIT_RATE)
        return len(piece) / OPUS_RATE

    probes = sorted(usable(audio_files(probe)), key=lambda item: -item[1])[:PROBE_TRACKS]
    probe_seconds = 0.0
    for path, _ in probes:
        probe_seconds += encode(path, out / "probe" / f"{path.stem}.opus", 0.0, PROBE_SECONDS)
    for copyright in probe.rglob("copyright"):
        shutil.copy(copyright, out / "probe" / f"{copyright.parent.name}.copyright")

    train = usable(audio_files(music))
    left = budget_mb * 1e6 - sum(p.stat().st_size for p in (out / "probe").iterdir())
    if not train or left <= 0:
        raise SystemExit(f"gpu-train: nothing to train on in {music}, or the probe alone fills {budget_mb} MB")
    # one excerpt length for every file, from the middle, as long as the budget allows
    excerpt = left / bytes_per_second / len(train)
    train_seconds = 0.0
    for path, seconds in train:
        relative = path.relative_to(music)
        dest = out / "train" / relative.with_suffix(".opus")
        dest.parent.mkdir(parents=True, exist_ok=True)
        length = min(seconds, excerpt)
        train_seconds += encode(path, dest, (seconds - length) / 2, length)
    for copyright in music.rglob("copyright"):
        target = out / "train" / copyright.relative_to(music)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(copyright, target)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    doc = {"train_files": len(train), "train_hours": train_seconds / 3600, "excerpt_s": excerpt,
           "probe_tracks": len(probes), "probe_hours": probe_seconds / 3600, "bytes": size,
           "bit_rate": OPUS_BIT_RATE, "music": str(music), "probe": str(probe)}
    (out / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


# -- run ------------------------------------------------------------------------------------

def train_argv(scale: str, music: Path, model_dir: Path, minutes: float) -> list[str]:
    common = ["train", "--preset", "full", "--init", "models/full", "--data", f"{music / 'train'}:3",
              "--data", "synth:1", "--negatives", "times", "--lr", "3e-4", "--warmup", "200",
              "--steps", "1000000", "--minutes", str(minutes), "--out", str(model_dir), "--save-every", "1000000"]
    if scale == "gpu":
        return [*common, "--batch-size", "64", "--synth-seconds", "192", "--device", "cuda", "--cache",
                str(model_dir.parent / "cache")]
    return [*common, "--batch-size", "2", "--synth-tracks", "2", "--synth-seconds", "12", "--device", "cpu",
            "--cache", str(model_dir.parent / "cache"), "--precision", "fp32"]


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(out: Path, scale: str, music: Path, python: str, minutes: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="immersions-gpu-train-"))
    model_dir = work / "model"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'app'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
           "IMMERSIONS_CACHE": str(work / "cache")}
    doc: dict = {"scale": scale, "music": json.loads((music / "manifest.json").read_text())
                 if (music / "manifest.json").is_file() else None, "steps": {}}
    try:
        import torch  # noqa: F401  (only to name the device)

        doc["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        doc["torch"] = torch.__version__
    except ImportError:
        doc["device"] = doc["torch"] = None
    tracks = [] if scale == "gpu" else ["--tracks", "3"]
    steps = [
        ("train", train_argv(scale, music, model_dir, minutes), 60 * minutes + 600),
        ("probe_procedural", ["probe", "--model", str(model_dir), "--json", *tracks], 900),
        ("probe_real", ["probe", "--model", str(model_dir), "--data", str(music / "probe"), "--held-out", "--json",
                        "--tracks", "15" if scale == "gpu" else "3"], 900),
    ]
    for name, argv, limit in steps:
        outcome = run_limited([python, "-m", "immersions", "--quiet", *argv], limit, env)
        row = {"argv": argv, "rc": outcome.rc, "timed_out": outcome.timed_out, "seconds": outcome.seconds}
        if outcome.rc != 0:
            row["stderr"] = outcome.stderr[-2000:]
        elif name.startswith("probe"):
            try:
                row["result"] = json.loads(outcome.stdout)
            except json.JSONDecodeError:
                row["stderr"] = "probe printed no JSON: " + outcome.stdout[-500:]
        doc["steps"][name] = row
        print(f"gpu-train: {name}: rc {outcome.rc} in {outcome.seconds:.0f} s", flush=True)
        if name == "train" and outcome.rc != 0:
            break
    if (model_dir / "train_log.csv").is_file():
        rows = read_log(model_dir / "train_log.csv")
        settled = rows[min(5, len(rows) - 1):] if rows else []
        if settled:
            items = [float(r["items_per_s"]) for r in settled]
            doc["training"] = {"steps": len(rows), "items_per_s": statistics.median(items),
                               "items_per_s_min": min(items), "items_per_s_max": max(items),
                               "seconds": float(rows[-1]["seconds"]), "loss_last": float(rows[-1]["loss"]),
                               "accuracy_last": float(rows[-1]["accuracy"])}
        (out / "model").mkdir(exist_ok=True)
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copy(model_dir / name, out / "model" / name)
    for name in ("probe_procedural", "probe_real"):
        result = doc["steps"].get(name, {}).get("result")
        if result is not None:
            doc[name] = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
    doc["ok"] = all(row["rc"] == 0 for row in doc["steps"].values()) and len(doc["steps"]) == len(steps)
    (out / "train.json").write_text(json.dumps(doc, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--music", default="music/full")
    p.add_argument("--probe", default="music/probe")
    p.add_argument("--out", default=".music")
    p.add_argument("--budget-mb", type=float, default=40.0)
    p = sub.add_parser("run")
    p.add_argument("--out", required=True)
    p.add_argument("--scale", choices=("gpu", "tiny"), required=True)
    p.add_argument("--music", default=".music")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--minutes", type=float, help="training time (default: 7 on a GPU, 0.2 tiny)")
    args = parser.parse_args(argv)
    if args.what == "prepare":
        for folder in (args.music, args.probe):
            if not Path(folder).is_dir():
                print(f"gpu-train: no folder {folder}: fetch it with scripts/fetch-music.sh (README, "
                      "'The full-band ear')", file=sys.stderr)
                return 2
        doc = prepare(Path(args.music), Path(args.probe), Path(args.out), args.budget_mb)
        print(f"gpu-train: prepared {args.out}: {doc['train_files']} training excerpts ({doc['train_hours']:.2f} h), "
              f"{doc['probe_tracks']} probe tracks, {doc['bytes'] / 1e6:.1f} MB")
        return 0
    if not (Path(args.music) / "train").is_dir():
        print(f"gpu-train: no {args.music}/train: run 'bash scripts/gpu-train.sh --prepare' where the music is, "
              "and carry .music", file=sys.stderr)
        return 2
    minutes = args.minutes if args.minutes is not None else (7.0 if args.scale == "gpu" else 0.2)
    started = time.perf_counter()
    doc = run(Path(args.out), args.scale, Path(args.music), args.python, minutes)
    print(f"gpu-train: {'done' if doc['ok'] else 'FAILED'} in {time.perf_counter() - started:.0f} s: "
          f"{Path(args.out) / 'train.json'}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
