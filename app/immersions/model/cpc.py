"""The CPC model in one file: scalogram -> causal 2-D ResNet encoder -> causal 1-D ResNet
context network -> one linear predictor per future step, trained with InfoNCE.

Tensor layout, everywhere in this package:
- waveform    [batch, samples]
- scalogram   [batch, pitch, time]
- encoder tap [batch, channel, pitch, time]      (pitch as image height, time as width)
- encodings z [batch, channel, time_z]           (pitch collapsed to 1)
- AR tap / context c [batch, channel, time_c]
Every tap is exposed to dreaming and the visuals as [batch, channel, pitch, time]
(AR taps with pitch 1).

Causality: convolutions pad time only at the start and max-pools take non-overlapping
windows, so an encoding never depends on later audio than its own window (the original
padded symmetrically and leaked the future into the "causal" encoder).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from immersions.audio.scalogram import Scalogram
from immersions.model.config import ARLayer, EncoderBlock, ModelConfig
from immersions.model.ear import Ear, Link, Tap, batch_norm_scale, kernel_strength

__all__ = ["CPC", "Tap", "for_dreaming", "NEGATIVES"]

NEGATIVES = ("batch", "steps", "times")  # what InfoNCE contrasts against: see CPC.cpc_loss


def _pool_out(size: int, pool: int) -> int:
    return -(-size // pool)  # ceil_mode pooling


LOOK_FIRST_EVERY = 8  # RedirectedReLU: pitch rows sampled before the full dead-channel check


class RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward lets an "off" channel hear that it should turn on (Lucid's
    redirected ReLU). Where a channel's true gradient is zero everywhere for an item (every
    unit below 0, as at silence or for channels that only wake on loud input), the gradient
    passes through where it asks the pre-activation to rise. The backward seed must be an
    objective to maximize. Forward values are plain ReLU's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        true = torch.ops.aten.threshold_backward(grad, y, 0)  # plain ReLU's gradient, in grad's layout
        dims = tuple(range(2, y.dim()))
        if y.dim() == 4 and y.shape[2] >= 4 * LOOK_FIRST_EVERY:
            # a large map (the first blocks' are tens of MB a pass): look at every 8th pitch
            # row first; a gradient found there for every channel proves none is dead
            if bool(torch.linalg.vector_norm(true[:, :, ::LOOK_FIRST_EVERY], 1, dim=dims).ne(0).all()):
                return true
        dead = torch.linalg.vector_norm(true, 1, dim=dims).eq(0)  # [batch, channel]: nothing got through
        if not bool(dead.any()):
            return true
        # Every unit with a gradient is off. Redirected, the gradient passes where it asks the
        # pre-activation to rise (on units it is zero here, or something would have got through).
        dead = dead.view(*dead.shape, *([1] * (y.dim() - 2)))
        return torch.where(dead, grad.clamp_min(0), true)


def relu(x: torch.Tensor, redirect: bool) -> torch.Tensor:
    return RedirectedReLU.apply(x) if redirect and torch.is_grad_enabled() else F.relu(x)


class CausalConv2d(nn.Conv2d):
    """2-D convolution over (pitch, time): 'same' in pitch (zeros = silence), causal in time."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int]):
        kp, kt = kernel
        # one time step and an odd pitch size (most of the encoder's convolutions): the
        # convolution pads by itself, which spares a padded copy of the input each pass
        inline = kt == 1 and kp % 2 == 1
        super().__init__(c_in, c_out, kernel, bias=False, padding=(kp // 2, 0) if inline else 0)
        self._pad = None if inline else (kt - 1, 0, kp // 2, kp - 1 - kp // 2)  # (time_left, time_right, pitch_lo, pitch_hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self._pad is None else F.pad(x, self._pad))


class EncoderBlockModule(nn.Module):
    """conv1 -> BN -> ReLU [tap] -> pool -> conv2 -> BN -> + residual -> ReLU [tap]."""

    redirect_relu = False  # set by CPC.redirect_relus for dreaming

    def __init__(self, c_in: int, spec: EncoderBlock):
        super().__init__()
        c = spec.channels
        self.conv1 = CausalConv2d(c_in, c, spec.conv1)
        self.bn1 = nn.BatchNorm2d(c)
        self.pool = nn.MaxPool2d(spec.pool, ceil_mode=True) if spec.pool != (1, 1) else nn.Identity()
        self.conv2 = CausalConv2d(c, c, spec.conv2)
        self.bn2 = nn.BatchNorm2d(c)
        self.project = (
            nn.Sequential(nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c)) if c_in != c else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = relu(self.bn1(self.conv1(x)), self.redirect_relu)
        h2 = relu(self.bn2(self.conv2(self.pool(h1))) + self.project(self.pool(x)), self.redirect_relu)
        return h1, h2


class _RunningStatsKept:
    """Batch norms whose running statistics are put back as they were on leaving: a block's
    forward recomputed in backward must not count its batch twice."""

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]

    def __enter__(self) -> None:
        self.saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in self.norms]

    def __exit__(self, *exc) -> None:
        for norm, saved in zip(self.norms, self.saved):
            for buffer, value in zip((norm.running_mean, norm.running_var, norm.num_batches_tracked), saved):
                buffer.copy_(value)


def recomputed(block: EncoderBlockModule, x: torch.Tensor) -> torch.Tensor:
    """A block's output whose inner activations are not kept for backward but recomputed
    there (activation checkpointing): the first blocks' maps, at 256 pitches by every
    frame, hold most of a training step's memory. Gradients, outputs and batch-norm
    statistics are the same as without; the step costs one more forward of the block."""
    calls = 0

    def run(inp: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            return block(inp)[1]
        with _RunningStatsKept(block):
            return block(inp)[1]

    return checkpoint(run, x, use_reentrant=False)


class ARLayerModule(nn.Module):
    """Causal conv1d -> BN -> + residual -> ReLU [tap] -> dropout -> pool."""

    redirect_relu = False

    def __init__(self, c_in: int, spec: ARLayer, dropout: float):
        super().__init__()
        self.kernel = spec.kernel
        self.conv = nn.Conv1d(c_in, spec.channels, spec.kernel, bias=False)
        self.bn = nn.BatchNorm1d(spec.channels)
        self.project = (
            nn.Sequential(nn.Conv1d(c_in, spec.channels, 1, bias=False), nn.BatchNorm1d(spec.channels))
            if c_in != spec.channels
            else nn.Identity()
        )
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool1d(spec.pool, ceil_mode=True) if spec.pool > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = relu(self.bn(self.conv(F.pad(x, (self.kernel - 1, 0)))) + self.project(x), self.redirect_relu)
        return h, self.pool(self.dropout(h))


class CPC(Ear):
    """The first ear: Contrastive Predictive Coding over our constant-Q scalogram."""

    kind = "cpc"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.scalogram = Scalogram(cfg.scalogram)
        blocks, c_in = [], 2 if cfg.pitch_coordinate else 1
        self.register_buffer("pitch_position", torch.linspace(0, 1, cfg.scalogram.n_bins)[:, None], persistent=False)
        for spec in cfg.encoder:
            blocks.append(EncoderBlockModule(c_in, spec))
            c_in = spec.channels
        self.encoder = nn.ModuleList(blocks)
        layers = []
        for spec in cfg.ar:
            layers.append(ARLayerModule(c_in, spec, cfg.dropout))
            c_in = spec.channels
        self.ar = nn.ModuleList(layers)
        self.predictor_dropout = nn.Dropout(cfg.dropout)
        # one linear map context -> encoding per future step, stored as one matrix
        self.predictor = nn.Linear(cfg.context_channels, cfg.prediction_steps * cfg.encoding_channels)
        self.taps = self._derive_taps()
        self.encoder.to(memory_format=torch.channels_last)
        # training only: how many of the first encoder blocks recompute their activations in
        # backward instead of keeping them (see `recomputed`): less memory, slower steps
        self.recompute_blocks = 0

    def redirect_relus(self, on: bool = True) -> None:
        """Dreaming: let gradients reach channels that are off (see RedirectedReLU)."""
        for block in (*self.encoder, *self.ar):
            block.redirect_relu = on

    def _derive_taps(self) -> tuple[Tap, ...]:
        taps: list[Tap] = []
        pitches, stride = self.cfg.scalogram.n_bins, 1
        for i, spec in enumerate(self.cfg.encoder, start=1):
            taps.append(Tap(len(taps), f"enc{i}.conv1", f"enc {i} conv 1", spec.channels, pitches, stride))
            pitches, stride = _pool_out(pitches, spec.pool[0]), stride * spec.pool[1]
            taps.append(Tap(len(taps), f"enc{i}.conv2", f"enc {i} conv 2", spec.channels, pitches, stride))
        if pitches != 1:
            raise ValueError(f"encoder leaves {pitches} pitches; its pools must collapse pitch to 1")
        for i, spec in enumerate(self.cfg.ar, start=1):
            taps.append(Tap(len(taps), f"ar{i}", f"ar {i}", spec.channels, 1, stride))
            stride *= spec.pool
        return tuple(taps)

    # -- the Ear interface ---------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.cfg.scalogram.sample_rate

    @property
    def loop_seconds(self) -> float:
        return self.cfg.loop_seconds

    @property
    def item_seconds(self) -> float:
        return self.cfg.item_seconds

    @property
    def name(self) -> str:
        return self.cfg.preset

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def describe(self) -> dict:
        sc = self.cfg.scalogram
        return {"preset": self.cfg.preset, "n_bins": sc.n_bins, "bins_per_octave": sc.bins_per_octave,
                "fmin": sc.fmin, "hop": sc.hop, "frames_per_second": sc.frames_per_second}

    def frames(self, samples: int) -> int:
        return samples // self.cfg.scalogram.hop

    def hear(self, audio: torch.Tensor, circular: bool = True) -> torch.Tensor:
        return self.scalogram(audio, circular=circular)

    def read(self, heard: torch.Tensor) -> list[torch.Tensor]:
        return self.loop_activations(heard)

    def for_dreaming(self) -> "CPC":
        return for_dreaming(self)

    def links(self) -> list[Link]:
        """Edges follow the modules between taps. A convolution connects its output neuron
        (c_out, p) to every input channel at each pitch its kernel covers, after the max-pool
        in front of it. Residual paths connect a block's input tap to its output tap: channel
        to same channel, or all channels through a 1x1 projection. The context layers are 1-D
        over time, so their links are dense between channels; a layer's convolution and its
        residual are one link whose strength is their sum. Strength: the kernel's magnitude
        times the following batch norm's scale; an identity residual counts 1."""
        taps, out = self.taps, []
        with torch.no_grad():
            for i, block in enumerate(self.encoder):
                h1, h2 = taps[2 * i], taps[2 * i + 1]
                pool = self.cfg.encoder[i].pool[0]
                if i > 0:  # block 1 reads the scalogram, which is not a tap
                    x = taps[2 * i - 1]
                    out.append(Link(x.index, h1.index, _conv_strength(block.conv1, block.bn1), 1))
                    out.append(Link(x.index, h2.index, _residual_strength(block.project, h2.channels), pool))
                out.append(Link(h1.index, h2.index, _conv_strength(block.conv2, block.bn2), pool))
            previous = taps[2 * len(self.encoder) - 1]
            for j, layer in enumerate(self.ar):
                tap = taps[2 * len(self.encoder) + j]
                strength = _conv_strength(layer.conv, layer.bn) + _residual_strength(layer.project, tap.channels)
                out.append(Link(previous.index, tap.index, strength, 1))
                previous = tap
        return out

    # -- forward passes -------------------------------------------------------------

    def encode(self, spec: torch.Tensor, taps: list | None = None) -> torch.Tensor:
        """Scalogram [B, pitch, time] -> encodings z [B, C, time_z]; appends encoder taps to `taps`."""
        x = spec[:, None]
        if self.cfg.pitch_coordinate:
            x = torch.cat([x, self.pitch_position.expand_as(spec)[:, None]], dim=1)
        # channels-last runs the many-position, few-channel early convolutions about twice
        # as fast on CPUs (oneDNN) and is no slower on GPUs
        x = x.contiguous(memory_format=torch.channels_last)
        recompute = self.recompute_blocks if taps is None and self.training and torch.is_grad_enabled() else 0
        for i, block in enumerate(self.encoder):
            if i < recompute:
                x = recomputed(block, x)
                continue
            h1, x = block(x)
            if taps is not None:
                taps += [h1, x]
        return x[:, :, 0]

    def context(self, z: torch.Tensor, taps: list | None = None) -> torch.Tensor:
        """Encodings [B, C, time_z] -> context vectors c [B, D, time_c]; appends AR taps [B, C, 1, T]."""
        x = z
        for layer in self.ar:
            h, x = layer(x)
            if taps is not None:
                taps.append(h[:, :, None])
        return x

    def activations(self, audio: torch.Tensor, circular: bool = True) -> list[torch.Tensor]:
        """Every tap, each [B, channel, pitch, time], in the order of `self.taps`.
        circular=True treats the audio as a loop (see `loop_activations`); False, as a window
        that starts from silence."""
        spec = self.scalogram(audio, circular=circular)
        if circular:
            return self.loop_activations(spec)
        taps: list[torch.Tensor] = []
        self.context(self.encode(spec, taps), taps)
        return taps

    @property
    def encoder_context_frames(self) -> int:
        """Scalogram frames of past context the encoder needs, rounded up to whole pooling
        windows (so that prepending them keeps every pool aligned)."""
        field, scale = 1, 1
        for spec in self.cfg.encoder:
            field += (spec.conv1[1] - 1) * scale
            scale *= spec.pool[1]
            field += (spec.pool[1] - 1) * (scale // spec.pool[1]) + (spec.conv2[1] - 1) * scale
        stride = self.cfg.encoder_time_stride
        return -(-field // stride) * stride

    def loop_activations(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """Taps of a loop's scalogram [B, pitch, frames] as heard in a loop: every neuron at
        the loop's start sees the loop's end as its past, not silence, so activations (and
        the dream objective) have no seam at the loop boundary. The encoder gets the last
        frames prepended; the context network, cheap beside it, runs over two copies of the
        encodings and the second copy is kept."""
        frames = spec.shape[-1]
        context = min(self.encoder_context_frames, frames - frames % self.cfg.encoder_time_stride)
        taps: list[torch.Tensor] = []
        z = self.encode(torch.cat([spec[..., frames - context:], spec], dim=-1) if context else spec, taps)
        out = [t[..., context // tap.time_stride:] for t, tap in zip(taps, self.taps)]
        z = z[..., context // self.cfg.encoder_time_stride:]
        ar_taps: list[torch.Tensor] = []
        self.context(torch.cat([z, z], dim=-1), ar_taps)
        n_enc = len(out)
        for a, tap in zip(ar_taps, self.taps[n_enc:]):
            keep = tap.shape(frames)[2]
            out.append(a[..., a.shape[-1] - keep:])
        return out

    def summarize(self, audio: torch.Tensor, circular: bool = False) -> torch.Tensor:
        """One context vector per clip [B, D]: the last one, whose receptive field (~60
        encodings, about 4 s) spans the whole clip; it is what the model predicts from."""
        return self.context(self.encode(self.scalogram(audio, circular=circular)))[..., -1]

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass over excerpts: (encodings z, context c)."""
        if self.training and self.cfg.input_noise > 0:
            audio = audio + self.cfg.input_noise * torch.randn_like(audio)
        with torch.autocast(audio.device.type, enabled=False):  # the scalogram stays float32 under bf16
            spec = self.scalogram(audio.float(), circular=False)
        z = self.encode(spec)
        return z, self.context(z)

    # -- the CPC objective ------------------------------------------------------------

    def cpc_loss(self, z: torch.Tensor, c: torch.Tensor, negatives: str = "batch",
                 min_context: int = 15, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE over future steps k = skip+1 .. skip+K.

        The context c_n summarizes encodings up to e_n = (n + 1) * stride - 1; it scores
        W_k c_n against the true z[e_n + k] and, as negatives (see NEGATIVES):
        - "batch": the encodings of every other item in the batch at that same time;
        - "steps": those of every item at every other step k' too (across steps);
        - "times": those of every other item at every time of its excerpt. Far more and
          harder negatives than "batch" (a breakdown must be told from other tracks'
          breakdowns, not only from their grooves), and none from the item itself, so
          the context learns what the music is rather than where in the bar it stands.
        `groups` [B]: items with the same group come from one track (a batch of pairs, see
        Corpus.pairs) and are never each other's negatives ("batch" and "times").
        Returns (loss, accuracy per step [K]).
        """
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, not {negatives!r}")
        cfg = self.cfg
        batch, channels, t_z = z.shape
        k_steps = cfg.prediction_steps
        stride = cfg.ar_time_stride
        ends = torch.arange(c.shape[-1], device=z.device) * stride + stride - 1
        valid = (ends >= min_context) & (ends + cfg.skip_steps + k_steps < t_z)
        if not valid.any():
            raise ValueError(f"excerpt too short for CPC: {t_z} encodings")
        ends = ends[valid]
        ctx = self.predictor_dropout(c[:, :, valid]).transpose(1, 2)  # [B, N, D]
        pred = self.predictor(ctx).view(batch, len(ends), k_steps, channels)  # [B, N, K, C]
        steps = torch.arange(1, k_steps + 1, device=z.device) + cfg.skip_steps
        target = z[:, :, ends[:, None] + steps[None, :]].permute(0, 2, 3, 1)  # [B, N, K, C]
        # Scores are cosine similarities over a temperature. With raw dot products the
        # initial scores are large and random, and the quickest way to shrink them is to
        # collapse every encoding onto one vector, from which training never recovers.
        pred = F.normalize(pred, dim=-1) / cfg.temperature
        target = F.normalize(target, dim=-1)
        if negatives == "times":
            # scores[b, n, k, 1 + (b', t)]: the positive first, then every other item's
            # encoding at every time; the item's own encodings are masked out
            positive = (pred * target).sum(-1, keepdim=True)
            every = F.normalize(z, dim=1)
            scores = torch.einsum("bnkc,xct->bnkxt", pred, every)
            own = (torch.eye(batch, dtype=torch.bool, device=z.device) if groups is None
                   else groups[:, None] == groups[None, :])[:, None, None, :, None]
            scores = scores.masked_fill(own, float("-inf")).flatten(3)
            scores = torch.cat([positive, scores], dim=-1)
            labels = torch.zeros(scores.shape[:-1], dtype=torch.long, device=z.device)
            loss = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), labels.reshape(-1))
            hit = scores.argmax(-1) == 0
            return loss, hit.float().mean(dim=(0, 1))
        if negatives == "steps":
            if groups is not None:
                raise ValueError("negatives 'steps' does not take groups")
            # scores[n, (k, b), (k', b')]: negatives from every item and every step
            p = pred.permute(1, 2, 0, 3).reshape(len(ends), k_steps * batch, channels)
            t = target.permute(1, 2, 0, 3).reshape(len(ends), k_steps * batch, channels)
            scores = p @ t.transpose(1, 2)
            labels = torch.arange(k_steps * batch, device=z.device).expand(len(ends), -1)
            loss = F.cross_entropy(scores.flatten(0, 1), labels.flatten())
            hit = (scores.argmax(-1) == labels).view(len(ends), k_steps, batch)
            return loss, hit.float().mean(dim=(0, 2))
        # scores[n, k, b, b']: negatives from every other item at the same step
        scores = torch.einsum("bnkc,xnkc->nkbx", pred, target)
        if groups is not None:  # the same track's other excerpt is no negative
            same = (groups[:, None] == groups[None, :]) & ~torch.eye(batch, dtype=torch.bool, device=z.device)
            scores = scores.masked_fill(same, float("-inf"))
        labels = torch.arange(batch, device=z.device).expand(len(ends), k_steps, -1)
        loss = F.cross_entropy(scores.reshape(-1, batch), labels.reshape(-1))
        hit = scores.argmax(-1) == labels
        return loss, hit.float().mean(dim=(0, 2))


def _conv_strength(conv: nn.Module, bn: nn.Module) -> np.ndarray:
    return kernel_strength(conv.weight, batch_norm_scale(bn))


def _residual_strength(project: nn.Module, channels: int) -> np.ndarray:
    """An identity residual (weight 1 channel to same channel) or a 1x1 projection's strength."""
    if isinstance(project, nn.Identity):
        return np.eye(channels, dtype=np.float32)[:, :, None]
    return _conv_strength(project[0], project[1])[:, :, :1]


def _fold(conv: nn.Module, bn: nn.Module) -> None:
    """Fold an eval-mode BatchNorm into the convolution before it (scale the weights, add a bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))), requires_grad=False)
    shift = bn.bias - bn.running_mean * scale
    conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift, requires_grad=False)


@torch.no_grad()
def for_dreaming(model: CPC) -> CPC:
    """A copy of `model` for the dream step: eval mode, weights frozen, every BatchNorm folded
    into its convolution. Its activations are the model's (to float rounding), and a step costs
    less: in eval mode a BatchNorm is only a per-channel affine map, but its own forward and
    backward passes took about a quarter of a CPU dream step. The model itself is left as it
    is (training, saving and the map's edges read its weights)."""
    dreaming = copy.deepcopy(model).eval()
    for block in dreaming.encoder:
        _fold(block.conv1, block.bn1)
        _fold(block.conv2, block.bn2)
        block.bn1, block.bn2 = nn.Identity(), nn.Identity()
        if isinstance(block.project, nn.Sequential):
            _fold(block.project[0], block.project[1])
            block.project = block.project[0]
    for layer in dreaming.ar:
        _fold(layer.conv, layer.bn)
        layer.bn = nn.Identity()
        if isinstance(layer.project, nn.Sequential):
            _fold(layer.project[0], layer.project[1])
            layer.project = layer.project[0]
    for p in dreaming.parameters():
        p.requires_grad_(False)
    dreaming.encoder.to(memory_format=torch.channels_last)
    return dreaming
