"""Train the example waveform ear (ear.py beside this file) on the procedural corpus, then
measure its activation statistics and lay out its map, all into this folder:

    PYTHONPATH=app python docs/examples/waveform_ear/train.py --minutes 4

(from a checkout; the shipped weights came from exactly this, seed 0, on two CPU cores).
The loss is SimCLR's (Chen et al. 2020): in a batch of tracks, each track's two excerpts
must be told apart from every other track's by the cosine of their summaries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from immersions.layout.cache import model_layout
from immersions.model.checkpoint import save_weights
from immersions.model.stats import compute_stats, save_stats
from immersions.synth import render_track
from immersions.train.corpus import make_corpus
from immersions.train.dataset import STATS_SEED_OFFSET

HERE = Path(__file__).resolve().parent
TEMPERATURE = 0.1


def excerpts(tracks: list[np.ndarray], batch: int, samples: int, rng: np.random.Generator) -> torch.Tensor:
    """[2 * batch, samples]: two excerpts of each of `batch` different tracks (rows i, batch + i)."""
    picks = rng.choice(len(tracks), batch, replace=False)
    out = np.empty((2, batch, samples), np.float32)
    for row, pick in enumerate(picks):
        for view in range(2):
            start = rng.integers(0, len(tracks[pick]) - samples)
            out[view, row] = tracks[pick][start:start + samples]
    return torch.from_numpy(out.reshape(2 * batch, samples))


def simclr_loss(z: torch.Tensor) -> tuple[torch.Tensor, float]:
    n = z.shape[0] // 2
    z = F.normalize(z, dim=1)
    scores = z @ z.T / TEMPERATURE
    scores.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(scores, labels), float((scores.argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="excerpt length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE), help="the folder beside ear.py (default: this one)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    from ear import SAMPLE_RATE, make_ear  # the model file beside this script

    ear = make_ear().train()
    tracks = [render_track(args.seed * 1000 + i, 30.0, SAMPLE_RATE) for i in range(args.tracks)]
    optimizer = torch.optim.AdamW(ear.parameters(), lr=2e-3, weight_decay=1e-4)
    samples = int(args.seconds * SAMPLE_RATE)
    began, step = time.perf_counter(), 0
    while time.perf_counter() - began < 60 * args.minutes:
        audio = excerpts(tracks, args.batch, samples, rng)
        audio = audio * torch.empty(len(audio), 1).uniform_(0.3, 1.0)  # loudness is no clue to the track
        loss, accuracy = simclr_loss(ear.embed(audio))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 20 == 0:
            print(f"step {step}: loss {loss.item():.3f}, accuracy {accuracy:.2f}", flush=True)
    out = Path(args.out)
    save_weights(ear, out)
    ear = ear.eval()
    ear.folder = out
    corpus = make_corpus("synth", SAMPLE_RATE, seed=STATS_SEED_OFFSET, n_tracks=8, progress=False)
    stats = compute_stats(ear, corpus, clips=32)
    save_stats(stats, out)
    model_layout(ear, stats, folder=out)
    print(f"{step} steps in {args.minutes:g} min; wrote {out}")


if __name__ == "__main__":
    main()
