"""`immersions bench soak --minutes M --json`: does the installation hold up for hours?

Runs the headless installation (real-time NULL audio, offscreen picture, the autopilot)
for M minutes and samples the process every minute: resident memory, threads, open file
handles, and the GPU memory torch holds (when dreaming on CUDA). A leak shows as growth
after the warm-up: the report gives the growth after the first 5 minutes (for runs under
10 minutes, after the first interval, and the curve is sampled every tenth of the run so
it still says something), per hour too, with the autopilot's figures (taps visited,
underruns, clips played). The saved loop goes to a temporary folder, not the user's.

Two decks: `--fade-every-bars N` makes deck B and fades the crossfader to the other deck
every N bars (over `fade_length` bars), so both decks play, hold and dream in turn all
through; `--cue-device null` adds the cue output on a second NULL device. The report then
also gives the fades made and the cue output's underruns, its device's returns after it went
away (`cue_reopens`) and whether it plays at the end (`cue_playing`).
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import psutil

from immersions.bench.kit import environment
from immersions.errors import ImmersionsError
from immersions.install.run import run_install_headless
from immersions.install.session import InstallSession

log = logging.getLogger(__name__)

WARMUP_S = 300.0  # memory settles (allocator pools, caches) in the first minutes


def _gpu_mb() -> float | None:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _sample(process: psutil.Process, seconds: float, session: InstallSession) -> dict:
    stats = session.perf.clock.stats()
    gpu = _gpu_mb()
    return {
        "t_s": round(seconds, 1),
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "threads": process.num_threads(),
        "open_files": len(process.open_files()),
        "fds": process.num_fds() if hasattr(process, "num_fds") else None,
        "gpu_mb": round(gpu, 1) if gpu is not None else None,
        "clips_played": len(session.clips),
        "underruns": stats.underruns if stats is not None else 0,
    }


def growth(samples: list[dict], key: str, after_s: float) -> dict | None:
    """How `key` grew over the samples at or after `after_s`: the change from the first of
    them to the last, and the least-squares slope per hour (memory wobbles by tens of MB
    from one minute to the next; the slope says whether it creeps)."""
    kept = [s for s in samples if s["t_s"] >= after_s and s[key] is not None]
    if len(kept) < 2 or kept[-1]["t_s"] <= kept[0]["t_s"]:
        return None
    t = np.array([s["t_s"] for s in kept])
    y = np.array([s[key] for s in kept], dtype=np.float64)
    slope = np.polyfit(t, y, 1)[0] if len(kept) > 2 else (y[-1] - y[0]) / (t[-1] - t[0])
    return {"from_t_s": kept[0]["t_s"], "to_t_s": kept[-1]["t_s"], "change": round(float(y[-1] - y[0]), 2),
            "per_hour": round(float(slope) * 3600.0, 2) + 0.0, "max": round(float(y.max()), 2)}


def bench_soak(args) -> dict:
    """The soak benchmark; args: minutes (float), and optionally model, seed, size, fps,
    fade_every_bars (two decks, the fader moved that often) and cue_device."""
    minutes = float(getattr(args, "minutes", 10.0) or 10.0)
    if not 0 < minutes <= 7 * 24 * 60:
        raise ImmersionsError(f"--minutes {minutes:g}: choose more than 0 (a soak is an hour or more)")
    total = minutes * 60.0
    every = 60.0 if minutes >= 10 else max(5.0, total / 10.0)
    warmup = WARMUP_S if minutes >= 10 else every
    process = psutil.Process()
    samples: list[dict] = []
    fade_every = int(getattr(args, "fade_every_bars", 0) or 0)
    if fade_every < 0:
        raise ImmersionsError(f"--fade-every-bars {fade_every}: choose 0 (one deck) or more bars")
    cue_device = getattr(args, "cue_device", None)
    fades = [0]
    next_sample = [0.0]

    def sample(seconds: float, session: InstallSession) -> None:
        if fade_every and seconds > 0:
            perf = session.perf
            if session.perf.clock.fader == session.perf.clock.fader_target:  # the last fade has ended
                perf.fade(min(fade_every, perf.params["fade_length"]))
                fades[0] += 1
        if seconds + 1e-6 < next_sample[0] and seconds < total:
            return
        next_sample[0] += every
        samples.append(_sample(process, seconds, session))
        log.info("soak %.0f s: %.0f MB, %d threads", seconds, samples[-1]["rss_mb"], samples[-1]["threads"])

    from immersions.registry import REGISTRY, bar_seconds

    fade_s = fade_every * bar_seconds(REGISTRY["bpm"].default) if fade_every else every

    with tempfile.TemporaryDirectory(prefix="immersions-soak-") as state:
        figures = run_install_headless(total, model=getattr(args, "model", None), seed=getattr(args, "seed", 0) or 0,
                                       size=tuple(getattr(args, "size", None) or (640, 360)),
                                       fps=float(getattr(args, "fps", None) or 12.0), state_dir=state,
                                       sample=sample, sample_every=min(every, fade_s), cue_device=cue_device)
    return {
        "benchmark": "soak",
        **environment(),
        "minutes": minutes,
        "sample_every_s": every,
        "samples": samples,
        "growth_after_warmup": {key: growth(samples, key, warmup)
                                for key in ("rss_mb", "threads", "open_files", "fds", "gpu_mb")},
        "taps_visited": figures["taps_visited"],
        "underruns": figures["underruns"],
        "late_callbacks": figures["late_callbacks"],
        "clips_played": figures["clips_played"],
        "selections": figures["selections"],
        "restarts": figures["restarts"],
        "loop_restarts": figures["loop_restarts"],
        "moved_on": figures["moved_on"],
        "loudness_lufs": figures["loudness_lufs"],
        "decks": 2 if fade_every else 1,
        "fade_every_bars": fade_every,
        "fades": fades[0],
        "cue_device": cue_device,
        "cue_underruns": figures.get("cue_underruns"),
        "cue_reopens": (figures.get("cue") or {}).get("reopens"),
        "cue_playing": (figures.get("cue") or {}).get("playing"),
        "install": figures,
    }
