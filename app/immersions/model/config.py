"""Model presets: one dataclass config, three sizes of the same topology.

The topology follows the 2019 paper: a causal 2-D ResNet over (pitch, time) whose
blocks alternate square kernels with kernels that span only the pitch axis (to catch
overtone series and chords), halving pitch in every block and time in three of them,
so 256 pitch bins collapse to 1 and 125 frames/s become ~16 encodings/s; then a causal
1-D ResNet ("autoregressive model") that sums ~60 encodings into one context vector.

Kernels and pools are written (pitch, time).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from immersions.audio.scalogram import ScalogramConfig
from immersions.errors import ImmersionsError


@dataclass(frozen=True)
class EncoderBlock:
    channels: int
    conv1: tuple[int, int]
    conv2: tuple[int, int]
    pool: tuple[int, int]  # max-pool after conv1 (pitch, time)


@dataclass(frozen=True)
class ARLayer:
    channels: int
    kernel: int
    pool: int = 1  # max-pool over time after the layer


# The shared topology: (conv1, conv2, pool) per encoder block, and the AR kernels/pools.
_BLOCK_SHAPES = (
    ((3, 3), (25, 1), (2, 2)),
    ((3, 1), (3, 1), (2, 1)),
    ((3, 3), (15, 1), (2, 2)),
    ((3, 1), (3, 1), (2, 1)),
    ((3, 3), (15, 1), (2, 2)),
    ((3, 1), (3, 1), (2, 1)),
    ((3, 3), (5, 1), (2, 1)),
    ((3, 1), (3, 1), (2, 1)),
)
_AR_SHAPES = ((4, 1), (4, 1), (4, 2), (4, 1), (4, 1), (4, 2), (4, 1), (4, 1), (4, 1))


def _topology(enc_channels: tuple[int, ...], ar_channels: tuple[int, ...]):
    encoder = tuple(
        EncoderBlock(c, conv1, conv2, pool) for c, (conv1, conv2, pool) in zip(enc_channels, _BLOCK_SHAPES)
    )
    ar = tuple(ARLayer(c, k, p) for c, (k, p) in zip(ar_channels, _AR_SHAPES))
    return encoder, ar


@dataclass(frozen=True)
class ModelConfig:
    preset: str
    scalogram: ScalogramConfig
    encoder: tuple[EncoderBlock, ...]
    ar: tuple[ARLayer, ...]
    prediction_steps: int = 16
    temperature: float = 0.1  # InfoNCE scores are cosine similarity / temperature
    skip_steps: int = 0  # the first few immediate steps may be left out of the loss
    dropout: float = 0.1
    loop_seconds: float = 4.0  # two 4/4 bars at 120 BPM
    item_seconds: float = 8.0  # length of a training excerpt
    input_noise: float = 0.002  # std of noise added to the waveform in training
    # A second input channel holding each bin's pitch position (0 at fmin, 1 at the top):
    # convolutions and max-pools are transposition-invariant, and without it the encoder
    # could hardly tell keys or registers apart once pitch is pooled away.
    pitch_coordinate: bool = True

    @property
    def encoding_channels(self) -> int:
        return self.encoder[-1].channels

    @property
    def context_channels(self) -> int:
        return self.ar[-1].channels

    @property
    def encoder_time_stride(self) -> int:
        stride = 1
        for block in self.encoder:
            stride *= block.pool[1]
        return stride

    @property
    def ar_time_stride(self) -> int:
        stride = 1
        for layer in self.ar:
            stride *= layer.pool
        return stride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        try:
            data = dict(data)
            data["scalogram"] = ScalogramConfig(**data["scalogram"])
            data["encoder"] = tuple(
                EncoderBlock(b["channels"], tuple(b["conv1"]), tuple(b["conv2"]), tuple(b["pool"]))
                for b in data["encoder"]
            )
            data["ar"] = tuple(ARLayer(**layer) for layer in data["ar"])
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (KeyError, TypeError, ValueError) as err:
            raise ImmersionsError(f"invalid model config ({err}); re-export the model with `immersions train`") from err


def _seed() -> ModelConfig:
    encoder, ar = _topology((8, 16, 32, 64, 128, 256, 512, 512), (512,) * 5 + (256,) * 4)
    return ModelConfig("seed", ScalogramConfig(16000, 30.0, 256, 32, 128), encoder, ar)


def _tiny() -> ModelConfig:
    # Narrow where compute is dear (deep, many channels at few pitches) and keep width where
    # neurons are cheap (early blocks, many pitches): a dream step at batch 4 stays fast on
    # two CPU cores while the neuron graph keeps > 20 000 nodes.
    encoder, ar = _topology((16, 24, 32, 48, 64, 96, 128, 128), (128,) * 5 + (96,) * 4)
    return ModelConfig("tiny", ScalogramConfig(16000, 30.0, 256, 32, 128), encoder, ar, item_seconds=6.0)


def _hifi() -> ModelConfig:
    encoder, ar = _topology((8, 16, 32, 64, 128, 256, 512, 512), (512,) * 5 + (256,) * 4)
    # 441-sample hop: exactly 100 frames/s, and a 4-s loop is 400 whole frames
    return ModelConfig("hifi", ScalogramConfig(44100, 40.0, 216, 24, 441), encoder, ar)


# The full band's hop: 588 samples at 44.1 kHz is exactly 75 frames/s, and a 4-s loop is 300
# whole frames (see docs/benchmarks.md, "The full-band ear", for the hops measured).
FULL_HOP = 588


def _full() -> ModelConfig:
    # The full band on CPUs: 44.1 kHz in, 256 bins at 28 per octave from 30 Hz to 16.5 kHz, and
    # tiny's encoder and context. Fewer frames a second than tiny (75 against 125) pay for the
    # wider band, as the original's smaller 44.1-kHz model did; the shapes are tiny's, so the
    # neuron graph keeps tiny's 20 992 nodes and a tiny ear's weights can start its training.
    encoder, ar = _topology((16, 24, 32, 48, 64, 96, 128, 128), (128,) * 5 + (96,) * 4)
    return ModelConfig("full", ScalogramConfig(44100, 30.0, 256, 28, FULL_HOP), encoder, ar, item_seconds=6.0)


def _micro() -> ModelConfig:
    # Same topology at minimal width: for tests and smoke runs, not for listening.
    encoder, ar = _topology((4, 4, 8, 8, 8, 8, 16, 16), (16,) * 5 + (16,) * 4)
    return dataclasses.replace(
        ModelConfig("micro", ScalogramConfig(16000, 30.0, 256, 32, 128), encoder, ar), item_seconds=4.0
    )


def _micro_full() -> ModelConfig:
    # micro's widths on the full band's front end: tests of the 44.1-kHz path
    return dataclasses.replace(_micro(), preset="micro-full", scalogram=_full().scalogram)


PRESETS = {"seed": _seed, "tiny": _tiny, "hifi": _hifi, "full": _full, "micro": _micro, "micro-full": _micro_full}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ImmersionsError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
