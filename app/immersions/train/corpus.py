"""The corpus cache: a folder of music decoded once to int16 shards at the model's rate.

    immersions corpus build ~/music --rate 16000
    immersions train --data ~/music:3 --data synth:1 ...   (builds or updates the cache first)

Each audio file becomes one shard (raw little-endian int16, mono) under the cache folder,
named by a hash of its path, size and modification time; `manifest.json` says per file
what it held (duration, source rate, channels, codec) and whether it is used or skipped
and why. The build is resumable (a shard is renamed into place only when whole, and the
manifest is rewritten after every file) and incremental (unchanged files are kept,
changed ones decoded again, removed ones dropped). Training cuts excerpts from memory
maps of the shards, so only the excerpts it reads are ever in memory.

`make_corpus` picks a training source by name: the procedural corpus, or a folder through
this cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from immersions.audio.io import audio_files, decode_chunks, probe_audio, too_short
from immersions.errors import ImmersionsError
from immersions.paths import cache_dir
from immersions.train.dataset import HELD_OUT_SEED, Corpus, SynthCorpus

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
SHARD_DIR = "shards"
PCM_SCALE = 32767.0  # as audio.io.write_wav: full scale maps to +-32767, never wraps
MANIFEST_VERSION = 1


@dataclass
class FileEntry:
    """One audio file of the folder as the cache knows it; `key` is (size, mtime) when decoded."""

    size: int
    mtime_ns: int
    status: str  # "ok" or "skipped"
    reason: str = ""
    seconds: float = 0.0  # at the cache's rate, as decoded
    source_rate: int = 0
    channels: int = 0
    codec: str = ""
    shard: str = ""
    samples: int = 0
    min_seconds: float = 0.0  # the shortest file this entry was judged against
    decode_s: float = 0.0  # how long decoding took (for `immersions bench corpus`)


def cache_folder(folder: str | os.PathLike, sample_rate: int, cache: str | os.PathLike | None = None) -> Path:
    """Where the shards of `folder` at `sample_rate` live: under `cache` (or the user's cache
    folder), keyed by the folder's absolute path and the rate."""
    folder = Path(folder).resolve()
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    root = Path(cache) if cache else cache_dir() / "corpus"
    return root / f"{folder.name or 'root'}-{digest}-{sample_rate}hz"


def _shard_name(relative: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(f"{relative}\0{size}\0{mtime_ns}".encode()).hexdigest()[:20] + ".i16"


def read_manifest(cache: Path) -> dict:
    path = cache / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable corpus manifest %s (%s); decoding again", path, err)
        return {}


def _write_manifest(cache: Path, doc: dict) -> None:
    tmp = cache / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, cache / MANIFEST_FILE)  # atomic: a killed build leaves the old or the new one


def _decode_to_shard(path: Path, shard: Path, sample_rate: int, min_seconds: float) -> dict:
    """Decode one file into `shard` (int16 at `sample_rate`); the facts for its manifest entry.
    Raises BadAudioFile (and leaves no shard) when the file cannot serve."""
    info = probe_audio(path)
    partial = shard.with_suffix(".part")
    samples = 0
    try:
        with open(partial, "wb") as out:
            for chunk in decode_chunks(path, sample_rate, info):
                out.write(np.round(np.clip(chunk, -1.0, 1.0) * PCM_SCALE).astype("<i2").tobytes())
                samples += len(chunk)
        if samples < min_seconds * sample_rate:
            raise too_short(path, samples / sample_rate, min_seconds)
        os.replace(partial, shard)
    finally:
        partial.unlink(missing_ok=True)
    return {"seconds": samples / sample_rate, "source_rate": info.source_rate, "channels": info.channels,
            "codec": info.codec, "samples": samples}


@dataclass
class BuildReport:
    files: int  # used
    seconds: float  # used
    skipped: dict[str, str]  # relative path -> reason
    decoded: int  # decoded in this build (the rest came from the cache)
    removed: int
    cache: Path

    def summary(self, folder) -> str:
        text = (f"corpus {folder}: {self.files} files, {self.seconds / 3600:.2f} h used "
                f"({self.decoded} decoded now, {self.removed} dropped), {len(self.skipped)} skipped")
        return text


def _lock(cache: Path):
    """An exclusive lock on the cache while it is built: DDP ranks and parallel runs wait in turn."""
    handle = open(cache / ".lock", "w")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX)
    except ImportError:  # Windows: no flock; one build at a time is then the user's to keep
        pass
    return handle


def build_cache(folder: str | os.PathLike, sample_rate: int, cache: str | os.PathLike | None = None,
                min_seconds: float = 0.0, progress: bool = True) -> BuildReport:
    """Bring the cache of `folder` up to date and report what it holds."""
    folder = Path(folder)
    files = audio_files(folder)
    target = cache_folder(folder, sample_rate, cache)
    (target / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    with _lock(target):
        return _build_locked(folder, files, target, sample_rate, min_seconds, progress)


def _build_locked(folder: Path, files: list[Path], target: Path, sample_rate: int, min_seconds: float,
                  progress: bool) -> BuildReport:
    shards = target / SHARD_DIR
    for leftover in shards.glob("*.part"):  # a build killed in the middle of a file
        leftover.unlink()
    doc = read_manifest(target)
    if doc.get("version") != MANIFEST_VERSION or doc.get("sample_rate") != sample_rate:
        doc = {}
    old: dict[str, dict] = doc.get("files", {})
    entries: dict[str, FileEntry] = {}
    todo: list[tuple[str, Path, os.stat_result]] = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        stat = path.stat()
        prior = old.get(relative)
        if prior and prior["size"] == stat.st_size and prior["mtime_ns"] == stat.st_mtime_ns:
            entry = FileEntry(**prior)
            kept = (entry.status == "ok" and (shards / entry.shard).is_file()) or (
                entry.status == "skipped" and not (entry.reason.startswith("too short")
                                                   and entry.min_seconds > min_seconds))
            if kept and entry.status == "ok" and entry.seconds < min_seconds:
                # decoded for a shorter excerpt before: now one excerpt is longer than the file
                entry = FileEntry(size=entry.size, mtime_ns=entry.mtime_ns, status="skipped",
                                  reason=too_short(path, entry.seconds, min_seconds).reason, seconds=entry.seconds,
                                  source_rate=entry.source_rate, channels=entry.channels, codec=entry.codec,
                                  min_seconds=min_seconds)
            if kept:
                entries[relative] = entry
                continue
        todo.append((relative, path, stat))
    # shards of removed or changed files go; those about to be decoded again are rewritten anyway
    wanted = {e.shard for e in entries.values() if e.shard}
    for shard in shards.glob("*.i16"):
        if shard.name not in wanted:
            shard.unlink()
    removed_files = len(set(old) - {p.relative_to(folder).as_posix() for p in files})

    doc = {"version": MANIFEST_VERSION, "folder": str(folder.resolve()), "sample_rate": sample_rate,
           "files": {k: asdict(v) for k, v in entries.items()}}

    def save() -> None:
        used = [e for e in entries.values() if e.status == "ok"]
        doc["files"] = {k: asdict(v) for k, v in sorted(entries.items())}
        doc["summary"] = {"files": len(used), "hours": sum(e.seconds for e in used) / 3600,
                          "skipped": sum(e.status != "ok" for e in entries.values())}
        _write_manifest(target, doc)

    save()
    if todo:
        log.info("corpus %s: decoding %d of %d files into %s", folder, len(todo), len(files), target)
    bar = tqdm(total=sum(s.st_size for _, _, s in todo), unit="B", unit_scale=True, unit_divisor=1024,
               desc="decoding corpus", disable=not progress or not todo)
    decoded_seconds = 0.0
    try:
        for done, (relative, path, stat) in enumerate(todo):
            shard_name = _shard_name(relative, stat.st_size, stat.st_mtime_ns)
            entry = FileEntry(size=stat.st_size, mtime_ns=stat.st_mtime_ns, status="ok", min_seconds=min_seconds)
            tick = time.perf_counter()
            try:
                facts = _decode_to_shard(path, shards / shard_name, sample_rate, min_seconds)
                entry.shard = shard_name
                for name, value in facts.items():
                    setattr(entry, name, value)
                decoded_seconds += entry.seconds
            except ImmersionsError as err:
                entry.status = "skipped"
                entry.reason = getattr(err, "reason", str(err))
                log.warning("skipping %s", err)
            entry.decode_s = time.perf_counter() - tick
            entries[relative] = entry
            save()
            bar.update(stat.st_size)
            bar.set_postfix(files=f"{done + 1}/{len(todo)}", hours=f"{decoded_seconds / 3600:.2f}")
    finally:
        bar.close()
    used = [e for e in entries.values() if e.status == "ok"]
    return BuildReport(files=len(used), seconds=sum(e.seconds for e in used),
                       skipped={k: e.reason for k, e in sorted(entries.items()) if e.status != "ok"},
                       decoded=len(todo), removed=removed_files, cache=target)


def map_shard(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """A read-only memory map of a shard and the int16 array over it (no copy)."""
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mapping, np.frombuffer(mapping, dtype="<i2")


class CachedCorpus(Corpus):
    """A folder's cached shards, memory-mapped; `batch` copies only the excerpts it cuts.

    After each excerpt is copied, its pages are handed back (MADV_DONTNEED): they stay in
    the kernel's page cache, but leave this process's resident memory, which therefore does
    not grow with the corpus however long training runs."""

    scale = 1.0 / PCM_SCALE

    def __init__(self, cache: Path, name: str):
        doc = read_manifest(cache)
        entries = {k: FileEntry(**v) for k, v in doc.get("files", {}).items()}
        self.files = [k for k, e in entries.items() if e.status == "ok" and e.samples > 0]
        mapped = [map_shard(cache / SHARD_DIR / entries[k].shard) for k in self.files]
        self.mappings = [mapping for mapping, _ in mapped]
        super().__init__([shard for _, shard in mapped], int(doc["sample_rate"]), name)
        self.cache = cache

    def group_by_subfolder(self) -> None:
        """Label every file with the first subfolder of the folder it is in (a package of
        `scripts/fetch-music.sh`; files at the top form one group): batches then come from one
        subfolder each (Corpus.group)."""
        self.group([Path(name).parts[0] if len(Path(name).parts) > 1 else "" for name in self.files])

    def _read(self, pick: int, start: int, samples: int) -> None:
        if not _CAN_RELEASE:
            return
        mapping = self.mappings[pick]
        if samples >= len(self.signals[pick]):  # a short shard was looped: all of it was read
            first, end = 0, len(mapping)
        else:
            # a page fault maps its neighbours too (Linux's fault-around, 64 KiB by default): let
            # go of a margin beyond the excerpt on both sides
            first = max(0, (2 * start - RELEASE_MARGIN) // mmap.PAGESIZE * mmap.PAGESIZE)
            end = min(len(mapping), 2 * (start + samples) + RELEASE_MARGIN)
        mapping.madvise(mmap.MADV_DONTNEED, first, end - first)


RELEASE_MARGIN = 128 * 1024
# Linux and macOS; elsewhere the pages a run has read stay resident until the system needs them
_CAN_RELEASE = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")


def cached_corpus(folder: str | os.PathLike, sample_rate: int, cache: str | os.PathLike | None = None,
                  min_seconds: float = 0.0, progress: bool = True) -> CachedCorpus:
    """Build (or update) the cache of `folder` and open it; logs how many files and hours it
    uses and which files it skipped."""
    report = build_cache(folder, sample_rate, cache, min_seconds, progress)
    if report.skipped:
        log.warning("corpus %s: skipped %d files: %s", folder, len(report.skipped),
                    "; ".join(f"{k} ({v})" for k, v in report.skipped.items()))
    if not report.files:
        raise ImmersionsError(f"no decodable audio files in {folder}: add audio files (WAV, FLAC, MP3, Ogg, "
                              f"Opus, M4A ...) of at least {min_seconds:g} s")
    log.info(report.summary(folder))
    return CachedCorpus(report.cache, str(folder))


class BatchStream:
    """Training batches cut ahead on a thread, in exactly the order a plain loop would cut them
    (the same random generator, the same refreshes between the same steps), so a seeded run
    is the same with or without it."""

    def __init__(self, corpus: Corpus, batch_size: int, samples: int,
                 rng: np.random.Generator | Callable[[int], np.random.Generator],
                 start_step: int = 0, refresh_every: int = 0, depth: int = 2, pairs: bool = False,
                 transform: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None):
        """`rng`: one generator for the whole stream, or a function of the step giving each
        step's own (so that the stream from any step on does not depend on the steps before).
        `pairs`: each batch is two excerpts of each of batch_size / 2 tracks (Corpus.pairs),
        the first excerpts, then the second ones in the same track order. `transform`: applied
        to every batch after it is cut, with the same generator (so a resumed run is the same)."""
        if pairs and batch_size % 2:
            raise ValueError("a batch of pairs needs an even batch size")
        self.pairs = pairs
        self.transform = transform
        self.corpus = corpus
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._args = (batch_size, samples, rng, start_step, refresh_every)
        self.waited = 0.0  # seconds the training thread spent waiting for a batch
        self._thread = threading.Thread(target=self._run, name="batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        batch_size, samples, rng, step, refresh_every = self._args
        try:
            while not self._stop.is_set():
                generator = rng(step) if callable(rng) else rng
                if self.pairs:
                    batch = torch.cat(self.corpus.pairs(batch_size // 2, samples, generator))
                else:
                    batch = self.corpus.batch(batch_size, samples, generator)
                if self.transform is not None:
                    batch = self.transform(batch, generator)
                if refresh_every and step % refresh_every == refresh_every - 1:
                    self.corpus.refresh()
                step += 1
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # handed to the training thread, which raises it
            self._queue.put(err)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        tick = time.perf_counter()
        item = self._queue.get()
        self.waited += time.perf_counter() - tick
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_corpus(data: str, sample_rate: int, seed: int = 0, progress: bool = True, cache: str | None = None,
                min_seconds: float = 0.0, **synth_options) -> Corpus:
    """'synth', or a folder of audio files read through the corpus cache (built or updated first;
    `cache` overrides where it lives; files shorter than `min_seconds` are skipped)."""
    if data == "synth":
        if seed >= HELD_OUT_SEED // 2:
            raise ImmersionsError(f"training seed {seed} is too close to the probe's held-out seeds; use one below {HELD_OUT_SEED // 2}")
        return SynthCorpus(sample_rate, seed=seed, progress=progress, **synth_options)
    return cached_corpus(data, sample_rate, cache=cache, min_seconds=min_seconds, progress=progress)
