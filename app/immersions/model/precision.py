"""Reduced precision where the processor has it.

`bf16` runs the network (the encoder and the context model) under bfloat16 autocast; the
scalogram (its FFTs and its log) and what is computed from the network's outputs (the
InfoNCE scores, a dream's objective) stay in float32. `auto` takes bf16 only where the
hardware computes it natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX, as
oneDNN reports) and float32 elsewhere, quietly: on a CPU without the feature bf16 is emulated
and slower than float32. `fp32` is the reference.
"""

from __future__ import annotations

import contextlib

import torch

from immersions.errors import ImmersionsError

PRECISIONS = ("auto", "fp32", "bf16")


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (not emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' where native, else 'fp32'; 'fp32' and 'bf16' as asked."""
    if precision not in PRECISIONS:
        raise ImmersionsError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_native(torch.device(device)) else "fp32"
    return precision


def network_autocast(precision: str, device: torch.device | str):
    """The context the network runs in for a resolved precision."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def scalogram_in_fp32(device: torch.device | str):
    """Inside a network's autocast: keep the scalogram (FFTs, the log) in float32."""
    return torch.autocast(torch.device(device).type, enabled=False)
