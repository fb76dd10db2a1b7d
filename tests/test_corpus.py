import json
import logging
import mmap
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import FORMATS, encode_format

import immersions.train.corpus as corpus_module
from immersions.audio.io import load_audio, write_wav
from immersions.errors import ImmersionsError
from immersions.train.corpus import (
    MANIFEST_FILE, SHARD_DIR, BatchStream, CachedCorpus, build_cache, cache_folder, cached_corpus, read_manifest,
)
from immersions.train.dataset import MixedCorpus, SynthCorpus, folder_corpus
from immersions.train.trainer import TrainConfig, batch_stream, training_corpus

SR = 16000


def make_library(folder, seconds=7.0):
    """Every format, plus an empty, a truncated, a corrupt and a too-short file."""
    for i, name in enumerate(FORMATS):
        encode_format(folder / ("video" if name == "mp4" else "music"), name, seconds=seconds, freq=220.0 * (i + 1))
    (folder / "empty.mp3").touch()
    whole = write_wav(folder / "whole.wav", np.zeros(SR, np.float32), SR)
    (folder / "truncated.wav").write_bytes(whole.read_bytes()[:60])
    whole.unlink()
    (folder / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    write_wav(folder / "short.wav", np.zeros(SR, np.float32), SR)
    (folder / "notes.txt").write_text("not audio: not listed at all")


def test_build_decodes_every_format_and_names_skipped_files(tmp_path, caplog):
    make_library(tmp_path / "lib")
    with caplog.at_level(logging.INFO):
        corpus = cached_corpus(tmp_path / "lib", SR, cache=tmp_path / "cache", min_seconds=6.0, progress=False)
    assert len(corpus.signals) == len(FORMATS)
    assert corpus.seconds == pytest.approx(7.0 * len(FORMATS), abs=0.5)
    doc = read_manifest(corpus.cache)
    files = doc["files"]
    assert {files[f"music/tone.{n}"]["codec"] for n in FORMATS if n != "mp4"} >= {"pcm_s16le", "flac", "opus", "aac"}
    assert files["video/tone.mp4"]["status"] == "ok"
    assert files["music/tone.flac"]["source_rate"] == 48000 and files["music/tone.wav"]["channels"] == 2
    reasons = {k: v["reason"] for k, v in files.items() if v["status"] == "skipped"}
    assert set(reasons) == {"empty.mp3", "truncated.wav", "corrupt.flac", "short.wav"}
    assert reasons["empty.mp3"].startswith("empty")
    assert reasons["truncated.wav"].startswith("truncated")
    assert "corrupt" in reasons["corrupt.flac"]
    assert reasons["short.wav"].startswith("too short")
    assert doc["summary"]["files"] == len(FORMATS) and doc["summary"]["skipped"] == 4
    assert doc["summary"]["hours"] == pytest.approx(7.0 * len(FORMATS) / 3600, rel=0.02)
    log = caplog.text
    assert "skipped 4 files" in log and "truncated.wav" in log and "corrupt.flac" in log
    assert f"{len(FORMATS)} files, 0.02 h used" in log


def test_shards_hold_the_decoded_audio(tmp_path):
    tone = np.sin(2 * np.pi * 330.0 * np.arange(8 * 44100) / 44100).astype(np.float32) * 0.5
    write_wav(tmp_path / "lib" / "a.wav", tone, 44100)
    corpus = cached_corpus(tmp_path / "lib", SR, cache=tmp_path / "cache", progress=False)
    direct = load_audio(tmp_path / "lib" / "a.wav", SR)
    shard = corpus.signals[0]
    assert is_memory_mapped(shard) and shard.dtype == np.int16 and len(shard) == len(direct)
    assert np.max(np.abs(shard / 32767.0 - direct)) < 1e-4
    batch = corpus.batch(3, SR, np.random.default_rng(0))
    assert batch.dtype == torch.float32 and batch.shape == (3, SR)
    assert 0.45 < batch.abs().max() < 0.55


def test_cache_is_keyed_by_folder_and_rate_and_can_be_moved(tmp_path, monkeypatch):
    monkeypatch.setenv("IMMERSIONS_CACHE", str(tmp_path / "user-cache"))
    a, b = tmp_path / "a" / "music", tmp_path / "b" / "music"
    assert cache_folder(a, SR) != cache_folder(b, SR) != cache_folder(a, 22050)
    assert cache_folder(a, SR).parent == tmp_path / "user-cache" / "corpus"
    assert cache_folder(a, SR, cache=tmp_path / "elsewhere").parent == tmp_path / "elsewhere"


def test_an_interrupted_build_keeps_what_it_finished_and_goes_on(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    for i in range(5):
        write_wav(lib / f"track{i}.wav", np.full(7 * SR, 0.1 * (i + 1), np.float32), SR)
    real, calls = corpus_module._decode_to_shard, []

    def interrupted_at_the_fourth(path, shard, *args):  # as Ctrl-C would, in the middle of a file
        calls.append(path.name)
        if len(calls) == 4:
            shard.with_suffix(".part").write_bytes(b"\x00" * 1000)
            raise KeyboardInterrupt
        return real(path, shard, *args)

    monkeypatch.setattr(corpus_module, "_decode_to_shard", interrupted_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        build_cache(lib, SR, cache=tmp_path / "cache", progress=False)
    target = cache_folder(lib, SR, tmp_path / "cache")
    assert sorted(read_manifest(target)["files"]) == ["track0.wav", "track1.wav", "track2.wav"]
    monkeypatch.setattr(corpus_module, "_decode_to_shard", real)

    report = build_cache(lib, SR, cache=tmp_path / "cache", progress=False)
    assert report.decoded == 2 and report.files == 5
    assert not list((target / SHARD_DIR).glob("*.part"))
    assert len(list((target / SHARD_DIR).glob("*.i16"))) == 5
    corpus = CachedCorpus(target, "lib")
    levels = sorted(round(float(s[100]) / 32767, 3) for s in corpus.signals)
    assert levels == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert build_cache(lib, SR, cache=tmp_path / "cache", progress=False).decoded == 0


@pytest.mark.slow
def test_a_killed_build_process_resumes(tmp_path):
    lib = tmp_path / "lib"
    for i in range(40):
        write_wav(lib / f"track{i:02d}.wav", np.full(30 * 22050, 0.01 * (i + 1), np.float32), 22050)
    cmd = [sys.executable, "-m", "immersions", "corpus", "build", str(lib), "--cache", str(tmp_path / "cache"),
           "--json"]
    target = cache_folder(lib, SR, tmp_path / "cache")
    build = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = 0
        while build.poll() is None and done < 2:
            done = len(read_manifest(target).get("files", {})) if (target / MANIFEST_FILE).is_file() else 0
            time.sleep(0.01)
        build.kill()  # SIGKILL: no clean-up runs
    finally:
        build.wait()
    finished = read_manifest(target)["files"]
    assert len(finished) >= 2
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["files"] == 40 and summary["decoded_now"] == 40 - len(finished)
    assert not list((target / SHARD_DIR).glob("*.part"))


def test_added_changed_and_removed_files(tmp_path):
    lib = tmp_path / "lib"
    for i in range(3):
        write_wav(lib / f"track{i}.wav", np.full(7 * SR, 0.1, np.float32), SR)
    first = build_cache(lib, SR, cache=tmp_path / "cache", progress=False)
    assert (first.decoded, first.files) == (3, 3)

    encode_format(lib, "opus", seconds=7.0, stem="added")
    write_wav(lib / "track1.wav", np.full(9 * SR, 0.3, np.float32), SR)
    os.utime(lib / "track1.wav", ns=(1, 1))  # a changed file: another size and modification time
    (lib / "track2.wav").unlink()
    report = build_cache(lib, SR, cache=tmp_path / "cache", progress=False)
    assert report.decoded == 2 and report.removed == 1 and report.files == 3
    files = read_manifest(report.cache)["files"]
    assert sorted(files) == ["added.opus", "track0.wav", "track1.wav"]
    assert files["track1.wav"]["seconds"] == pytest.approx(9.0)
    assert len(list((report.cache / SHARD_DIR).glob("*.i16"))) == 3  # the old shards are gone


def test_a_longer_excerpt_skips_files_decoded_for_a_shorter_one(tmp_path):
    lib = tmp_path / "lib"
    write_wav(lib / "five.wav", np.full(5 * SR, 0.1, np.float32), SR)
    write_wav(lib / "nine.wav", np.full(9 * SR, 0.1, np.float32), SR)
    assert build_cache(lib, SR, cache=tmp_path / "c", min_seconds=4.0, progress=False).files == 2
    longer = build_cache(lib, SR, cache=tmp_path / "c", min_seconds=6.0, progress=False)
    assert longer.files == 1 and longer.decoded == 0 and longer.skipped["five.wav"].startswith("too short")
    shorter = build_cache(lib, SR, cache=tmp_path / "c", min_seconds=4.0, progress=False)
    assert shorter.files == 2 and shorter.decoded == 1  # decoded again, since it now serves


def is_memory_mapped(array: np.ndarray) -> bool:
    base = array.base  # np.frombuffer over a mmap: a memoryview of it
    return isinstance(getattr(base, "obj", base), mmap.mmap) or isinstance(array, np.memmap)


def rss_kib(kind: str) -> int:
    """RssAnon: the process's own memory."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{kind}:"))


def mapped_kib(folder) -> int:
    """Resident KiB of every mapping of a file under `folder` (the shards), from /proc/self/smaps:
    the pages of the shards this process holds, apart from the noise of shared libraries."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5].startswith(str(folder))
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_excerpts_come_from_memory_maps_so_memory_stays_flat(tmp_path):
    """20 files of 30 s (18 MiB as int16, 37 MiB as float32). Cutting batches until every page
    has been read many times over grows neither the process's own memory nor its mapped file
    pages by more than a few MiB; a plain memory map read the same way holds all it has read,
    and the in-memory folder corpus holds the whole corpus."""
    if os.environ.get("IMMERSIONS_FRESH_PROCESS") != "1":
        # measured in a fresh interpreter: threads and arenas left by earlier tests in this
        # process allocate while the batches are cut, and RssAnon is the whole process's
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"{__file__}::test_excerpts_come_from_memory_maps_so_memory_stays_flat"],
                             env={**os.environ, "IMMERSIONS_FRESH_PROCESS": "1"}, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        return
    lib = tmp_path / "lib"
    for i in range(20):
        write_wav(lib / f"track{i:02d}.wav", np.full(30 * SR, 0.01 * (i + 1), np.float32), SR)
    build_cache(lib, SR, cache=tmp_path / "cache", progress=False)
    rng = np.random.default_rng(0)
    anon = rss_kib("RssAnon")
    corpus = cached_corpus(lib, SR, cache=tmp_path / "cache", progress=False)
    shards = corpus.cache / SHARD_DIR
    for _ in range(80):  # 80 x 8 x 2 s = 1280 s read from 600 s of audio
        batch = corpus.batch(8, 2 * SR, rng)
    assert all(is_memory_mapped(s) for s in corpus.signals) and batch.shape == (8, 2 * SR)
    assert rss_kib("RssAnon") - anon < 6 * 1024
    assert mapped_kib(shards) < 1024

    plain = [np.memmap(path, dtype="<i2", mode="r") for path in sorted(shards.glob("*.i16"))]
    assert sum(int(s[::2048].sum()) for s in plain) != 0  # touch every page, as a long run would
    assert mapped_kib(shards) > 15 * 1024  # the measure can tell
    del plain

    anon = rss_kib("RssAnon")
    in_memory = folder_corpus(lib, SR)
    assert rss_kib("RssAnon") - anon > 30 * 1024
    del in_memory


def test_ranks_draw_different_excerpts_and_a_seed_repeats_them(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    for i in range(6):
        write_wav(lib / f"track{i}.wav", np.random.default_rng(i).uniform(-0.5, 0.5, 10 * SR).astype(np.float32), SR)
    cfg = TrainConfig(preset="micro", data=[str(lib)], cache=str(tmp_path / "cache"), batch_size=4,
                      progress=False)
    corpora = [training_corpus(cfg, SR, rank=r, min_seconds=4.0) for r in (0, 1, 0)]
    streams = [batch_stream(cfg, c, 4 * SR, rank=r) for c, r in zip(corpora, (0, 1, 0))]
    try:
        drawn = [[next(s) for _ in range(3)] for s in streams]
    finally:
        for s in streams:
            s.close()
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], drawn[2]))  # the same seed, the same excerpts
    for a, b in zip(drawn[0], drawn[1]):
        assert not any(torch.equal(x, y) for x in a for y in b)  # no excerpt shared between ranks


def test_the_stream_cut_ahead_is_the_plain_loop_order():
    """Batches and procedural refreshes on the thread come in the order the serial loop made them."""
    plain = SynthCorpus(SR, n_tracks=2, track_seconds=4, seed=3, progress=False)
    ahead = SynthCorpus(SR, n_tracks=2, track_seconds=4, seed=3, progress=False)
    rng = np.random.default_rng(7)
    expected = []
    for step in range(7):
        expected.append(plain.batch(2, SR, rng))
        if step % 3 == 2:
            plain.refresh()
    with BatchStream(ahead, 2, SR, np.random.default_rng(7), refresh_every=3) as stream:
        got = [next(stream) for _ in range(7)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_a_failing_source_raises_in_the_training_thread():
    class Broken(SynthCorpus):
        def batch(self, *args):
            raise ImmersionsError("the disk went away")

    with BatchStream(Broken(SR, n_tracks=1, track_seconds=1, progress=False), 2, SR, np.random.default_rng(0)) as s:
        with pytest.raises(ImmersionsError, match="disk went away"):
            next(s)


def test_sources_mix_with_weights(tmp_path):
    lib = tmp_path / "lib"
    for i in range(3):
        write_wav(lib / f"track{i}.wav", np.full(7 * SR, 0.25, np.float32), SR)
    cfg = TrainConfig(data=[f"{lib}:3", "synth:1"], cache=str(tmp_path / "cache"), synth_tracks=2, synth_seconds=7,
                      progress=False)
    mixed = training_corpus(cfg, SR, min_seconds=6.0)
    assert isinstance(mixed, MixedCorpus) and isinstance(mixed.sources[0], CachedCorpus)
    batch = mixed.batch(400, 1000, np.random.default_rng(0))
    from_folder = int(torch.isclose(batch, torch.tensor(0.25), atol=1e-4).all(dim=1).sum())
    assert 260 < from_folder < 340  # three parts in four


@pytest.mark.slow
def test_cli_build_and_info(tmp_path):
    make_library(tmp_path / "lib", seconds=6.5)
    base = [sys.executable, "-m", "immersions", "corpus"]
    missing = subprocess.run(base + ["info", str(tmp_path / "lib"), "--cache", str(tmp_path / "c")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "immersions corpus build" in missing.stderr
    typo = subprocess.run(base + ["info", str(tmp_path / "lbi"), "--cache", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120)
    (line,) = typo.stderr.strip().splitlines()
    assert typo.returncode == 2 and f"no folder {tmp_path / 'lbi'}" in line and "run 'immersions corpus build" not in line
    built = subprocess.run(base + ["build", str(tmp_path / "lib"), "--cache", str(tmp_path / "c"), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    info = subprocess.run(base + ["info", str(tmp_path / "lib"), "--cache", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0
    assert f"{len(FORMATS)} files" in info.stdout and "skipped truncated.wav: truncated" in info.stdout
    assert json.loads(built.stdout)["files"] == len(FORMATS)
