"""The neuron map, drawn with moderngl: glowing sprites for neurons, lines for connections,
HDR bloom, a filmic tone map.

What goes to the GPU when (the budget that keeps this fast on a laptop or a CPU rasterizer):
- once per model (`Renderer(...)`): node positions and tap colours (textures), the
  connections (a texture of 8 bytes each, strongest first);
- once per clip (`set_clip`): ONE texture holding the activation table, 64 frames per
  neuron plus its selection flag;
- once per frame (`render`): one 128-byte uniform buffer (camera, playhead, parameters).
The shaders interpolate between activation frames at the playhead, pick the K strongest
connections by drawing the first 2K line vertices, and skip dark lines in the vertex stage.

Passes per frame: edges (lines) + nodes (point sprites), added up in an HDR scene
(RGBA16F) -> [halo: distance field of the selection] -> [bloom: bright-pass, down the
chain, back up] -> [glow: bloom * intensity + halo outline] -> composite (scene + glow,
filmic tone map, gamma) into the target. Halo, bloom and glow run at a quarter of the
view's width and height; only the scene and the composite touch every pixel. With
`render_scale` below 1 (automatic: half on a CPU rasterizer, where it took a third off a
720p frame's CPU time; full size on a GPU) the scene and the composite are drawn at that
share of the view, and a last pass scales the picture up into the target.

Everything is drawn without instancing and without vertex buffers: each vertex finds its
neuron or connection from gl_VertexID. Mesa's CPU rasterizer (llvmpipe) runs instanced
draws of tiny meshes one instance at a time: instanced lines measured about ten times
slower. Connection weights are kept to 8 bits (plenty for a brightness).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Mapping

import moderngl
import numpy as np

from immersions.registry import CHOICE, INTEGER, REGISTRY, RENDERER, TOGGLE, Snapshot
from immersions.errors import ImmersionsError
from immersions.paths import shaders_dir
from immersions.visual.camera import Camera, Pose, pixels_per_unit, pose_to_fit, world_to_pixels
from immersions.visual.gl import draw
from immersions.visual.pacing import automatic_scale, render_scale
from immersions.visual.palette import tap_palette
from immersions.visual.scene import FRAMES_PER_LOOP, Scene

log = logging.getLogger(__name__)

ACTIVATION_STRIDE = FRAMES_PER_LOOP + 1  # texels per neuron in the activation texture: frames, selection
RUN_WIDTH = 4096  # row width of the run-length tables inside their 2-D textures (twin: RUN_SHIFT in map_common.glsl)
NODE_SPRITE_PX = 4.0  # sprite diameter of a quiet neuron at node_size 1 on a 720-pixel-high view
BASE_GLOW = 0.06  # HDR level of a quiet neuron: faint, so the map's shape still reads
HALO = 0.45  # strength of the selection's outline
HALO_REACH_PX = 26.0  # distance field reach around selected neurons, pixels at 720p and zoom 1
HALO_ZOOM_LIMIT = 3.0  # the reach grows with the zoom up to this factor (beyond, fill cost grows)
HALO_OUTLINE_PX = 1.3  # outline thickness (gaussian width), pixels at 720p
GLOW_SCALE = 4  # halo field, first bloom level and glow are 1/4 of the view's width and height
EDGE_CULL = 0.004  # HDR level below which a connection is not drawn at all (about 7/255 on screen)
BLOOM_THRESHOLD, BLOOM_KNEE = 0.9, 0.5
EXPOSURE = 1.0
MAX_BLOOM_LEVELS, MIN_BLOOM_SIZE = 5, 8
MAX_NODE_ID = (1 << 24) - 1  # node ids share 32 bits with an 8-bit weight in the edge buffer

FRAME_FIELDS = ("view", "viewport", "clock", "node", "edge", "halo", "bloom", "grade")  # vec4 each; twin: shaders/frame.glsl
FRAME_BYTES = 16 * len(FRAME_FIELDS)
_FIELD_TYPES = {TOGGLE: bool, INTEGER: int, CHOICE: str}


# The visual parameters one frame is drawn with: every registry parameter whose consumer is the
# renderer, as fields of a frozen dataclass (a new one appears here by being declared there).
VISUAL_NAMES = tuple(p.name for p in REGISTRY.consumed_by(RENDERER))
Visuals = make_dataclass("Visuals", [(p.name, _FIELD_TYPES.get(p.scale, float)) for p in REGISTRY.consumed_by(RENDERER)],
                         frozen=True)
Visuals.__doc__ = "The visual parameters one frame is drawn with (the registry's renderer parameters)."


def visuals_from(params: Snapshot | Mapping | None) -> Visuals:
    """Read the visual parameters from a Snapshot or any Mapping; names it lacks take the
    registry default, values outside a parameter's range raise ImmersionsError."""
    if params is None:
        params = {}
    if isinstance(params, Snapshot):
        return Visuals(**{name: params[name] for name in VISUAL_NAMES})
    return Visuals(**{name: REGISTRY[name].validate(params.get(name, REGISTRY[name].default)) for name in VISUAL_NAMES})


@dataclass(frozen=True)
class RenderStats:
    nodes_drawn: int = 0
    edges_drawn: int = 0
    bytes_uploaded_last_frame: int = 0
    bytes_uploaded_last_clip: int = 0
    frames: int = 0


def run_layout(count: int, stride: int, max_size: int, what: str = "neurons") -> tuple[int, int]:
    """(width, height) of a 2-D texture that holds `count` runs of `stride` texels, row by row."""
    if max_size < RUN_WIDTH:
        raise ImmersionsError(f"this GPU's textures are at most {max_size} texels wide, the map needs {RUN_WIDTH}; update the driver")
    height = max(1, -(-count * stride // RUN_WIDTH))
    if height > max_size:
        raise ImmersionsError(f"{count} {what} do not fit this GPU's textures ({max_size} rows of {RUN_WIDTH}); "
                              f"use a smaller model{' or a lower max_edges' if what == 'connections' else ''}")
    return RUN_WIDTH, height


def fit_to_unit(positions: np.ndarray) -> tuple[np.ndarray, float]:
    """(center, scale) that map the layout's bounding box into -1..1, keeping its aspect."""
    lo, hi = positions.min(axis=0), positions.max(axis=0)
    return (lo + hi) / 2, 2.0 / max(float((hi - lo).max()), 1e-9)


def pack_edges(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint32 [E, 2]: source id, and destination id with the weight (0..255) in the top 8 bits."""
    out = np.empty((len(src), 2), np.uint32) if out is None else out
    out[:, 0] = src
    out[:, 1] = np.clip(np.rint(weight * 255.0), 0, 255).astype(np.uint32) << np.uint32(24)
    out[:, 1] |= dst.astype(np.uint32)
    return out


def load_shader(name: str, folder: Path | None = None, _seen: tuple[str, ...] = ()) -> str:
    """A shader's source with its `#include "file"` lines replaced by those files."""
    folder = folder or shaders_dir()
    path = folder / name
    if name in _seen:
        raise ImmersionsError(f"shader include loop through {name}; fix the #include lines in {folder}")
    try:
        source = path.read_text()
    except OSError:
        raise ImmersionsError(f"missing shader {path}; restore the shaders/ folder of the checkout") from None
    include = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)
    return include.sub(lambda m: load_shader(m.group(1), folder, _seen + (name,)), source)


def selection_flags(selected: np.ndarray, quiet: np.ndarray, selected_b: np.ndarray | None = None,
                    quiet_b: np.ndarray | None = None) -> np.ndarray:
    """Each neuron's selection flag, as the shaders read it (twin: shaders/map_common.glsl): 0 not
    selected; deck A's selection 1 (excited) or 2 (kept quiet, drawn in QUIET_COLOUR); deck B's 3
    or 5; 4 in both decks' (excited). One deck alone gives 0, 1, 2, as before there were two."""
    flags = selected.astype(np.float16) + (selected & quiet)
    if selected_b is not None:
        quiet_b = np.zeros_like(selected_b) if quiet_b is None else quiet_b
        only_b = selected_b & ~selected
        flags[only_b] = 3.0 + 2.0 * quiet_b[only_b]
        flags[selected_b & selected & ~quiet & ~quiet_b] = 4.0
    return flags


class Renderer:
    """Draws a Scene with the activations of the current clip; see the module docstring."""

    def __init__(self, ctx: moderngl.Context, scene: Scene, size: tuple[int, int] = (1280, 720),
                 max_edges: int | None = None, auto_scale: float | None = None):
        if ctx.version_code < 330:
            raise ImmersionsError(f"the map needs OpenGL 3.3 or newer, this context has {ctx.version_code}; update the graphics driver")
        if scene.nodes > MAX_NODE_ID:
            raise ImmersionsError(f"{scene.nodes} neurons are more than the map can draw ({MAX_NODE_ID}); use a smaller model")
        self.ctx, self.scene = ctx, scene
        self.size = (int(size[0]), int(size[1]))  # the view: the target's pixels
        # what render_scale 0 (automatic) stands for: by the GL renderer unless given
        self._auto_scale = auto_scale or automatic_scale(ctx.info.get("GL_RENDERER", ""))
        self.scale = self._auto_scale
        self._draw_size = self.size  # the scene and its tone mapping are drawn at scale x the view
        max_size = int(ctx.info["GL_MAX_TEXTURE_SIZE"])
        self._fit_center, self._fit_scale = fit_to_unit(scene.positions)
        self._unit_positions = ((scene.positions - self._fit_center) * self._fit_scale).astype(np.float32)
        lo, hi = self._unit_positions.min(axis=0), self._unit_positions.max(axis=0)
        self._unit_corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]])
        self.camera = Camera(self.home_pose())
        self._time = 0.0
        self._frames = 0
        self._selection = np.zeros(scene.nodes, bool)
        self._selection_changed = False
        self._was_following = False
        self._bloom_levels: list[tuple[moderngl.Texture, moderngl.Framebuffer]] = []
        self._hdr = self._hdr_fbo = self._output = self._output_fbo = self._picture = self._picture_fbo = None
        self._halo = self._halo_fbo = self._glow = self._glow_fbo = None
        self._last_target: moderngl.Framebuffer | None = None
        self._frame_block = np.zeros((len(FRAME_FIELDS), 4), np.float32)
        self.stats = RenderStats()

        self._programs = self._load_programs()
        self._frame_ubo = ctx.buffer(reserve=FRAME_BYTES)

        # per model: node records (x, y, tap, 0) and tap colours
        width, height = run_layout(scene.nodes, 1, max_size)
        records = np.zeros((width * height, 4), np.float32)
        records[: scene.nodes, :2] = self._unit_positions
        records[: scene.nodes, 2] = scene.node_tap
        self._node_tex = self._table_texture((width, height), 4, records, "f4")
        palette = np.ascontiguousarray(tap_palette(len(scene.tap_names)))
        self._palette_tex = self._table_texture((len(palette), 1), 3, palette, "f4")

        # per clip: 64 frames + selection per node, float16; allocated once, rewritten by set_clip
        self._act_shape = run_layout(scene.nodes, ACTIVATION_STRIDE, max_size)
        self._act_table = np.zeros(self._act_shape[0] * self._act_shape[1], np.float16)
        self._act_tex = self._table_texture(self._act_shape, 1, self._act_table, "f2")

        # per model: the connections, strongest first; drawing the first K is "the K strongest"
        self.edges_uploaded = min(scene.edges, scene.edges if max_edges is None else max(0, int(max_edges)))
        e = self.edges_uploaded
        width, height = run_layout(e, 1, max_size, "connections")
        packed = np.zeros((width * height, 2), np.uint32)
        pack_edges(scene.edge_src[:e], scene.edge_dst[:e], scene.edge_weight[:e], out=packed[:e])
        self._edge_tex = self._table_texture((width, height), 2, packed, "u4")  # no copy: 8 bytes a connection
        del packed
        self.bytes_uploaded_model = (self._node_tex.width * self._node_tex.height * 16 + palette.nbytes
                                     + self._edge_tex.width * self._edge_tex.height * 8)

        self._vaos = {name: ctx.vertex_array(prog, []) for name, prog in self._programs.items()}
        self.resize(*self.size)
        log.info("map renderer: %d neurons, %d of %d connections on the GPU (%.1f MB)", scene.nodes,
                 self.edges_uploaded, scene.edges, self.bytes_uploaded_model / 1e6)

    # -- resources ----------------------------------------------------------------------------

    # texture units, fixed for the life of the renderer so sampler uniforms are set once
    UNITS = {"u_nodes": 0, "u_activations": 1, "u_palette": 2, "u_edges": 3, "u_source": 4, "u_scene": 5,
             "u_bloom_level": 6, "u_halo_field": 7, "u_glow": 8, "u_picture": 9}

    def _load_programs(self) -> dict[str, moderngl.Program]:
        pairs = {
            "nodes": ("nodes.vert.glsl", "nodes.frag.glsl"),
            "edges": ("edges.vert.glsl", "edges.frag.glsl"),
            "halo": ("halo.vert.glsl", "halo.frag.glsl"),
            "bloom_prefilter": ("fullscreen.vert.glsl", "bloom_prefilter.frag.glsl"),
            "bloom_down": ("fullscreen.vert.glsl", "bloom_down.frag.glsl"),
            "bloom_up": ("fullscreen.vert.glsl", "bloom_up.frag.glsl"),
            "glow": ("fullscreen.vert.glsl", "glow.frag.glsl"),
            "composite": ("fullscreen.vert.glsl", "composite.frag.glsl"),
            "upscale": ("fullscreen.vert.glsl", "upscale.frag.glsl"),
        }
        programs = {}
        for name, (vert, frag) in pairs.items():
            try:
                prog = self.ctx.program(vertex_shader=load_shader(vert), fragment_shader=load_shader(frag))
            except moderngl.Error as err:
                for made in programs.values():
                    made.release()
                detail = next((line.strip() for line in str(err).splitlines() if "error" in line.lower()), str(err).strip())
                raise ImmersionsError(f"shader {vert} / {frag} does not compile: {detail} (fix it in {shaders_dir()})") from None
            for uniform, unit in self.UNITS.items():
                if uniform in prog:
                    prog[uniform].value = unit
            if "Frame" in prog:
                prog["Frame"].binding = 0
            programs[name] = prog
        return programs

    def _table_texture(self, size, components, data, dtype) -> moderngl.Texture:
        tex = self.ctx.texture(size, components, data, dtype=dtype)
        tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
        tex.repeat_x = tex.repeat_y = False
        return tex

    def _release_targets(self) -> None:
        for obj in ([self._hdr, self._hdr_fbo, self._output, self._output_fbo, self._halo, self._halo_fbo,
                     self._glow, self._glow_fbo, self._picture, self._picture_fbo]
                    + [o for level in self._bloom_levels for o in level]):
            if obj is not None:
                obj.release()
        self._bloom_levels = []

    def resize(self, width: int, height: int) -> None:
        """Match the viewport's size in pixels (call it from the window's resize event)."""
        width, height = max(1, int(width)), max(1, int(height))
        self._release_targets()
        self.size = (width, height)
        self._draw_size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        ctx = self.ctx
        self._hdr = ctx.texture(self._draw_size, 4, dtype="f2")
        self._hdr.repeat_x = self._hdr.repeat_y = False
        self._hdr_fbo = ctx.framebuffer([self._hdr])
        self._output = ctx.renderbuffer(self.size, 4)
        self._output_fbo = ctx.framebuffer([self._output])
        self._picture = self._picture_fbo = None
        if self._draw_size != self.size:  # the composite's picture at the smaller size, to scale up
            self._picture = ctx.texture(self._draw_size, 4)
            self._picture.repeat_x = self._picture.repeat_y = False
            self._picture_fbo = ctx.framebuffer([self._picture])
        # the halo, bloom and glow keep a quarter of the view's size whatever the scale: they
        # are cheap there, and the halo's thin outline stays sharp
        glow_size = (max(1, width // GLOW_SCALE), max(1, height // GLOW_SCALE))
        self._halo, self._halo_fbo = self._target(glow_size, 2)  # a field for each deck's selection
        self._glow, self._glow_fbo = self._target(glow_size, 4)
        w, h = glow_size
        while len(self._bloom_levels) < MAX_BLOOM_LEVELS and min(w, h) >= MIN_BLOOM_SIZE:
            self._bloom_levels.append(self._target((w, h), 4))
            w, h = w // 2, h // 2
        if self._last_target is not None and self._last_target is not ctx.screen:
            self._last_target = None

    def _target(self, size, components) -> tuple[moderngl.Texture, moderngl.Framebuffer]:
        """A float texture to draw into (filtered, clamped at its edges) and its framebuffer."""
        tex = self.ctx.texture(size, components, dtype="f2")
        tex.repeat_x = tex.repeat_y = False
        return tex, self.ctx.framebuffer([tex])

    def release(self) -> None:
        """Free the GPU resources (the renderer cannot draw afterwards)."""
        self._release_targets()
        for obj in [self._node_tex, self._palette_tex, self._act_tex, self._edge_tex, self._frame_ubo,
                    *self._vaos.values(), *self._programs.values()]:
            if obj is not None:
                obj.release()

    # -- per clip -------------------------------------------------------------------------------

    def set_clip(self, activations: np.ndarray, selection: np.ndarray | None = None,
                 quieted: np.ndarray | None = None, selection_b: np.ndarray | None = None,
                 quieted_b: np.ndarray | None = None) -> None:
        """A new clip's activation table (float16 [N, 64], normalized), selection (bool [N]) and
        the selected neurons that are kept quiet (bool [N]; drawn in their own colour): written
        into the GPU as one texture upload. With two decks, `selection` and `quieted` are deck
        A's and `selection_b` and `quieted_b` deck B's: each deck's selection has its own halo."""
        n = self.scene.nodes
        acts = np.asarray(activations)
        if acts.shape != (n, FRAMES_PER_LOOP):
            raise ImmersionsError(
                f"activations of shape {acts.shape} do not match this map ({n} neurons x {FRAMES_PER_LOOP} frames); "
                "load the layout of the model that is dreaming")
        sel, quiet, sel_b, quiet_b = (np.zeros(n, bool) if m is None else np.asarray(m, bool).reshape(-1)
                                      for m in (selection, quieted, selection_b, quieted_b))
        if any(m.shape != (n,) for m in (sel, quiet, sel_b, quiet_b)):
            raise ImmersionsError(f"selection of {sel.size} neurons does not match this map ({n}); load the matching layout")
        table = self._act_table[: n * ACTIVATION_STRIDE].reshape(n, ACTIVATION_STRIDE)
        # float16 overflows to inf and a NaN would smear through the bloom: clamp both away
        np.clip(np.nan_to_num(acts.astype(np.float16, copy=False), nan=0.0, posinf=16.0, neginf=-16.0),
                -16.0, 16.0, out=table[:, :FRAMES_PER_LOOP])
        table[:, FRAMES_PER_LOOP] = selection_flags(sel, quiet, sel_b, quiet_b)
        self._act_tex.write(self._act_table)
        sel = sel | sel_b
        if not np.array_equal(sel, self._selection):
            self._selection = sel.copy()
            self._selection_changed = True
        self.stats = RenderStats(self.stats.nodes_drawn, self.stats.edges_drawn, self.stats.bytes_uploaded_last_frame,
                                 self._act_table.nbytes, self.stats.frames)

    @property
    def activation_texture_bytes(self) -> int:
        return self._act_tex.width * self._act_tex.height * 2

    # -- camera -------------------------------------------------------------------------------

    def home_pose(self) -> Pose:
        """The pose that shows the whole map, its long axis along the screen's wide side."""
        rotation = self.camera.pose.rotation if hasattr(self, "camera") else 0.0
        return pose_to_fit(self._unit_positions, self.size, margin=0.92, rotation=rotation, orient=True)

    def selection_pose(self) -> Pose:
        """The pose that frames the selected neurons, turned along their long axis."""
        if not self._selection.any():
            return self.home_pose()
        return pose_to_fit(self._unit_positions[self._selection], self.size, margin=0.6,
                           rotation=self.camera.pose.rotation, orient=True)

    def follow_selection(self) -> None:
        """Glide to the selection (from a key, or when the selection changes while following)."""
        self.camera.glide_to(self.selection_pose())

    def show_all(self) -> None:
        """Glide back to the whole map (a key for the performer)."""
        self.camera.glide_to(self.home_pose())

    def project(self, positions: np.ndarray) -> np.ndarray:
        """Layout coordinates (as in Scene.positions) -> pixel coordinates (origin top-left)."""
        unit = (np.asarray(positions, dtype=np.float64) - self._fit_center) * self._fit_scale
        return world_to_pixels(unit, self.camera.pose, self.size)

    def pick(self, pixel: tuple[float, float], radius: float = 8.0) -> int | None:
        """The neuron drawn nearest to `pixel` (a mouse position), if one is within `radius` pixels."""
        d = np.linalg.norm(self.project(self.scene.positions) - np.asarray(pixel, dtype=np.float64), axis=1)
        node = int(np.argmin(d))
        return node if d[node] <= radius else None

    # -- per frame ----------------------------------------------------------------------------

    def render(self, playhead: float, dt: float, params: Snapshot | Mapping | None = None,
               target: moderngl.Framebuffer | None = None) -> None:
        """Draw one frame. `playhead`: the loop fraction (0..1) being heard now; `dt`: seconds
        since the last frame; `target`: a framebuffer (e.g. ctx.screen), else the renderer's own."""
        v = visuals_from(params)
        scale = render_scale(v.render_scale, self._auto_scale)
        if scale != self.scale:
            self.scale = scale
            self.resize(*self.size)
        self._time += max(dt, 0.0)
        if v.camera_follow and (self._selection_changed or not self._was_following):
            self.follow_selection()
        self._was_following, self._selection_changed = v.camera_follow, False
        pose = self.camera.update(dt, v.camera_ease)

        edges = min(int(v.edge_count), self.edges_uploaded) if v.edge_brightness > 0 else 0
        bloom = v.bloom and v.bloom_intensity > 0 and bool(self._bloom_levels)
        halo = bool(self._selection.any())
        self._write_frame(pose, playhead, v, bloom, halo)

        ctx = self.ctx
        self._node_tex.use(self.UNITS["u_nodes"])
        self._act_tex.use(self.UNITS["u_activations"])
        self._palette_tex.use(self.UNITS["u_palette"])
        self._edge_tex.use(self.UNITS["u_edges"])
        ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        ctx.enable(moderngl.BLEND | moderngl.PROGRAM_POINT_SIZE)
        ctx.blend_equation = moderngl.FUNC_ADD

        self._draw_scene(edges)
        if halo:
            self._draw_halo()
        if bloom:
            self._draw_bloom()
        if bloom or halo:
            self._draw_glow()
        target = target if target is not None else self._output_fbo
        self._composite(target, bloom or halo, self._map_box(pose, v if bloom else None, halo))
        ctx.blend_func = moderngl.DEFAULT_BLENDING
        ctx.blend_equation = moderngl.FUNC_ADD
        self._frames += 1
        self.stats = RenderStats(self.scene.nodes, edges, FRAME_BYTES, self.stats.bytes_uploaded_last_clip, self._frames)

    def _write_frame(self, pose: Pose, playhead: float, v: Visuals, bloom: bool, halo: bool) -> None:
        """The frame's one upload: FRAME_FIELDS, as shaders/frame.glsl declares them."""
        width, height = self._draw_size
        k = pixels_per_unit(pose, self._draw_size)
        res = height / 720.0  # sprite sizes are given for a 720-pixel-high view
        f = self._frame_block
        f[0] = (pose.center[0], pose.center[1], k * np.cos(pose.rotation), k * np.sin(pose.rotation))
        f[1] = (width, height, 1.0 / width, 1.0 / height)
        f[2] = ((playhead % 1.0) * FRAMES_PER_LOOP - 0.5, self._time, 0.0, 0.0)  # frame i sits at (i + 0.5) / 64
        f[3] = (v.brightness, v.node_size * NODE_SPRITE_PX * res * min(3.0, pose.zoom ** 0.5), BASE_GLOW, 0.0)
        # a line is one pixel wide at any scale: drawn smaller and scaled up, it would cover
        # 1 / scale times the area, so it is dimmed by the scale to keep the picture's balance
        f[4] = (v.edge_brightness * self.scale, EDGE_CULL, 0.0, 0.0)
        reach = self._halo_reach(pose)
        f[5] = (HALO, reach, self._halo.width / width, HALO_OUTLINE_PX * res / reach)
        f[6] = (v.bloom_intensity, 0.25 + 0.55 * v.bloom_radius, BLOOM_THRESHOLD, BLOOM_KNEE)
        f[7] = (EXPOSURE, float(bloom or halo), float(bloom), float(halo))
        self._frame_ubo.write(f)
        self._frame_ubo.bind_to_uniform_block(0)

    def _halo_reach(self, pose: Pose) -> float:
        """Pixels from a selected neuron to the edge of its halo field: grows with the zoom (up
        to a limit), so the outlined region keeps its shape."""
        return HALO_REACH_PX * self._draw_size[1] / 720.0 * min(max(pose.zoom, 1.0), HALO_ZOOM_LIMIT)

    def _draw_scene(self, edges: int) -> None:
        """Connections, then neurons, added up in the HDR scene."""
        self._hdr_fbo.use()
        self._hdr_fbo.viewport = (0, 0, *self._draw_size)
        self._hdr_fbo.clear(0.0, 0.0, 0.0, 0.0)
        self.ctx.blend_func = moderngl.ONE, moderngl.ONE
        if edges:
            draw(self._vaos["edges"], moderngl.LINES, 2 * edges)
        draw(self._vaos["nodes"], moderngl.POINTS, self.scene.nodes)

    def _draw_halo(self) -> None:
        """Distance field of the selection: the MAX of one cone per selected neuron."""
        self._halo_fbo.use()
        self._halo_fbo.viewport = (0, 0, self._halo.width, self._halo.height)
        self._halo_fbo.clear(0.0)
        self.ctx.blend_equation = moderngl.MAX
        draw(self._vaos["halo"], moderngl.POINTS, self.scene.nodes)
        self.ctx.blend_equation = moderngl.FUNC_ADD

    def _draw_bloom(self) -> None:
        """Bright-pass into the first level, blur down the chain, then back up."""
        ctx, unit = self.ctx, self.UNITS["u_source"]
        ctx.disable(moderngl.BLEND)
        source = self._hdr
        for i, (tex, fbo) in enumerate(self._bloom_levels):
            source.use(unit)
            fbo.use()
            fbo.viewport = (0, 0, tex.width, tex.height)
            draw(self._vaos["bloom_prefilter" if i == 0 else "bloom_down"], moderngl.TRIANGLES, 3)
            source = tex
        # back up: each level takes on a blurred copy of the one below, weighted by the radius
        ctx.enable(moderngl.BLEND)
        ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        for (tex, fbo), (low, _) in zip(self._bloom_levels[-2::-1], self._bloom_levels[:0:-1]):
            low.use(unit)
            fbo.use()
            fbo.viewport = (0, 0, tex.width, tex.height)
            draw(self._vaos["bloom_up"], moderngl.TRIANGLES, 3)

    def _draw_glow(self) -> None:
        """Bloom (scaled by its intensity) and the halo's outline, in one quarter-size texture."""
        self.ctx.disable(moderngl.BLEND)
        if self._bloom_levels:
            self._bloom_levels[0][0].use(self.UNITS["u_bloom_level"])
        self._halo.use(self.UNITS["u_halo_field"])
        self._glow_fbo.use()
        self._glow_fbo.viewport = (0, 0, self._glow.width, self._glow.height)
        draw(self._vaos["glow"], moderngl.TRIANGLES, 3)

    def _map_box(self, pose: Pose, bloom: Visuals | None, halo: bool) -> tuple[int, int, int, int] | None:
        """The part of the view the map (with its sprites, halo and bloom) can light, as a GL
        scissor box (x, y from the bottom-left, width, height); None when that is all of it.
        The bloom's reach was measured: beyond this margin it adds less than 2/255."""
        width, height = self.size
        corners = world_to_pixels(self._unit_corners, pose, self.size)
        reach = 0.0 if bloom is None else bloom.bloom_radius * (0.08 + 0.02 * bloom.bloom_intensity)
        margin = height * (0.06 + reach) + (self._halo_reach(pose) * height / self._draw_size[1] if halo else 0.0)
        x0, y0 = np.floor(corners.min(axis=0) - margin).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0) + margin).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if (x0, y0, x1, y1) == (0, 0, width, height):
            return None
        return (x0, height - y1, max(x1 - x0, 0), max(y1 - y0, 0))

    def _composite(self, target: moderngl.Framebuffer, glow: bool, box: tuple[int, int, int, int] | None) -> None:
        """Scene + glow, tone mapped into the target: black outside the map's box, and the
        full-size pass (the most expensive one on a CPU) only inside it. Drawn smaller than
        the view (render_scale), the picture is tone mapped at its own size and then scaled
        up into the target by a pass of one 8-bit texture read a pixel."""
        self.ctx.disable(moderngl.BLEND)
        self._hdr.use(self.UNITS["u_scene"])
        if glow:
            self._glow.use(self.UNITS["u_glow"])
        if self._picture_fbo is not None:
            k = self._draw_size[0] / self.size[0], self._draw_size[1] / self.size[1]
            inner = None if box is None else (
                int(box[0] * k[0]), int(box[1] * k[1]), int(np.ceil(box[2] * k[0])) + 2, int(np.ceil(box[3] * k[1])) + 2)
            self._pass(self._picture_fbo, self._draw_size, inner, "composite")
            self._picture.use(self.UNITS["u_picture"])
            self._pass(target, self.size, box, "upscale")
        else:
            self._pass(target, self.size, box, "composite")
        self._last_target = target

    def _pass(self, target: moderngl.Framebuffer, size: tuple[int, int], box, program: str) -> None:
        target.use()
        target.viewport = (0, 0, *size)
        if box is not None:
            target.clear(0.0, 0.0, 0.0, 1.0)
            target.scissor = box
        draw(self._vaos[program], moderngl.TRIANGLES, 3)
        target.scissor = None

    # -- read back ------------------------------------------------------------------------------

    def read_image(self) -> np.ndarray:
        """The last frame drawn, uint8 [height, width, 3], top row first (a screenshot)."""
        if self._last_target is None:
            raise ImmersionsError("nothing drawn yet: call render() before read_image()")
        width, height = self.size
        data = self._last_target.read(viewport=(0, 0, width, height), components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)[::-1].copy()
