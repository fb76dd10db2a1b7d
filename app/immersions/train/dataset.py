"""Where training audio comes from: the procedural house corpus or a folder of files
(read through the corpus cache, train/corpus.py).

No labels: every source is a pool of long signals from which random (overlapping)
excerpts are cut. The procedural corpus is unlimited: it keeps a pool of rendered
tracks in memory and replaces the oldest with a fresh seed as training goes on.
"""

from __future__ import annotations

import logging
import os
from collections import deque

import numpy as np
import torch
from tqdm import tqdm

from immersions.audio.io import load_folder
from immersions.synth import render_track
from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)


class Corpus:
    """A pool of mono signals at one sample rate; `batch` cuts random excerpts as float32.

    The signals are float32 arrays, or int16 ones (memory-mapped shards of the corpus cache)
    that `scale` brings to full scale 1.0."""

    scale = 1.0
    # One label per signal (the subfolder, e.g. the package, it came from), or None; see group
    group_of: list[str] | None = None
    _groups: list[np.ndarray] = []  # the signals of each group, in label order

    def __init__(self, signals: list[np.ndarray], sample_rate: int, name: str):
        self.signals = deque(signals)
        self.sample_rate = sample_rate
        self.name = name

    @property
    def seconds(self) -> float:
        return sum(len(s) for s in self.signals) / self.sample_rate

    def batch(self, batch_size: int, samples: int, rng: np.random.Generator) -> torch.Tensor:
        items = np.empty((batch_size, samples), dtype=np.float32)
        for row, pick in enumerate(self._picks(batch_size, rng)):
            signal = self._looped(pick, samples)
            start = rng.integers(len(signal) - samples + 1)
            items[row] = signal[start:start + samples]
            self._read(pick, start, samples)
        if self.scale != 1.0:
            items *= self.scale
        return torch.from_numpy(items)

    def group(self, labels: list[str]) -> None:
        """Label every signal (its subfolder, e.g. its package): `batch` then draws all its
        excerpts from one group that has a signal for each."""
        if len(labels) != len(self.signals):
            raise ValueError(f"{len(labels)} labels for {len(self.signals)} signals")
        self.group_of = list(labels)
        names = np.asarray(labels)
        self._groups = [np.flatnonzero(names == name) for name in np.unique(names)]

    def _picks(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The signals `n` excerpts come from: each from a different signal where there are
        enough (two excerpts of one track would be each other's negatives, teaching the model to
        tell a track from itself). With groups, all from one group drawn uniformly among those
        with n signals or more (from any signal where none has that many)."""
        pool = np.arange(len(self.signals))
        eligible = [members for members in self._groups if len(members) >= n] if n > 1 else []
        if eligible:
            pool = eligible[rng.integers(len(eligible))]
        return pool[rng.choice(len(pool), n, replace=len(pool) < n)]

    def pairs(self, n_pairs: int, samples: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two excerpts of each of `n_pairs` tracks, (first excerpts, second excerpts): the
        second starts at least one excerpt away from the first, anywhere else in the track,
        so the pair shares the track and nothing else (where the track is long enough: a
        track shorter than two excerpts gives two overlapping ones). Different pairs come from
        different tracks where there are enough, as in `batch`."""
        first = np.empty((n_pairs, samples), dtype=np.float32)
        second = np.empty_like(first)
        picks = rng.choice(len(self.signals), n_pairs, replace=len(self.signals) < n_pairs)
        for row, pick in enumerate(picks):
            signal = self._looped(pick, samples)
            span = len(signal) - samples  # excerpt starts lie in [0, span]
            a = int(rng.integers(span + 1))
            # the second start: uniform over the starts at least `samples` from the first,
            # before it (0 .. a - samples) or after it (a + samples .. span)
            before, after = max(0, a - samples + 1), max(0, span - a - samples + 1)
            if before + after:
                r = int(rng.integers(before + after))
                b = r if r < before else a + samples + r - before
            else:
                b = int(rng.integers(span + 1))
            first[row] = signal[a:a + samples]
            second[row] = signal[b:b + samples]
            self._read(pick, a, samples)
            self._read(pick, b, samples)
        if self.scale != 1.0:
            first *= self.scale
            second *= self.scale
        return torch.from_numpy(first), torch.from_numpy(second)

    def _looped(self, pick: int, samples: int) -> np.ndarray:
        """Signal `pick`, looped to at least `samples` where it is shorter (short files loop)."""
        signal = self.signals[pick]
        return signal if len(signal) >= samples else np.tile(signal, -(-samples // len(signal)))

    def refresh(self) -> None:
        """Replace the oldest signal with new material, where the source is unlimited."""

    def _read(self, pick: int, start: int, samples: int) -> None:
        """Called after an excerpt is copied out of signal `pick`: memory-mapped signals let go of it."""


class SynthCorpus(Corpus):
    """The procedural house corpus: `n_tracks` tracks in memory, seeds counting up from `seed`."""

    def __init__(self, sample_rate: int, n_tracks: int = 48, track_seconds: float = 48.0, seed: int = 0,
                 progress: bool = True):
        self.sample_rate = sample_rate
        self.track_seconds = track_seconds
        self.next_seed = seed
        signals = []
        for _ in tqdm(range(n_tracks), desc="rendering house corpus", unit="track", disable=not progress):
            signals.append(self._render())
        super().__init__(signals, sample_rate, "synth")

    def _render(self) -> np.ndarray:
        seed, self.next_seed = self.next_seed, self.next_seed + 1
        return render_track(seed, self.track_seconds, self.sample_rate)

    def refresh(self) -> None:
        self.signals.popleft()
        self.signals.append(self._render())


def folder_corpus(folder: str | os.PathLike, sample_rate: int, min_seconds: float = 0.0) -> Corpus:
    """Every file decoded into memory: the way before the corpus cache (train/corpus.py), kept as
    the baseline `immersions bench train` measures the cache against."""
    signals = [audio for _, audio in load_folder(folder, sample_rate, min_seconds)]
    if not signals:
        raise ImmersionsError(f"no decodable audio files in {folder}: add audio files (WAV, FLAC, MP3, Ogg, Opus, M4A ...)")
    corpus = Corpus(signals, sample_rate, str(folder))
    log.info("loaded %d files, %.1f minutes of audio from %s", len(signals), corpus.seconds / 60, folder)
    return corpus


# Seeds at and above this number are kept out of training: the probe's tracks come from there.
HELD_OUT_SEED = 1_000_000
# Offset of the procedural tracks that activation statistics are measured on.
STATS_SEED_OFFSET = 90_000


class MixedCorpus(Corpus):
    """Several sources drawn with weights: each batch item picks its source by weight, then a
    track of that source (items of one source still come from different tracks)."""

    def __init__(self, sources: list[Corpus], weights: list[float]):
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per source")
        if any(w <= 0 for w in weights):
            raise ImmersionsError("source weights must be positive")
        self.sources = sources
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.sample_rate = sources[0].sample_rate
        self.name = " + ".join(f"{s.name} ({w:.0%})" for s, w in zip(sources, self.weights))

    @property
    def signals(self):  # type: ignore[override]
        return [signal for source in self.sources for signal in source.signals]

    @property
    def seconds(self) -> float:
        return sum(source.seconds for source in self.sources)

    def batch(self, batch_size: int, samples: int, rng: np.random.Generator) -> torch.Tensor:
        counts = rng.multinomial(batch_size, self.weights)
        return torch.cat([source.batch(int(n), samples, rng) for source, n in zip(self.sources, counts) if n])

    def pairs(self, n_pairs: int, samples: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        counts = rng.multinomial(n_pairs, self.weights)
        drawn = [source.pairs(int(n), samples, rng) for source, n in zip(self.sources, counts) if n]
        return torch.cat([a for a, _ in drawn]), torch.cat([b for _, b in drawn])

    def refresh(self) -> None:
        for source in self.sources:
            source.refresh()


def parse_source(text: str) -> tuple[str, float]:
    """'DIR', 'synth' or either with a weight after the last colon: 'music:3', 'synth:1'."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return text, 1.0
        if not weight > 0:
            raise ImmersionsError(f"--data {text}: the weight after ':' must be positive")
        return head, weight
    return text, 1.0
