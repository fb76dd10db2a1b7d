"""The artificial ear: a Contrastive Predictive Coding model over a constant-Q scalogram."""

from immersions.model.config import ModelConfig, preset, PRESETS
from immersions.model.cpc import CPC, Tap

__all__ = ["ModelConfig", "preset", "PRESETS", "CPC", "Tap"]
