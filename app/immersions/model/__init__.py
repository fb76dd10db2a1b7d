"""The artificial ear: the `Ear` interface the house listens through (ear.py), and its first
kind, a Contrastive Predictive Coding model over a constant-Q scalogram (cpc.py)."""

from immersions.model.config import ModelConfig, preset, PRESETS
from immersions.model.cpc import CPC
from immersions.model.ear import Ear, Link, Tap

__all__ = ["ModelConfig", "preset", "PRESETS", "CPC", "Ear", "Link", "Tap"]
