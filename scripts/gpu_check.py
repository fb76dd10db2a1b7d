"""The GPU check's steps: run each `immersions` command in its own process under a time
limit, and write one JSON file per step and a summary. `scripts/gpu-check.sh` prepares
the interpreter and calls this; run that, not this.

Only the standard library here: the interpreter may lack torch or a dependency, and the
check must still write a summary that says so. Each step runs in its own process group,
so a hung step (and anything it started) is killed at its limit and the next one runs.

Output files (six: a GPU lease brings back at most eight, none deeper than two folders):
environment.json, dream.json, layout.json, render.json, train.json, summary.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent

# What a real GPU run must show (issue 16). Figures are recorded either way; a missed
# target is reported, not treated as a failed step.
DREAM_TARGET_STEPS_PER_S = 100.0
RENDER_TARGET_FPS = 60.0
# Strings in GL_RENDERER that mean the picture was drawn by the CPU, not a GPU.
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")


@dataclass
class Step:
    name: str
    argv: list[str]  # after `python -m immersions`
    limit_s: int
    figures: Callable[["Run", "Step", dict | None], dict]  # (run, step, the command's JSON) -> figures
    targets: Callable[[dict], dict] = field(default=lambda figures: {})


@dataclass
class Run:
    scale: str
    out: Path
    work: Path  # temporary: the layout cache and the training run
    python: str
    budget_s: float
    started: float
    environment: dict


# -- figures ----------------------------------------------------------------------------

def dream_figures(run: Run, step: Step, doc: dict | None) -> dict:
    (preset, row), = doc["presets"].items()
    batches = row["batches"]
    batch = max(batches, key=int)
    headline = batches[batch]
    return {"preset": preset, "batch": int(batch), "device": doc["device"],
            "steps_per_s": headline["steps_per_s"], "ms_per_step": headline["ms_per_step"],
            "min_s": headline["min_s"], "max_s": headline["max_s"], "split_ms": headline["split_ms"],
            "baseline_ms_per_step": headline.get("baseline_ms_per_step"),
            "speedup_vs_baseline": headline.get("speedup_vs_baseline"),
            "peak_memory_mb": headline.get("peak_memory_mb"),
            "loop_seconds": row["loop_seconds"], "batches": batches}


def dream_targets(figures: dict) -> dict:
    return {"steps_per_s_at_least": DREAM_TARGET_STEPS_PER_S,
            "met": figures["steps_per_s"] >= DREAM_TARGET_STEPS_PER_S}


def layout_figures(run: Run, step: Step, doc: dict | None) -> dict:
    return {key: doc[key] for key in ("nodes", "edges", "levels", "seconds", "peak_memory_mb", "edge_length_ratio")} | {
        "seconds_per_level": [round(level["seconds"], 3) for level in doc.get("per_level", [])]}


def render_figures(run: Run, step: Step, doc: dict | None) -> dict:
    (name, scene), = doc["scenes"].items()
    rows = [{"width": r["width"], "height": r["height"], "edges_drawn": r["edges_drawn"], "bloom": r["bloom"],
             "fps": r["fps"], "ms_per_frame": r["ms_per_frame"]["median"], "cpu_ms_per_frame": r["cpu_ms_per_frame"],
             "frames": r["frames"]} for r in scene["results"]]
    # the headline: the largest picture with the most connections, bloom on where it was drawn
    headline = max(rows, key=lambda r: (r["width"] * r["height"], r["edges_drawn"], r["bloom"]))
    return {"map": name, "nodes": scene["nodes"], "edges": scene["edges"], "gl_renderer": doc["gl_renderer"],
            "gl_version": scene["environment"].get("gl_version"), "width": headline["width"],
            "height": headline["height"], "edges_drawn": headline["edges_drawn"], "bloom": headline["bloom"],
            "fps": headline["fps"], "ms_per_frame": headline["ms_per_frame"], "upload": scene["upload"], "rows": rows}


def render_targets(figures: dict) -> dict:
    return {"fps_at_least": RENDER_TARGET_FPS, "met": figures["fps"] >= RENDER_TARGET_FPS}


def train_figures(run: Run, step: Step, doc: dict | None) -> dict:
    folder = run.work / "train"
    with open(folder / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError("the training log has no steps")
    config = json.loads((folder / "config.json").read_text()).get("model", {})
    # the first steps pay for CUDA kernels being picked and compiled: leave them out of the median
    settled = rows[min(5, len(rows) - 1):]
    items = [float(r["items_per_s"]) for r in settled]
    loop_s = float(rows[-1]["seconds"]) - float(rows[0]["seconds"])
    batch = int(step.argv[step.argv.index("--batch-size") + 1])
    return {"preset": config.get("preset"), "steps": len(rows), "batch_size": batch,
            "item_seconds": config.get("item_seconds"),
            "items_per_s": statistics.median(items), "items_per_s_min": min(items), "items_per_s_max": max(items),
            "items_per_s_steps": f"{int(settled[0]['step'])}..{int(settled[-1]['step'])}",
            "items_per_s_overall": (len(rows) - 1) * batch / loop_s if loop_s > 0 else None,
            "seconds_in_steps": float(rows[-1]["seconds"]),
            "loss_first": float(rows[0]["loss"]), "loss_last": float(rows[-1]["loss"]),
            "accuracy_last": float(rows[-1]["accuracy"])}


# -- the steps at each scale --------------------------------------------------------------

def steps_for(scale: str, work: Path) -> list[Step]:
    train_out = str(work / "train")
    if scale == "gpu":
        batch = "16"
        return [
            Step("dream", ["bench", "dream", "--presets", "seed", "--batches", "1,4,8", "--baseline-batch", "8",
                           "--repeats", "30", "--device", "cuda"], 120, dream_figures, dream_targets),
            Step("layout", ["layout", "--preset", "seed", "--force", "--json", "--device", "cuda"], 120, layout_figures),
            Step("render", ["bench", "render", "--maps", "seed", "--sizes", "1920x1080", "--edge-counts",
                            "100000,1000000", "--bloom", "on", "--frames", "120"], 150, render_figures, render_targets),
            Step("train", ["train", "--preset", "seed", "--data", "synth", "--steps", "50", "--batch-size", batch,
                           "--out", train_out, "--device", "cuda"], 150, train_figures),
        ]
    # tiny: the same four paths on the CPU, small enough for CI, so that the check cannot rot.
    # The limits are wide: each step takes 5-60 s on two idle cores, but over 240 s was seen
    # with the process niced on two cores shared with a dozen others.
    return [
        Step("dream", ["bench", "dream", "--presets", "micro", "--batches", "2", "--baseline-batch", "2",
                       "--repeats", "1", "--device", "cpu"], 600, dream_figures),
        Step("layout", ["layout", "--preset", "micro", "--force", "--json", "--device", "cpu"], 600, layout_figures),
        Step("render", ["bench", "render", "--maps", "micro", "--sizes", "320x180", "--edge-counts", "1000",
                        "--bloom", "on", "--frames", "3"], 600, render_figures),
        Step("train", ["train", "--preset", "micro", "--data", "synth", "--steps", "3", "--batch-size", "2",
                       "--synth-tracks", "2", "--synth-seconds", "8", "--out", train_out, "--device", "cpu"], 600,
             train_figures),
    ]


# -- running ----------------------------------------------------------------------------

@dataclass
class Outcome:
    rc: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str


_running: set[int] = set()  # process groups of the steps now running


def end_group(proc: subprocess.Popen) -> None:
    """End a step's whole process group: TERM, then KILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_limited(argv: list[str], limit_s: float, env: dict) -> Outcome:
    """Run argv in its own process group; at the limit, end the whole group. The group stays in
    this session, so whoever ends the session (a lease's time limit) ends the step too."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT, process_group=0, text=True)
        _running.add(proc.pid)
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            end_group(proc)
        finally:
            if proc.poll() is None:  # this check itself is being ended
                end_group(proc)
            _running.discard(proc.pid)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Outcome(proc.returncode, timed_out, seconds, out.read(), err.read())


def output_lines(text: str) -> list[str]:
    """Lines as a terminal would show them: progress bars redraw with carriage returns."""
    lines = []
    for raw in text.splitlines():
        line = raw.split("\r")[-1].rstrip()
        if line:
            lines.append(line)
    return lines


def one_line_error(outcome: Outcome, limit_s: float) -> str:
    lines = output_lines(outcome.stderr)
    said = next((l for l in reversed(lines) if l.startswith("immersions: error:")), None)
    last = said or (lines[-1] if lines else "no output")
    if outcome.timed_out:
        return f"timed out after {limit_s:.0f} s (the step's limit); last output: {last}"[:500]
    return f"exit status {outcome.rc}: {last}"[:500]


def child_env(run: Run) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["IMMERSIONS_CACHE"] = str(run.work / "cache")  # the layout step's result is the render step's map
    env["MPLBACKEND"] = "Agg"
    return env


def run_step(run: Run, step: Step) -> dict:
    remaining = run.budget_s - (time.perf_counter() - run.started)
    limit = min(step.limit_s, remaining)
    doc = {"step": step.name, "scale": run.scale, "ok": False, "error": None, "timed_out": False, "skipped": False,
           "seconds": 0.0, "limit_s": round(max(0.0, limit), 1), "command": "immersions " + " ".join(step.argv),
           "device_name": run.environment.get("device_name"), "torch": run.environment.get("torch"),
           "figures": None, "targets": None, "output": None, "log_tail": []}
    if limit < 5:
        doc["error"] = f"skipped: the check's budget of {run.budget_s:.0f} s was spent before this step"
        doc["skipped"] = True
        return doc
    outcome = run_limited([run.python, "-m", "immersions", *step.argv], limit, child_env(run))
    doc["seconds"] = round(outcome.seconds, 2)
    doc["timed_out"] = outcome.timed_out
    doc["log_tail"] = output_lines(outcome.stderr)[-30:]
    if outcome.timed_out or outcome.rc != 0:
        doc["error"] = one_line_error(outcome, limit)
        return doc
    parsed = None
    if step.name != "train":  # training writes a log file; the others print one JSON object
        try:
            parsed = json.loads(outcome.stdout)
        except json.JSONDecodeError as err:
            doc["error"] = f"printed no JSON ({err}); first output: {outcome.stdout[:200]!r}"
            return doc
        doc["output"] = parsed
    try:
        doc["figures"] = step.figures(run, step, parsed)
    except (KeyError, ValueError, TypeError, OSError) as err:
        doc["error"] = f"ran, but its figures could not be read: {type(err).__name__}: {err}"
        return doc
    if run.scale == "gpu":
        doc["targets"] = step.targets(doc["figures"]) or None
        renderer = str(doc["figures"].get("gl_renderer", "")).lower()
        if any(s in renderer for s in SOFTWARE_RENDERERS):
            doc["error"] = (f"EGL drew on the CPU ({doc['figures']['gl_renderer']}), not the GPU: carry .gl from "
                            "`scripts/gpu-check.sh --prepare` and check the NVIDIA EGL vendor file")
            return doc
    doc["ok"] = True
    return doc


def headline(doc: dict) -> str:
    f = doc["figures"] or {}
    if doc["step"] == "dream":
        return f"{f['steps_per_s']:.1f} steps/s at batch {f['batch']} ({f['preset']})"
    if doc["step"] == "layout":
        return f"{f['nodes']} nodes, {f['edges']} edges in {f['seconds']:.1f} s, ratio {f['edge_length_ratio']:.3f}"
    if doc["step"] == "render":
        return f"{f['fps']:.1f} fps at {f['width']}x{f['height']}, {f['edges_drawn']} edges, bloom {f['bloom']} ({f['gl_renderer']})"
    if doc["step"] == "train":
        return f"{f['items_per_s']:.1f} items/s ({f['preset']}, batch {f['batch_size']}, {f['steps']} steps)"
    return ""


# -- the environment --------------------------------------------------------------------

def probe() -> dict:
    """What this interpreter runs on: printed as JSON by `gpu_check.py --probe` in a child
    process, so a broken torch is a failed probe, not a crashed check."""
    import importlib.metadata

    import torch

    doc = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
           "cuda": torch.cuda.is_available(), "cuda_version": torch.version.cuda, "cpu_cores": os.cpu_count(),
           "machine": platform.node(), "cpu": platform.processor() or platform.machine()}
    if doc["cuda"]:
        props = torch.cuda.get_device_properties(0)
        doc |= {"device": "cuda", "device_name": torch.cuda.get_device_name(0), "device_count": torch.cuda.device_count(),
                "capability": f"{props.major}.{props.minor}", "memory_gb": round(props.total_memory / 1e9, 1),
                "multiprocessors": props.multi_processor_count}
    else:
        doc |= {"device": "cpu", "device_name": f"cpu: {doc['cpu']}, {doc['cpu_cores']} cores"}
    packages = {}
    for name in ("numpy", "scipy", "nnAudio", "moderngl", "glcontext", "miniaudio", "mido", "tomli_w",
                 "safetensors", "matplotlib", "tqdm"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    doc["packages"] = packages
    return doc


def environment(python: str, scale_asked: str, setup_notes: list[str]) -> dict:
    outcome = run_limited([python, str(Path(__file__).resolve()), "--probe"], 120, dict(os.environ))
    doc = {"step": "environment", "ok": False, "error": None, "seconds": round(outcome.seconds, 2),
           "setup": setup_notes, "scale_asked": scale_asked}
    if outcome.rc == 0 and not outcome.timed_out:
        try:
            doc |= json.loads(outcome.stdout)
            doc["ok"] = True
        except json.JSONDecodeError as err:
            doc["error"] = f"the probe printed no JSON ({err})"
    else:
        doc["error"] = one_line_error(outcome, 120)
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi:
        smi = run_limited([nvidia_smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                           "--format=csv,noheader"], 30, dict(os.environ))
        doc["nvidia_smi"] = output_lines(smi.stdout) or output_lines(smi.stderr)
    return doc


def _ended(signum, frame):
    """TERM or HUP to the check: leave no step running (a step's GPU work would go on)."""
    for pgid in list(_running):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def leave_no_step_running() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _ended)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true", help="print this interpreter's environment as JSON")
    parser.add_argument("--out", type=Path, help="folder for the JSON files")
    parser.add_argument("--scale", choices=("auto", "gpu", "tiny"), default="auto")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the steps")
    parser.add_argument("--budget", type=float,
                        help="seconds for all steps together (default: 420 on a GPU, inside a lease's 8 minutes; "
                             "2400 for tiny, which a starved CI machine may need)")
    parser.add_argument("--setup-notes", type=Path, help="a file of lines the shell setup wrote")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    if args.out is None:
        parser.error("--out is needed")

    leave_no_step_running()
    started = time.perf_counter()
    started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    notes = output_lines(args.setup_notes.read_text())[-40:] if args.setup_notes and args.setup_notes.is_file() else []
    env_doc = environment(args.python, args.scale, notes)
    scale = args.scale if args.scale != "auto" else ("gpu" if env_doc.get("cuda") else "tiny")
    env_doc["scale"] = scale
    budget = args.budget if args.budget else (420.0 if scale == "gpu" else 2400.0)
    write(args.out / "environment.json", env_doc)
    print(f"environment: {'ok' if env_doc['ok'] else 'FAILED: ' + str(env_doc['error'])}; "
          f"{env_doc.get('device_name')}, torch {env_doc.get('torch')}, scale {scale}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="immersions-gpu-check-"))
    results = {}
    try:
        steps = steps_for(scale, work)
        run = Run(scale, args.out, work, args.python, budget, started, env_doc)
        for step in steps:
            doc = run_step(run, step)
            write(args.out / f"{step.name}.json", doc)
            results[step.name] = doc
            met = (doc["targets"] or {}).get("met")
            target = "" if met is None else f" (target {'met' if met else 'NOT met'})"
            print(f"{step.name}: " + (f"ok in {doc['seconds']:.1f} s: {headline(doc)}{target}" if doc["ok"]
                                      else doc["error"].upper()[:7] + doc["error"][7:] if doc["skipped"]
                                      else f"FAILED after {doc['seconds']:.1f} s: {doc['error']}"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {"check": "gpu-check", "scale": scale, "ok": env_doc["ok"] and all(d["ok"] for d in results.values()),
               "started_utc": started_utc, "seconds": round(time.perf_counter() - started, 1), "budget_s": budget,
               "device_name": env_doc.get("device_name"), "torch": env_doc.get("torch"), "cuda": env_doc.get("cuda"),
               "python": env_doc.get("python"), "environment_error": env_doc["error"],
               "failed_steps": [n for n, d in results.items() if not d["ok"]],
               "timed_out_steps": [n for n, d in results.items() if d["timed_out"]],
               "skipped_steps": [n for n, d in results.items() if d["skipped"]],
               "steps": {n: {"ok": d["ok"], "error": d["error"], "timed_out": d["timed_out"], "seconds": d["seconds"],
                             "limit_s": d["limit_s"], "headline": headline(d) if d["ok"] else None,
                             "target_met": (d["targets"] or {}).get("met")} for n, d in results.items()}}
    write(args.out / "summary.json", summary)
    print(f"summary: {'ok' if summary['ok'] else 'FAILED: ' + ', '.join(summary['failed_steps'] or ['environment'])}"
          f" in {summary['seconds']:.0f} s -> {args.out}", flush=True)
    return 0 if summary["ok"] else 1


def write(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
