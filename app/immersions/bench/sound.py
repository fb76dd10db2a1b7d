"""`immersions bench sound`: do the dreams sound like music? One JSON object.

A grid of dreams (start clips x tap groups x channel positions x variants), each run for N
steps from the same seed, and per dream: how far the selected region rose and how far a
same-sized control region rose (channels moved half way round), how far seven such regions
spread round the channel axis rose (the median of their absolute rises: one control
channel may be coupled to the selection in the ear itself), and the sound measures
of `immersions.audio.measures`. Beside them the same measures for the starter clips and,
with `--reference DIR`, for excerpts of real music, whose mean octave profile is the
reference for spectral balance. Every figure the targets name is a ratio against this
run's own references.

Variants are named sets of registry values (and `reach`, the dither/redirect/floor that
make every neuron reachable) so that priors are measured side by side on the same grid.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from immersions.audio import measures as M
from immersions.audio.io import AUDIO_EXTENSIONS, load_audio, probe_audio, write_wav
from immersions.bench.kit import environment
from immersions.registry import REGISTRY, loop_length
from immersions.dream.dreamer import Dreamer
from immersions.dream.loop import start_clip
from immersions.selection import Region
from immersions.dream.run import control_region, parse_settings, run_stage
from immersions.errors import ImmersionsError
from immersions.model.checkpoint import load_model
from immersions.model.stats import load_stats

log = logging.getLogger(__name__)

STARTS = ("silence", "noise", "kick", "groove")
TAP_GROUPS = ("early", "middle", "late", "context")
SILENT_DB = -60.0  # a dream quieter than this (RMS, dBFS) has not left silence
CONTROLS = 7  # control regions spread evenly round the channel axis; the fourth is the grid's control
# name -> (registry values, reach). "before" is the dream step as it was before the musical
# dreams (samples, no priors, no dither/redirect/floor); "waveform" adds the reach; "default"
# is the registry's defaults (the tilted spectrum space and beat repetition); the others
# change one thing against the default, or try the priors together.
PLAIN = {"space": "waveform", "beat_repeat": 0.0, "balance": 0.0, "sparsity": 0.0, "harmonics": 0.0, "contrast": 0.0}
VARIANTS = {
    "before": (PLAIN, False),
    "waveform": (PLAIN, True),
    "default": ({}, True),
    "beat_jitter": ({"jitter_grid": "beat"}, True),
    "sixteenth_jitter": ({"jitter_grid": "sixteenth"}, True),
    "spectrum_pink": ({"step_tilt": -3.0, "beat_repeat": 0.0, "balance": 0.0}, True),
    "spectrum": ({"beat_repeat": 0.0, "balance": 0.0}, True),
    "rhythm": ({"beat_repeat": 0.0, "rhythm_repeat": 0.1}, True),
    "stft": ({"space": "stft"}, True),
    "tilt6": ({"step_tilt": -6.0}, True),
    "no_balance": ({"balance": 0.0}, True),
    "no_sparsity": ({"sparsity": 0.0}, True),
    "no_contrast": ({"contrast": 0.0}, True),
    "layer_contrast": ({"contrast": 0.5, "contrast_share": 1.0}, True),
    "harmonics": ({"harmonics": 0.2}, True),
    "balance_strong": ({"balance": 0.1}, True),
    "sparse": ({"sparsity": 0.3}, True),
    "sparse_light": ({"sparsity": 0.1}, True),
    "all_priors": ({"balance": 0.1, "sparsity": 0.3}, True),
    "components": ({"space": "components", "beat_repeat": 0.0, "balance": 0.0}, True),
    "components_beat": ({"space": "components"}, True),
}


def tap_groups(model) -> dict[str, int]:
    """Tap index per group: early, middle and late encoder, and the last context layer. An ear
    without CPC's encoder and context (CREPE: six convolutions and its pitch output): its
    second, middle and last-but-one taps, and its last."""
    encoder = sum(1 for t in model.taps if t.key.startswith("enc"))
    if encoder == 0:
        last = len(model.taps) - 1
        return {"early": min(1, last), "middle": last // 2, "late": max(0, last - 1), "context": last}
    return {"early": min(encoder - 1, max(1, encoder // 8)), "middle": encoder // 2, "late": encoder - 1,
            "context": len(model.taps) - 1}


def grid_region(model, tap: int, position: float) -> Region:
    """The grid's selection on a tap: one channel at `position` of the way through its
    channels, all its pitches; on a tap of one channel with a pitch axis (CREPE's pitch
    output: 360 bins of 20 cents), one pitch bin at `position` instead, since its one
    channel with every pitch is the whole tap and leaves no other region to compare with."""
    t = model.taps[tap]
    if t.channels == 1 and t.pitches > 1:
        return Region(tap, (0.5, 0.0), (position, 0.0))
    return Region(tap, (position, 0.0))


def control_regions(region: Region, count: int = CONTROLS, channels: int | None = None) -> list[Region]:
    """`count` regions of the selection's size, moved k / (count + 1) of the way round the
    channel axis (the pitch axis on a tap of one channel: `control_region`) (k = 1 .. count);
    with an odd count the middle one is the grid's own control."""
    return [control_region(region, k / (count + 1), channels) for k in range(1, count + 1)]


def reference_excerpts(folder: str, samples: int, sample_rate: int, count: int) -> list[tuple[str, np.ndarray]]:
    """Up to `count` loop-long excerpts from the middle of the audio files under `folder`."""
    root = Path(folder)
    if not root.is_dir():
        raise ImmersionsError(f"--reference {folder} is not a folder of audio files")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ImmersionsError(f"--reference {folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    # spread over the corpus, not the first few files of one album
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files)))]
    out = []
    for path in picks:
        try:
            audio = load_audio(path, sample_rate)
        except ImmersionsError as err:
            log.warning("reference skipped: %s", err)
            continue
        if len(audio) < samples or np.abs(audio).max() < 1e-4:
            continue
        middle = (len(audio) - samples) // 2
        out.append((str(path.relative_to(root)), audio[middle:middle + samples]))
    return out


def spectrogram_png(wav: Path) -> Path | None:
    """sox's spectrogram of a WAV next to it; without sox, our own scalogram picture."""
    png = wav.with_suffix(".png")
    if shutil.which("sox"):
        done = subprocess.run(["sox", str(wav), "-n", "spectrogram", "-o", str(png), "-t", wav.stem],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return png
        log.warning("sox spectrogram failed for %s: %s", wav, done.stderr.strip())
    from immersions.audio.plot import save_scalogram_png

    rate = probe_audio(wav).source_rate  # the dream's own rate: a 44.1-kHz ear's top octave is drawn too
    return save_scalogram_png(load_audio(wav, rate), rate, png)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _summary(rows: list[dict], key: str) -> float | None:
    return _median(r["measures"][key] for r in rows)


def bench_sound(args) -> dict:
    model = load_model(args.model)
    stats = load_stats(model)
    sr = model.sample_rate
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = parse_settings(args.set, REGISTRY.defaults())
    bpm = base["bpm"]
    samples = loop_length({"bpm": bpm, "bars": base["bars"]}, sr)
    quick = bool(getattr(args, "quick", False))
    starts = _choose(args.starts or ("silence,noise" if quick else ",".join(STARTS)), STARTS, "--starts")
    groups = _choose(args.groups or ("early,context" if quick else ",".join(TAP_GROUPS)), TAP_GROUPS, "--groups")
    # "none": only the references (the starter clips and --reference), no dreams
    variants = [] if args.variants == "none" else _choose(args.variants or "default", tuple(VARIANTS), "--variants")
    channels = [float(c) for c in (args.channels or ("0.2" if quick else "0.2,0.6")).split(",")]
    steps = args.steps if args.steps is not None else (20 if quick else 200)
    out = Path(args.out) if args.out else None

    starters = {name: start_clip(name, samples, sr) for name in STARTS if name != "silence"}
    real = reference_excerpts(args.reference, samples, sr, args.reference_count) if args.reference else []
    profiles = [p for p in (M.octave_profile(a, sr) for _, a in real) if p is not None]
    if not profiles:  # no real music at hand: the starter clips stand in, and the JSON says so
        profiles = [M.octave_profile(starters[n], sr) for n in ("kick", "groove")]
    reference = np.mean(profiles, axis=0)
    edges = M.octave_edges(sr)

    def measured(audio: np.ndarray) -> dict:
        doc = M.measure(audio, sr, bpm, reference)
        doc["best_tempo"] = M.best_tempo_repetition(audio, sr)
        return doc

    doc = {"benchmark": "sound", **environment(torch.device("cpu")), "model": str(args.model or "default"),
           "steps": steps, "seed": args.seed, "bpm": bpm, "bars": base["bars"], "loop_samples": samples,
           "balance_reference": f"{len(real)} excerpts of {args.reference}" if real else "starter clips kick, groove",
           "tap_groups": {g: model.taps[i].name for g, i in tap_groups(model).items() if g in groups},
           "variants": {v: {"settings": VARIANTS[v][0], "reach": VARIANTS[v][1]} for v in variants},
           "starter_clips": {n: measured(a) for n, a in starters.items()},
           "real_music": {name: measured(a) for name, a in real},
           # the octave bands the balance is measured in, up to the top one below Nyquist, and music's profile
           "octaves_hz": [[float(lo), float(hi)] for lo, hi in zip(edges[:-1], edges[1:])],
           "reference_octave_profile_db": [float(v) for v in reference], "dreams": []}
    for name, audio in (*starters.items(), *real):
        if out:
            folder = "starters" if name in starters else "real"
            spectrogram_png(write_wav(out / folder / f"{Path(name).stem}.wav", audio, sr))

    taps = tap_groups(model)
    for variant in variants:
        settings, reach = VARIANTS[variant]
        params = base.replace(**settings)
        for start in starts:
            for group in groups:
                for channel in channels:
                    dreamer = Dreamer(model, stats, start_clip(start, samples, sr, args.seed), copies=args.copies,
                                      seed=args.seed, reach=reach)
                    region = grid_region(model, taps[group], channel)
                    tap = model.taps[region.tap]
                    controls = control_regions(region, channels=tap.channels)
                    before = [dreamer.measure(c, params) for c in controls]
                    began = time.perf_counter()
                    result = run_stage(dreamer, region, False, params, steps, progress=False)
                    seconds = time.perf_counter() - began
                    spread = [dreamer.measure(c, params) - b for c, b in zip(controls, before)]
                    clip = dreamer.clip(params)
                    row = {"variant": variant, "start": start, "group": group, "tap": model.taps[taps[group]].name,
                           "channel": channel, "rise": result.objective_end - result.objective_start,
                           "control_rise": result.control_end - result.control_start,
                           "controls_rise": spread,
                           "objective_end": result.objective_end, "steps_per_s": result.steps_per_second,
                           "seconds": seconds, "nan_resets": result.nan_resets,
                           "peak": float(np.abs(clip).max()), "measures": measured(clip),
                           "octave_profile_db": None if (profile := M.octave_profile(clip, sr)) is None
                           else [float(v) for v in profile],
                           # neurons resting higher on silence than on real material (early ones can only fall from it)
                           "silence_loving": stats[tap.key].silence_loving(*region.bounds((tap.channels, tap.pitches, 1))[:2])
                           if stats else None}
                    if out:
                        wav = write_wav(out / variant / f"{start}-{group}-{channel:g}.wav", clip, sr)
                        row["wav"], row["png"] = str(wav), str(spectrogram_png(wav))
                    log.info("%s %s %s %.2f: rise %.3f, control %.3f", variant, start, group, channel,
                             row["rise"], row["control_rise"])
                    doc["dreams"].append(row)
    doc["summary"] = summarize(doc, variants)
    return doc


def summarize(doc: dict, variants) -> dict:
    """Per variant, the issue's targets as ratios against this run's references."""
    grooves = [doc["starter_clips"][n] for n in ("kick", "groove")]  # noise is no music
    music = list(doc["real_music"].values()) or grooves
    music_flatness = _median(m["spectral_flatness"] for m in music)
    # real music at its own best tempo (80..160 BPM), the starter clips at theirs, the loop's
    music_repetition = _median([m["best_tempo"]["beat"] for m in doc["real_music"].values()]
                               + [max(m["onset_repetition_beat"], m["onset_repetition_bar"] or -1.0) for m in grooves])
    music_change = _median(m["harmonic_change"] for m in music)
    out = {"music_flatness_median": music_flatness, "music_onset_repetition_median": music_repetition,
           "music_peak_share_median": _median(m["peak_energy_share"] for m in music),
           "music_harmonic_change_median": music_change}
    for variant in variants:
        rows = [r for r in doc["dreams"] if r["variant"] == variant]
        if not rows:
            continue
        per_group = {}
        for group in dict.fromkeys(r["group"] for r in rows):
            g = [r for r in rows if r["group"] == group]
            rise, control = _median(r["rise"] for r in g), _median(abs(r["control_rise"]) for r in g)
            # each dream's seven controls as one figure (the median of their absolute rises), then over the dreams
            controls = _median(_median(abs(c) for c in r["controls_rise"]) for r in g if r.get("controls_rise"))
            per_group[group] = {"rise_median": rise, "control_rise_abs_median": control,
                                "rise_over_control": rise / control if control else None,
                                "controls_rise_abs_median": controls,
                                "rise_over_controls": rise / controls if controls else None,
                                "rose": sum(r["rise"] > 0 for r in g), "dreams": len(g)}
        flatness = _summary(rows, "spectral_flatness")
        repetition = _median(max(r["measures"]["onset_repetition_beat"], r["measures"]["onset_repetition_bar"] or -1.0)
                             for r in rows)
        out[variant] = {
            "tap_groups": per_group,
            "flatness_median": flatness,
            "flatness_over_music": flatness / music_flatness if flatness and music_flatness else None,
            "peak_share_median": _summary(rows, "peak_energy_share"),
            "onset_repetition_median": repetition,
            "balance_distance_db_median": _summary(rows, "balance_distance_db"),
            # per octave band (doc["octaves_hz"]), the dreams' level over music's, in dB (median over the dreams)
            "octave_excess_db_median": octave_excess(rows, doc["reference_octave_profile_db"]),
            # beat-to-beat change of the notes sounding, against real music's (not a target of the issue)
            "harmonic_change_median": (change := _summary(rows, "harmonic_change")),
            "harmonic_change_over_music": change / music_change if change is not None and music_change else None,
            "silent_dreams": sum(r["measures"]["rms_db"] < SILENT_DB for r in rows),
            "steps_per_s_median": _median(r["steps_per_s"] for r in rows),
            "targets": {
                # compared, not divided: a control that did not move at all (a channel its ReLU keeps
                # off, as some context taps' are) has no ratio, and a rise over it still counts
                "rise_3x_control_every_group": all(rises_3x(g) for g in per_group.values()),
                "flatness_within_3x_of_music": bool(flatness and music_flatness
                                                    and music_flatness / 3 <= flatness <= 3 * music_flatness),
                "onset_repetition_at_least_music_median": bool(repetition is not None and music_repetition is not None
                                                                and repetition >= music_repetition),
                "nothing_silent": all(r["measures"]["rms_db"] >= SILENT_DB for r in rows),
            },
        }
    return out


def rises_3x(group: dict) -> bool:
    """The grid's rise target for one tap group: its median rise at least 3x its control's."""
    rise, control = group["rise_median"], group["control_rise_abs_median"]
    return rise is not None and control is not None and rise > 0 and rise >= 3 * control


def octave_excess(rows: list[dict], reference: list[float]) -> list[float | None]:
    """Per octave band, the median over the dreams of their profile minus music's (dB; both
    profiles have their mean over the bands removed, so this is balance, not loudness)."""
    profiles = [r["octave_profile_db"] for r in rows if r.get("octave_profile_db") is not None]
    return [_median(p[k] - reference[k] for p in profiles) for k in range(len(reference))]


def _choose(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in allowed:
            raise ImmersionsError(f"{flag}: '{n}' is not one of {', '.join(allowed)}")
    return names
