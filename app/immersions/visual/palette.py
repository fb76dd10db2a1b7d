"""Colours and light levels of the map: pure functions the tests call directly.

The shaders use the same curves; where a function here has a twin in a shader, the
docstring names it, so a change to one is easy to carry to the other.
"""

from __future__ import annotations

import numpy as np

# Cool (first encoder taps) to warm (last context layers). Bright, saturated hues of similar
# lightness: a projector lifts black and washes out dark colours, so no deep blue or red.
TAP_COLOURS_SRGB = np.array([
    (0.10, 0.85, 0.95),  # cyan
    (0.30, 0.62, 1.00),  # sky blue
    (0.62, 0.48, 1.00),  # violet
    (0.96, 0.38, 0.85),  # magenta
    (1.00, 0.45, 0.38),  # coral
    (1.00, 0.72, 0.22),  # amber
    (0.80, 0.95, 0.35),  # lime
], dtype=np.float64)

HALO_COLOUR_SRGB = (1.0, 0.93, 0.80)  # warm white ring around selected neurons (shaders/nodes.frag.glsl)
HALO_COLOUR_B_SRGB = (0.54, 0.91, 0.77)  # deck B's selection: a mint ring (twin: HALO_COLOUR_B in shaders/glow.frag.glsl)
# Neurons kept quiet: a pale frost, unsaturated where every tap's hue is saturated, so a quieted
# region reads apart from any layer. Twin: QUIET_COLOUR in shaders/map_common.glsl (linear RGB).
QUIET_COLOUR_SRGB = (0.78, 0.82, 0.92)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def tap_palette(taps: int) -> np.ndarray:
    """One colour per tap, float32 [taps, 3] in linear RGB: evenly spread along the
    cool-to-warm path, so neighbouring layers are neighbouring hues."""
    if taps <= 0:
        return np.zeros((0, 3), np.float32)
    anchors = TAP_COLOURS_SRGB
    if taps == 1:
        return srgb_to_linear(anchors[:1]).astype(np.float32)
    # use as much of the path as the taps need: two taps should not both be blue-ish
    span = min(1.0, 0.35 + 0.65 * (taps - 1) / 6)
    x = np.linspace(0.0, span * (len(anchors) - 1), taps)
    i = np.minimum(np.floor(x).astype(int), len(anchors) - 2)
    f = (x - i)[:, None]
    srgb = anchors[i] * (1 - f) + anchors[i + 1] * f
    return srgb_to_linear(srgb).astype(np.float32)


def activation_glow(a: np.ndarray) -> np.ndarray:
    """How much a neuron glows above its dim base, from its normalized activation
    (0 = typical, > 2 strongly active): 0 up to 1, rising to 1 at 3, capped at 2.
    Twin: `glow()` in shaders/map_common.glsl."""
    return np.clip((np.asarray(a, dtype=np.float64) - 1.0) / 2.0, 0.0, 2.0)
