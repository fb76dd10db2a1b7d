"""A second training objective beside CPC: which track is this excerpt from?

CPC asks the context to predict the next 1.7 s of its own excerpt. Its negatives are other
tracks (`--negatives times`), so it learns what tells one excerpt from another, but only
over a few seconds: any local detail will do. The linear probe asks something longer: a
classifier taught on the first 70 % of a track must name the track from clips after it,
through other sections (a breakdown after a groove, strings after a horn solo). What stays
the same across a whole piece (instruments, key, tempo, the room, the mix) is what music in
general shares with that task, and CPC does not ask for it.

With `train --track-loss W`, every batch is two excerpts of each of half as many tracks, at
least one excerpt apart (`Corpus.pairs`), and the loss adds W times an InfoNCE term: the
last context vector of each excerpt, through one linear map, must pick out the other
excerpt of its track (the mean of its normalized encodings) among every other excerpt in
the batch. The last context vector is the one a clip is summed up by (`CPC.summarize`), so
this is the vector the probe and the map's top layer read. The two excerpts of a track are
never each other's CPC negatives. The map is not touched: the linear map lives beside the
model during training (its weights are kept with the training state for `--resume`) and
is not part of the model that ships.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from immersions.model.config import ModelConfig

TRACK_HEAD_FILE = "track_head.safetensors"


class TrackHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.temperature = cfg.temperature
        self.project = nn.Linear(cfg.context_channels, cfg.encoding_channels)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, C, T], c [B, D, N] of a batch of pairs (the first excerpts, then the second
        ones in the same track order). Returns (InfoNCE loss, accuracy of picking the partner)."""
        batch = z.shape[0]
        if batch % 2 or batch < 4:
            raise ValueError(f"the track loss needs pairs of excerpts from two tracks or more, not a batch of {batch}")
        query = F.normalize(self.project(c[..., -1]), dim=-1) / self.temperature  # [B, C]
        bag = F.normalize(F.normalize(z, dim=1).mean(-1), dim=-1)  # [B, C]: each excerpt's encodings, pooled
        scores = (query @ bag.T).masked_fill(torch.eye(batch, dtype=torch.bool, device=z.device), float("-inf"))
        partner = (torch.arange(batch, device=z.device) + batch // 2) % batch
        return F.cross_entropy(scores, partner), (scores.argmax(-1) == partner).float().mean()


def pair_groups(batch: int, device: torch.device | None = None) -> torch.Tensor:
    """The track of every item of a batch of pairs: 0 .. B/2 - 1, twice."""
    return torch.arange(batch, device=device) % (batch // 2)
