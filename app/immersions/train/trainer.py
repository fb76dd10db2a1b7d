"""CPC training: one script for one CPU, one GPU, or many under torchrun (DDP).

    immersions train --preset tiny --data synth --steps 2000 --out runs/tiny
    torchrun --nproc_per_node 4 -m immersions train --preset seed --data DIR --out runs/seed

Adam with linear warm-up then cosine decay, gradient clipping, and the model really in
training mode (batch norm and dropout act; the original switched to eval by mistake).
Rank 0 writes a CSV log, a PNG plot, the checkpoint (safetensors + JSON) and, at the
end, the activation statistics.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from immersions.errors import ImmersionsError
from immersions.model.checkpoint import (
    TRAIN_META_FILE, load_model, load_train_state, save_model, save_train_state,
)
from immersions.model.config import preset
from immersions.model.cpc import CPC
from immersions.model.precision import network_autocast, resolve_precision
from immersions.train.corpus import BatchStream, make_corpus
from immersions.train.colour import recolour, two_views
from immersions.train.track import TrackHead, pair_groups
from immersions.train.dataset import STATS_SEED_OFFSET, Corpus, MixedCorpus, parse_source

log = logging.getLogger(__name__)

LOG_FILE = "train_log.csv"
PLOT_FILE = "train_plot.png"


@dataclass
class TrainConfig:
    # None: tiny for a new run, the --init model's own preset for a fine-tune. A preset with the
    # same shapes as the --init model (tiny -> full) starts that preset from its weights.
    preset: str | None = None
    # one source or several: "synth", a folder, or either with a weight ("music:3"); see dataset.parse_source
    data: str | list[str] = "synth"
    cache: str | None = None  # where folders are decoded to (None: the user's cache folder); see train/corpus.py
    init: str | None = None  # start from this model's weights (a new run: fresh optimizer and schedule)
    steps: int = 2000
    out: str = "runs/tiny"
    batch_size: int = 16  # per process
    lr: float = 3e-4
    warmup: int = 1000  # capped at a tenth of the run
    grad_clip: float = 0.5
    weight_decay: float = 0.0
    negatives: str = "batch"  # "batch", "steps" (across steps) or "times": see CPC.cpc_loss
    skip_steps: int | None = None  # future steps left out of the loss before the predicted ones (None: the preset's)
    seed: int = 0
    resume: bool = False
    save_every: int = 250
    refresh_every: int = 10  # steps between fresh procedural tracks
    synth_tracks: int = 48
    # Length of each procedural track. Short tracks rarely reach the breakdown and the drop:
    # of 48-s tracks, breakdowns are 15 % and drops 7 %; of 192-s tracks, 24 % and 26 %.
    synth_seconds: float = 48.0
    stats_clips: int = 64
    device: str = "auto"
    progress: bool = True
    recompute: int = 0  # encoder blocks that recompute their activations in backward (CPC.recompute_blocks)
    precision: str = "auto"  # the network in bf16 where the hardware has it (model/precision.py), else fp32
    minutes: float | None = None  # a time budget: the run ends (checkpoint, statistics) at the first step past it
    # weight of the track objective beside CPC (train/track.py): batches become pairs of excerpts of one track
    track_loss: float = 0.0
    # every excerpt heard through two colourings: the context of one predicts the other's
    # encodings (train/colour.py), so no prediction leans on a file's level, balance or band
    views: bool = False
    # every batch's excerpts of a folder come from one of its subfolders (one package): the
    # negatives are the same package's other tracks (Corpus.group)
    within_folder: bool = False


def learning_rate(step: int, cfg: TrainConfig) -> float:
    warmup = max(1, min(cfg.warmup, cfg.steps // 10))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _pick_device(name: str, rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _sources(cfg: TrainConfig) -> list[tuple[str, float]]:
    return [parse_source(text) for text in ([cfg.data] if isinstance(cfg.data, str) else cfg.data)]


def _corpus(sources: list[tuple[str, float]], make) -> Corpus:
    corpora = [make(data) for data, _ in sources]
    return corpora[0] if len(corpora) == 1 else MixedCorpus(corpora, [weight for _, weight in sources])


def training_corpus(cfg: TrainConfig, sample_rate: int, rank: int = 0, step: int = 0,
                    min_seconds: float = 0.0) -> Corpus:
    """The corpus as training finds it at `step`: a procedural corpus has by then dropped its
    first step // refresh_every tracks for fresh ones, so a resumed run goes on with the tracks
    the uninterrupted run would hear next instead of hearing its first ones again. Folders come
    through the corpus cache; files shorter than `min_seconds` (one excerpt) are skipped."""
    refreshed = step // cfg.refresh_every if cfg.refresh_every else 0

    def make(data: str) -> Corpus:
        if data != "synth":
            corpus = make_corpus(data, sample_rate, progress=cfg.progress and rank == 0, cache=cfg.cache,
                                 min_seconds=min_seconds)
            if cfg.within_folder:
                corpus.group_by_subfolder()
            return corpus
        return make_corpus(data, sample_rate, seed=cfg.seed * 100_000 + rank * 10_000 + refreshed,
                           progress=cfg.progress and rank == 0, n_tracks=cfg.synth_tracks,
                           track_seconds=cfg.synth_seconds)

    return _corpus(_sources(cfg), make)


def stats_corpus(cfg: TrainConfig, sample_rate: int, min_seconds: float = 0.0) -> Corpus:
    """Where the activation statistics are measured: the training sources, procedural tracks from
    seeds that training never used."""
    return _corpus(_sources(cfg), lambda data: make_corpus(
        data, sample_rate, seed=cfg.seed * 100_000 + STATS_SEED_OFFSET, progress=False,
        **({"n_tracks": 8} if data == "synth" else {"cache": cfg.cache, "min_seconds": min_seconds})))


def batch_stream(cfg: TrainConfig, corpus: Corpus, item_samples: int, rank: int = 0, step: int = 0) -> BatchStream:
    """The batches a rank trains on from `step`, cut ahead on a thread. Each rank draws its own
    stream of excerpts, and each step's batch is drawn from a generator seeded by (seed, rank,
    step), so a run resumed at any step hears exactly the batches the uninterrupted run would.
    With the track objective, a batch is two excerpts of each of half as many tracks, each
    excerpt coloured on its own (colour.recolour). With two views, a batch is every excerpt
    through one colouring, then through another (colour.two_views)."""
    pairs = cfg.track_loss > 0
    if cfg.views:
        transform = lambda batch, rng: two_views(batch, corpus.sample_rate, rng)  # noqa: E731
    elif pairs:
        transform = lambda batch, rng: recolour(batch, corpus.sample_rate, rng)  # noqa: E731
    else:
        transform = None
    return BatchStream(corpus, cfg.batch_size, item_samples, lambda s: np.random.default_rng([cfg.seed, rank, s]),
                       step, cfg.refresh_every, pairs=pairs, transform=transform)


def view_loss(model: CPC, z: torch.Tensor, c: torch.Tensor, negatives: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC across the two views of a batch (colour.two_views): each view's context predicts
    the other view's encodings, with the other view's excerpts as negatives; the mean of both
    directions. (loss, accuracy per step), as CPC.cpc_loss."""
    half = len(z) // 2
    one = model.cpc_loss(z[half:], c[:half], negatives=negatives)
    other = model.cpc_loss(z[:half], c[half:], negatives=negatives)
    return (one[0] + other[0]) / 2, (one[1] + other[1]) / 2


def transplant(model: CPC, preset_name: str) -> CPC:
    """A new model of preset `preset_name` holding `model`'s weights: for presets of the same shapes
    and another front end (tiny's weights starting the full band). Refused in one line otherwise."""
    target = CPC(preset(preset_name))
    ours, theirs = target.state_dict(), model.state_dict()
    misfit = sorted(k for k in set(ours) | set(theirs)
                    if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape)
    if misfit:
        raise ImmersionsError(f"--init's {model.cfg.preset} weights do not fit preset {preset_name} "
                              f"({len(misfit)} tensors differ, e.g. {misfit[0]}); leave out --preset to fine-tune it as it is")
    target.load_state_dict(theirs)
    return target


def train(cfg: TrainConfig) -> Path:
    if cfg.views and cfg.track_loss > 0:
        raise ValueError("two views and the track objective do not go together")
    rank, world = _distributed()
    device = _pick_device(cfg.device, rank)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank

    start_step = 0
    resumed = cfg.resume and (out / TRAIN_META_FILE).is_file()
    if resumed:
        model = load_model(out, device)
        model.train()
        if cfg.skip_steps is not None and cfg.skip_steps != model.cfg.skip_steps:
            log.warning("--skip-steps %d ignored: the model in %s was made with %d", cfg.skip_steps, out,
                        model.cfg.skip_steps)
    elif cfg.init:
        if cfg.resume:
            log.warning("nothing to resume in %s; starting from %s", out, cfg.init)
        model = load_model(cfg.init, device)
        if cfg.preset and cfg.preset != model.cfg.preset:
            model = transplant(model, cfg.preset).to(device)
            log.info("starting preset %s from the weights of %s", cfg.preset, cfg.init)
        model.train()
    else:
        if cfg.resume:
            log.warning("nothing to resume in %s; starting afresh", out)
        model = CPC(preset(cfg.preset or "tiny")).to(device)
    if not resumed and cfg.skip_steps is not None and cfg.skip_steps != model.cfg.skip_steps:
        # a new model or a fine-tune: only the loss's horizon moves (a fine-tune's predictor relearns it)
        model.cfg = replace(model.cfg, skip_steps=cfg.skip_steps)
    mcfg = model.cfg
    model.recompute_blocks = cfg.recompute
    head = TrackHead(mcfg).to(device) if cfg.track_loss > 0 else None
    modules = {"track_head": head} if head is not None else {}
    trained = [*model.parameters(), *(head.parameters() if head is not None else ())]
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resumed:
        state = load_train_state(out, optimizer, modules)
        start_step = int(state["step"])
        for option, flag in (("views", "--views"), ("within_folder", "--within-folder")):
            if bool(state.get(option, False)) != getattr(cfg, option):
                how = "with" if state.get(option) else "without"
                raise ImmersionsError(f"{out} was trained {how} {flag}; resume it {how}, or start a new --out")
        if "torch_rng" in state:  # dropout masks and input noise go on as they would have
            torch.set_rng_state(state["torch_rng"])
        log.info("resuming %s at step %d", out, start_step)
    if start_step >= cfg.steps:
        raise ImmersionsError(f"{out} is already trained for {start_step} steps; ask for more with --steps")

    precision = resolve_precision(cfg.precision, device)
    if rank == 0 and precision != "fp32":
        log.info("training the network in %s (--precision %s)", precision, cfg.precision)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # the track head's gradients are averaged across processes as the model's are
    head_net = torch.nn.parallel.DistributedDataParallel(head) if world > 1 and head is not None else head
    sr = mcfg.scalogram.sample_rate
    item_samples = int(round(mcfg.item_seconds * sr))
    corpus = training_corpus(cfg, sr, rank, start_step, min_seconds=mcfg.item_seconds)
    batches = batch_stream(cfg, corpus, item_samples, rank, start_step)

    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        new_log = start_step == 0 or not (out / LOG_FILE).is_file()
        if not new_log:
            _truncate_log(out / LOG_FILE, start_step)  # steps a stopped run made after its checkpoint
        log_file = open(out / LOG_FILE, "w" if new_log else "a", newline="")
        writer = csv.writer(log_file)
        if new_log:
            writer.writerow(["step", "loss", "lr", "accuracy"]
                            + [f"acc_{k + 1 + mcfg.skip_steps}" for k in range(mcfg.prediction_steps)]
                            + (["track_loss", "track_accuracy"] if head is not None else [])
                            + ["items_per_s", "seconds"])
    meta = {"train": asdict(cfg), "world_size": world}
    started = time.perf_counter()
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="training",
               unit="step", disable=not (cfg.progress and rank == 0))
    model.train()
    stop = _StopRequest(enabled=world == 1)
    stopped_at, finished_at = None, cfg.steps
    try:
        for step in bar:
            tick = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)
            audio = next(batches).to(device)
            with network_autocast(precision, device):
                z, c = net(audio)
            groups = pair_groups(len(audio), device) if head is not None else None
            if cfg.views:  # scores in fp32 (no pairs: --views and --track-loss are refused together)
                loss, accuracy = view_loss(model, z.float(), c.float(), cfg.negatives)
            else:
                loss, accuracy = model.cpc_loss(z.float(), c.float(), negatives=cfg.negatives, groups=groups)
            track = []
            if head is not None:
                track_loss, track_accuracy = head_net(z.float(), c.float())
                loss = loss + cfg.track_loss * track_loss
                track = [f"{track_loss.item():.5f}", f"{track_accuracy.item():.4f}"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
            optimizer.step()
            if not math.isfinite(loss.item()):
                raise ImmersionsError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
            out_of_time = cfg.minutes is not None and time.perf_counter() - started >= 60.0 * cfg.minutes
            if cfg.minutes is not None and world > 1:  # every rank ends at the same step
                flag = torch.tensor([float(out_of_time)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if rank == 0:
                per_step = accuracy.detach().cpu().tolist()
                items_per_s = cfg.batch_size * world / (time.perf_counter() - tick)
                writer.writerow([step + 1, f"{loss.item():.5f}", f"{learning_rate(step, cfg):.3e}",
                                 f"{float(np.mean(per_step)):.4f}"] + [f"{a:.4f}" for a in per_step] + track
                                + [f"{items_per_s:.2f}", f"{time.perf_counter() - started:.1f}"])
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{np.mean(per_step):.3f}")
                last = step + 1 == cfg.steps or out_of_time
                if last or (step + 1) % cfg.save_every == 0 or stop.requested:
                    log_file.flush()
                    save_model(model, out, {**meta, "step": step + 1})
                    save_train_state(out, optimizer, {"step": step + 1, "views": cfg.views,
                                                      "within_folder": cfg.within_folder}, torch_rng=torch.get_rng_state(),
                                     modules=modules)
                    plot_training(out / LOG_FILE, out / PLOT_FILE)
            if out_of_time:
                log.info("--minutes %g spent at step %d: the run ends here", cfg.minutes, step + 1)
                finished_at = step + 1
                break
            if stop.requested and not step + 1 == cfg.steps:
                stopped_at = step + 1
                break
    finally:
        stop.close()
        batches.close()
    if stopped_at is not None:
        if rank == 0:
            log_file.close()
            log.info("stopped at step %d with a checkpoint in %s: the same command with --resume goes on from there",
                     stopped_at, out)
        return out
    if rank == 0:
        log_file.close()
        from immersions.model.stats import compute_stats, save_stats

        model.eval()
        save_stats(compute_stats(model, stats_corpus(cfg, sr, mcfg.item_seconds), clips=cfg.stats_clips, device=device), out)
        log.info("trained %s for %d steps in %.0f s -> %s", mcfg.preset, finished_at,
                 time.perf_counter() - started, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log's header and its rows up to `step`: a run killed between checkpoints logged
    steps that its resumption makes again."""
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if line.strip() and int(line.split(",", 1)[0]) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM during training: finish the step, save a checkpoint and stop,
    so that a long run can be stopped at any moment and resumed exactly. A second signal stops
    at once. Only in a single process's main thread (under torchrun the launcher handles them)."""

    def __init__(self, enabled: bool = True):
        self.requested = False
        self._previous: dict[int, object] = {}
        if not enabled or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # the second time: at once
            self.close()
            raise KeyboardInterrupt
        self.requested = True
        log.info("stopping after this step (a checkpoint is saved); press Ctrl-C again to stop at once")

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def plot_training(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    acc_cols = [c for c in rows[0] if c.startswith("acc_")]

    width = max(1, len(rows) // 50)

    def smooth(values: np.ndarray) -> np.ndarray:
        """Trailing moving average, aligned with steps[width - 1:]."""
        return np.convolve(values, np.ones(width) / width, mode="valid")

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    x = steps[width - 1:]
    ax_loss.plot(x, smooth(np.array([float(r["loss"]) for r in rows])))
    ax_loss.set(xlabel="step", ylabel="InfoNCE loss",
                title="CPC loss + weight x track loss" if "track_loss" in rows[0] else "CPC loss")
    for col in acc_cols[:: max(1, len(acc_cols) // 4)] + [acc_cols[-1]]:
        ax_acc.plot(x, smooth(np.array([float(r[col]) for r in rows])), label=f"step {col[4:]}")
    if "track_accuracy" in rows[0]:  # the track objective (--track-loss): the partner picked out of the batch
        ax_acc.plot(x, smooth(np.array([float(r["track_accuracy"]) for r in rows])), "k--", label="track")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="prediction accuracy per future step", ylim=(0, 1))
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
