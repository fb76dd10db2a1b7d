"""What the CPC ear does, reduced to fingerprints: the seeded dream, the neuron graph and
its layout. `tests/fixtures/cpc_reference.json` holds these numbers as the code before the
Ear interface computed them (`PYTHONPATH=<that checkout>/app python tests/cpc_reference.py`
wrote it); tests/test_ear.py computes them again and asks for the same bytes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cpc_reference.json"


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def reference() -> dict:
    from immersions.dream.dreamer import Dreamer, default_params
    from immersions.dream.engine import activation_table
    from immersions.dream.loop import start_clip
    from immersions.layout.force import LayoutConfig, layout
    from immersions.layout.graph import build_graph
    from immersions.model import CPC, preset
    from immersions.model.checkpoint import load_model
    from immersions.model.stats import load_stats
    from immersions.registry import loop_length
    from immersions.selection import Region

    torch.set_num_threads(2)
    torch.manual_seed(0)
    micro = CPC(preset("micro")).eval()
    out = {}
    # the dream settings that were the defaults when the fixture was recorded (the full-band
    # ear's defaults moved them since: docs/dreams.md)
    params = default_params().replace(bars=1, bpm=120, step_tilt=-4.5, sparsity=0.03, balance=0.02)
    for space in ("waveform", "spectrum"):
        p = params.replace(space=space)
        samples = loop_length(p, 16000)
        dreamer = Dreamer(micro, None, start_clip("groove", samples, 16000, seed=3), copies=2, seed=7)
        dreamer.select(Region(len(micro.taps) // 2, (0.3, 0.2)))
        objectives = [dreamer.step(p).objective for _ in range(3)]
        out[f"dream_{space}"] = {"loop": _digest(dreamer.loop.numpy()), "objectives": objectives}
    table, _, spec = activation_table(micro, None, torch.as_tensor(start_clip("groove", 16000 * 2, 16000, seed=3)))
    out["activation_table"] = _digest(table, spec.numpy())
    for name in ("micro", "blend"):  # blend: the 16-kHz ear that was the default when this was recorded
        model = micro if name == "micro" else load_model("blend")
        stats = None if name == "micro" else load_stats(model)
        g = build_graph(model, stats)
        out[f"graph_{name}"] = {"nodes": g.nodes, "edges": g.edges, "src_dst": _digest(g.src, g.dst),
                                "weight": _digest(g.weight), "charge": _digest(g.charge), "digest": g.digest()}
    g = build_graph(micro)
    positions = layout(g, LayoutConfig(seed=1, iterations=40, fine_iterations=8)).positions
    out["layout_micro"] = _digest(np.asarray(positions, np.float32))
    return out


if __name__ == "__main__":
    result = reference()
    if "--write" in sys.argv:
        FIXTURE.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
