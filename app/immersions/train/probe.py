"""Linear probe: how well do the model's frozen context vectors tell tracks apart?

Two sets of tracks, one protocol. The procedural probe: 15 procedurally generated tracks the model never heard in training (held-out seeds),
each long enough to run through its arrangement more than once (intro, build, groove,
breakdown, drop, ...) as a real track does, cut into 4-s clips; each clip becomes one
vector (its last context vector, which sums up the whole clip); a logistic regression
learns "which track is this clip from" on the earlier part of each track and is tested
on the later part (split by time, with a gap, so no test clip overlaps a training clip).
The same architecture with untrained weights is the baseline. The original reached
90.4 % on 15 real house tracks. Test accuracy is also reported per section of the
arrangement the clip ends in (groove, breakdown, drop, ...): breakdowns, where only the
chords play, are where the tracks are hardest to tell apart.

The real-music probe (`immersions probe --data DIR`): every audio file under DIR is one
track (or every subfolder, its files in name order, with `by="folder"`), cut and split the
same way; accuracy is also reported per track.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from immersions.audio.io import audio_files, load_audio
from immersions.synth import render_track, track_sections
from immersions.errors import ImmersionsError
from immersions.model.cpc import CPC
from immersions.train.dataset import HELD_OUT_SEED


@dataclass(frozen=True)
class ProbeConfig:
    n_tracks: int = 15
    track_seconds: float = 192.0
    clip_seconds: float = 4.0
    hop_seconds: float = 4.0
    train_fraction: float = 0.7  # clips ending before this point train, clips after the gap test
    seed: int = HELD_OUT_SEED


log = logging.getLogger(__name__)


@dataclass
class ProbeData:
    clips: np.ndarray  # [n, samples]
    labels: np.ndarray
    is_train: np.ndarray
    sections: np.ndarray  # name of the arrangement section each clip ends in ("" where unknown)
    starts: np.ndarray  # sample where each clip starts in its track
    track_names: list[str]


def cut_clips(track_samples: int, clip: int, hop: int, train_fraction: float) -> list[tuple[int, bool]]:
    """(start, is_train) of every clip: clips ending before the split train, clips starting a
    hop after it test, and the clip straddling the split is left out, so no test clip
    overlaps a training clip."""
    split = int(round(train_fraction * track_samples))
    return [(start, start + clip <= split) for start in range(0, track_samples - clip + 1, hop)
            if start + clip <= split or start >= split + hop]


def probe_data(cfg: ProbeConfig, sample_rate: int, progress: bool = False) -> ProbeData:
    clip = int(round(cfg.clip_seconds * sample_rate))
    hop = int(round(cfg.hop_seconds * sample_rate))
    clips, labels, is_train, sections, starts = [], [], [], [], []
    for label in tqdm(range(cfg.n_tracks), desc="rendering probe tracks", disable=not progress):
        track = render_track(cfg.seed + label, cfg.track_seconds, sample_rate)
        plan = track_sections(cfg.seed + label, cfg.track_seconds)
        for start, train in cut_clips(int(round(cfg.track_seconds * sample_rate)), clip, hop, cfg.train_fraction):
            clips.append(track[start:start + clip])
            labels.append(label)
            is_train.append(train)
            starts.append(start)
            t = (start + clip) / sample_rate
            sections.append(next((name for name, a, b in plan if a < t <= b), plan[-1][0]))
    return ProbeData(np.stack(clips), np.array(labels), np.array(is_train), np.array(sections), np.array(starts),
                     [f"seed {cfg.seed + label}" for label in range(cfg.n_tracks)])


def music_tracks(folders: list[str | os.PathLike], by: str = "file") -> list[tuple[str, list[Path]]]:
    """(name, files) of every track under the folders: each audio file, or each folder that holds files."""
    tracks: list[tuple[str, list[Path]]] = []
    for folder in folders:
        files = audio_files(folder)
        if by == "file":
            tracks += [(str(path.relative_to(folder)), [path]) for path in files]
        elif by == "folder":
            groups: dict[Path, list[Path]] = {}
            for path in files:
                groups.setdefault(path.parent, []).append(path)
            tracks += [(str(parent.relative_to(folder)) if parent != Path(folder) else Path(folder).name, paths)
                       for parent, paths in groups.items()]
        else:
            raise ValueError(f"tracks are files or folders, not {by!r}")
    return tracks


def music_probe_data(folders: list[str | os.PathLike], sample_rate: int, cfg: ProbeConfig = ProbeConfig(),
                     by: str = "file", max_tracks: int | None = None, progress: bool = False) -> ProbeData:
    """Real tracks from audio files, cut and split like the procedural ones. Files that cannot be
    decoded are skipped and named; tracks too short for a training and a test clip are left out
    and named. With `max_tracks`, the longest tracks are kept (ties by name)."""
    clip = int(round(cfg.clip_seconds * sample_rate))
    hop = int(round(cfg.hop_seconds * sample_rate))
    decoded: list[tuple[str, np.ndarray]] = []
    for name, files in tqdm(music_tracks(folders, by), desc="decoding probe tracks", unit="track",
                            disable=not progress):
        parts = []
        for path in files:
            try:
                parts.append(load_audio(path, sample_rate))
            except ImmersionsError as err:
                log.warning("probe: skipping %s", err)
        if not parts:
            continue
        audio = np.concatenate(parts)
        cuts = cut_clips(len(audio), clip, hop, cfg.train_fraction)
        if not any(train for _, train in cuts) or all(train for _, train in cuts):
            log.warning("probe: leaving out %s: %.0f s is too short for a training and a test clip", name,
                        len(audio) / sample_rate)
            continue
        decoded.append((name, audio))
    if max_tracks is not None:
        decoded = sorted(decoded, key=lambda t: (-len(t[1]), t[0]))[:max_tracks]
        decoded.sort(key=lambda t: t[0])
    if len(decoded) < 2:
        raise ImmersionsError(f"the real-music probe needs at least 2 tracks of at least "
                              f"{(2 * cfg.clip_seconds + cfg.hop_seconds) / (1 - cfg.train_fraction):.0f} s; "
                              f"found {len(decoded)} in {', '.join(map(str, folders))}")
    clips, labels, is_train, starts = [], [], [], []
    for label, (name, audio) in enumerate(decoded):
        for start, train in cut_clips(len(audio), clip, hop, cfg.train_fraction):
            clips.append(audio[start:start + clip])
            labels.append(label)
            is_train.append(train)
            starts.append(start)
    return ProbeData(np.stack(clips), np.array(labels), np.array(is_train), np.full(len(clips), ""),
                     np.array(starts), [name for name, _ in decoded])


@torch.no_grad()
def context_vectors(model: CPC, clips: np.ndarray, batch: int = 16) -> np.ndarray:
    model = model.eval()
    device = next(model.parameters()).device
    out = [model.summarize(torch.from_numpy(clips[i:i + batch]).to(device)).cpu().numpy()
           for i in range(0, len(clips), batch)]
    return np.concatenate(out)


def probe_predictions(model: CPC, data: ProbeData) -> np.ndarray:
    """The classifier's track for every test clip (in the order of data.clips[~data.is_train])."""
    features = context_vectors(model, data.clips)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    classifier.fit(features[data.is_train], data.labels[data.is_train])
    return classifier.predict(features[~data.is_train])


BOOTSTRAP_DRAWS = 2000


def track_bootstrap(hits: np.ndarray, baseline_hits: np.ndarray, truth: np.ndarray, level: float = 0.95,
                    draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """How far the figures could move on other tracks like these: a paired bootstrap over tracks.

    A track's test clips are neighbouring stretches of one piece and are right or wrong
    together, so a bootstrap over clips would promise far too much; whole tracks are drawn
    again (with replacement), and both models are scored on the same drawn clips, so the
    gain's interval is not widened by the tracks' own difficulty. Returns the gain (accuracy
    over the baseline's) and the middle `level` of the redrawn accuracies and gains."""
    tracks = np.unique(truth)
    per_track = np.array([[hits[truth == t].sum(), baseline_hits[truth == t].sum(), (truth == t).sum()]
                          for t in tracks], dtype=np.float64)  # [tracks, (hits, baseline hits, clips)]
    picks = np.random.default_rng(seed).integers(0, len(tracks), size=(draws, len(tracks)))
    counts = np.zeros((draws, len(tracks)))
    np.add.at(counts, (np.arange(draws)[:, None], picks), 1)  # how often each track was drawn
    drawn = counts @ per_track
    accuracy, baseline = drawn[:, 0] / drawn[:, 2], drawn[:, 1] / drawn[:, 2]
    tails = [50 * (1 - level), 50 * (1 + level)]
    return {"gain": float(hits.mean() - baseline_hits.mean()),
            "accuracy_interval": [float(v) for v in np.percentile(accuracy, tails)],
            "gain_interval": [float(v) for v in np.percentile(accuracy - baseline, tails)],
            "interval": f"{100 * level:g} %, {draws} paired draws of the {len(tracks)} tracks"}


def evaluate(model: CPC, data: ProbeData) -> dict:
    """Trained against untrained (the same architecture, seed 0) on the same clips, with how far
    both could move on other tracks (`track_bootstrap`)."""
    started = time.perf_counter()
    truth = data.labels[~data.is_train]
    hits = probe_predictions(model, data) == truth
    torch.manual_seed(0)
    untrained = CPC(model.cfg).to(next(model.parameters()).device)
    untrained_hits = probe_predictions(untrained, data) == truth
    sections = data.sections[~data.is_train]
    result = {
        "accuracy": float(hits.mean()),
        "untrained_accuracy": float(untrained_hits.mean()),
        **track_bootstrap(hits, untrained_hits, truth),
        "by_track": {name: {"accuracy": float(hits[truth == label].mean()),
                            "untrained_accuracy": float(untrained_hits[truth == label].mean()),
                            "test_clips": int((truth == label).sum())}
                     for label, name in enumerate(data.track_names)},
        "n_tracks": len(data.track_names),
        "train_clips": int(data.is_train.sum()),
        "test_clips": int((~data.is_train).sum()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if (sections != "").any():
        result["by_section"] = {name: {"accuracy": float(hits[sections == name].mean()),
                                       "untrained_accuracy": float(untrained_hits[sections == name].mean()),
                                       "test_clips": int((sections == name).sum())}
                                for name in dict.fromkeys(sections)}
    return result


def run_probe(model: CPC, cfg: ProbeConfig = ProbeConfig(), progress: bool = False) -> dict:
    started = time.perf_counter()
    result = evaluate(model, probe_data(cfg, model.cfg.scalogram.sample_rate, progress))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_music_probe(model: CPC, folders: list[str | os.PathLike], by: str = "file", max_tracks: int | None = None,
                    cfg: ProbeConfig = ProbeConfig(), progress: bool = False) -> dict:
    started = time.perf_counter()
    data = music_probe_data(folders, model.cfg.scalogram.sample_rate, cfg, by, max_tracks, progress)
    result = {"data": [str(f) for f in folders], **evaluate(model, data)}
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
