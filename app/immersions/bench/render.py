"""Honest timing of the map renderer, offscreen on EGL: frames per second and ms per frame
for each view size, connection count and bloom setting.

Each frame is drawn and then waited for (`ctx.finish()`, as a buffer swap would), after a
few warm-up frames; the figures are the median, min and max over the measured frames,
and the process's CPU time per frame (on llvmpipe the rasterizer threads are CPU time;
on a busy machine wall time overstates the cost, the load average is in the report).
The activations are a plausible clip (`synthetic_activations`) with the playhead moving,
so the number of lit connections changes from frame to frame as it does on stage.
"""

from __future__ import annotations

import logging
import statistics
import time

import moderngl
import numpy as np

from immersions.bench.kit import environment, parse_sizes
from immersions.errors import ImmersionsError
from immersions.registry import REGISTRY
from immersions.visual.gl import finish, offscreen_context
from immersions.visual.renderer import Renderer
from immersions.visual.scene import Scene, synthetic_activations

log = logging.getLogger(__name__)


def bench_scene(scene: Scene, sizes=((1280, 720), (1920, 1080)), frames: int = 60,
                edge_counts=(100_000,), bloom=(True, False), warmup: int = 5, selection: bool = True,
                ctx: moderngl.Context | None = None, seed: int = 0) -> dict:
    """Time `frames` frames of `scene` for every combination of size, edge count and bloom."""
    own = ctx is None
    ctx = ctx or offscreen_context()
    renderer = None
    try:
        renderer = Renderer(ctx, scene, sizes[0])
        selected = np.zeros(scene.nodes, bool)
        if selection and len(scene.tap_names) > 1:
            taps = scene.tap_slice(1)
            selected[taps.start: taps.start + max(1, (taps.stop - taps.start) // 3)] = True
        renderer.set_clip(synthetic_activations(scene, seed=seed), selected)
        params = REGISTRY.defaults().replace(camera_follow=False)
        results = []
        for size in sizes:
            renderer.resize(*size)
            for edges in edge_counts:
                for bloom_on in bloom:
                    p = params.replace(edge_count=int(min(max(edges, 1_000), 50_000_000)), bloom=bool(bloom_on))
                    if edges < 1_000:  # below the parameter's range: switch connections off instead
                        p = p.replace(edge_brightness=0.0)
                    times = []
                    for i in range(warmup + frames):
                        if i == warmup:
                            cpu_start = time.process_time()
                        start = time.perf_counter()
                        renderer.render((i % 240) / 240.0, 1 / 60, p)
                        finish(ctx)
                        if i >= warmup:
                            times.append(time.perf_counter() - start)
                    cpu = (time.process_time() - cpu_start) / frames
                    median = statistics.median(times)
                    results.append({
                        "width": size[0], "height": size[1], "edge_count": int(edges),
                        "edges_drawn": renderer.stats.edges_drawn, "bloom": bool(bloom_on),
                        "fps": 1.0 / median, "ms_per_frame": {"median": 1e3 * median, "min": 1e3 * min(times),
                                                              "max": 1e3 * max(times)},
                        # CPU time of all this process's threads (llvmpipe rasterizes on the CPU):
                        # compare with ms_per_frame to see how much of the machine the frame had
                        "cpu_ms_per_frame": 1e3 * cpu,
                        "frames": frames,
                    })
                    log.info("render %dx%d edges=%d bloom=%s: %.1f fps", size[0], size[1], edges, bloom_on, 1 / median)
        return {
            "environment": environment(gl=ctx),
            "scene": {"nodes": scene.nodes, "edges": scene.edges, "taps": len(scene.tap_names)},
            "upload": {"bytes_per_frame": renderer.stats.bytes_uploaded_last_frame,
                       "bytes_per_clip": renderer.stats.bytes_uploaded_last_clip,
                       "bytes_per_model": renderer.bytes_uploaded_model},
            "results": results,
        }
    finally:
        if renderer is not None:
            renderer.release()
        if own:
            ctx.release()


def bench_render(args) -> dict:
    """The map renderer offscreen (EGL) on the default model's map and the `seed` preset's,
    at 1280x720 and 1920x1080, with and without bloom, at several connection counts
    (`--maps`, `--sizes`, `--bloom` pick fewer, or another preset's map)."""
    from immersions.model.config import preset

    # bad settings fail before the slow imports and before a context opens
    names = [n.strip() for n in getattr(args, "maps", "default,seed").split(",") if n.strip()]
    sizes = parse_sizes(getattr(args, "sizes", "1280x720,1920x1080"))
    bloom = {"both": (True, False), "on": (True,), "off": (False,)}[getattr(args, "bloom", "both")]
    try:
        counts = [int(c) for c in args.edge_counts.split(",")]
    except ValueError:
        raise ImmersionsError(f"--edge-counts '{args.edge_counts}' is not whole numbers, e.g. 0,100000,1000000") from None
    for name in names:
        if name != "default":
            preset(name)

    from immersions.layout.cache import model_layout
    from immersions.model.checkpoint import load_model, preset_ear
    from immersions.model.stats import load_stats
    from immersions.paths import cache_dir
    from immersions.performance.performance import scene_from_layout

    ctx = offscreen_context()
    doc = {"benchmark": "render", **environment(),
           "gl_renderer": ctx.info["GL_RENDERER"], "scenes": {}}
    for name in names:
        if name == "default":  # the shipped model with its statistics
            net = load_model(None)
            stats, folder = load_stats(net), None
        else:  # an untrained preset's map, laid out once into the cache as `immersions layout --preset` does
            net, stats, folder = preset_ear(name), None, cache_dir() / f"preset-{name}"
        scene = scene_from_layout(model_layout(net, stats, folder=folder))
        result = bench_scene(scene, sizes=sizes, frames=args.frames, edge_counts=[min(c, scene.edges) for c in counts],
                             bloom=bloom, ctx=ctx)
        doc["scenes"][name] = {"nodes": scene.nodes, "edges": scene.edges, **result}
    return doc


