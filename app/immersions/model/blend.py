"""Weight-space blending of two ears of one architecture (WiSE-FT, Wortsman et al. 2022).

A model fine-tuned from another stays in its basin: the straight line between the two sets
of weights is a family of working models, and a point on it can keep most of what the
fine-tune learned while losing less of what the base knew. `immersions blend` makes one:

    weights = (1 - weight) * base + weight * tuned

Floating-point tensors (weights and the batch-norm running statistics) are interpolated;
integer ones (batch-norm counters) come from the tuned model. The blend's activation
statistics are measured again (its neurons are new neurons), and so its layout, whose
charges come from them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from immersions.errors import ImmersionsError
from immersions.model.ear import Ear


def blend_state(base: Ear, tuned: Ear, weight: float) -> dict[str, torch.Tensor]:
    """The state dict (1 - weight) * base + weight * tuned, for two ears of one kind and config."""
    if not 0.0 <= weight <= 1.0:
        raise ImmersionsError(f"the blend weight must be in [0, 1] (0: the base, 1: the tuned model), not {weight:g}")
    if type(base) is not type(tuned) or base.config_dict() != tuned.config_dict():
        raise ImmersionsError("the two models have different architectures: only models of one config "
                              "(one fine-tuned from the other) can be blended")
    a, b = base.state_dict(), tuned.state_dict()
    return {k: torch.lerp(a[k].float(), b[k].float(), weight).to(b[k].dtype) if b[k].is_floating_point() else b[k].clone()
            for k in b}


def blend(base: Ear, tuned: Ear, weight: float) -> Ear:
    """A new model (on the CPU, in eval mode) with the blended weights; its meta records both parents."""
    model = copy.deepcopy(tuned).cpu()
    model.folder = None
    model.load_state_dict(blend_state(base, tuned, weight))
    model.meta = {"blend": {"weight": weight, "base": _name(base), "tuned": _name(tuned)},
                  "parents": {"base": dict(base.meta), "tuned": dict(tuned.meta)}}
    return model.eval()


def _name(model: Ear) -> str:
    folder = getattr(model, "folder", None)
    return Path(folder).name if folder else ""
