"""The neuron map renderer, on a real (headless) OpenGL context.

The drawing tests run on EGL (a GPU, or Mesa's llvmpipe on the CPU); they skip only when
no EGL context can be created. Camera, palette and scene tests need no GL at all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from immersions.registry import REGISTRY
from immersions.errors import ImmersionsError
from immersions.visual.camera import Camera, Pose, ease_pose, pixels_to_world, pose_to_fit, smoothstep, world_to_pixels
from immersions.visual.palette import activation_glow, tap_palette
from immersions.visual.renderer import Renderer, visuals_from
from immersions.visual.scene import FRAMES_PER_LOOP, Scene, synthetic_activations

SIZE = (480, 270)
STILL = {"camera_follow": False}  # the camera stays on the whole map, so project() is fixed


@pytest.fixture(scope="module")
def ctx():
    moderngl = pytest.importorskip("moderngl")
    try:
        context = moderngl.create_standalone_context(backend="egl", require=330)
    except Exception as err:  # no libEGL / no driver: nothing to draw with here
        pytest.skip(f"no EGL OpenGL 3.3 context on this machine: {err}")
    yield context
    context.release()


@pytest.fixture(scope="module")
def scene():
    return Scene.synthetic(nodes=3000, edges=20_000, taps=4, seed=3)


@pytest.fixture
def renderer(ctx, scene):
    """Draws at the view's full size, as on a GPU (on llvmpipe render_scale 0 means half)."""
    r = Renderer(ctx, scene, SIZE, auto_scale=1.0)
    yield r
    r.release()


def peak(image: np.ndarray, pixels: np.ndarray, radius: int = 1) -> np.ndarray:
    """Brightest channel in a small square around each pixel position."""
    h, w, _ = image.shape
    out = np.zeros(len(pixels))
    for i, (x, y) in enumerate(np.rint(pixels).astype(int)):
        patch = image[max(0, y - radius): min(h, y + radius + 1), max(0, x - radius): min(w, x + radius + 1)]
        out[i] = patch.max() if patch.size else 0
    return out


def on_screen(pixels: np.ndarray, margin: int = 4) -> np.ndarray:
    return ((pixels[:, 0] > margin) & (pixels[:, 0] < SIZE[0] - margin)
            & (pixels[:, 1] > margin) & (pixels[:, 1] < SIZE[1] - margin))


def far_from(pixels: np.ndarray, others: np.ndarray, distance: float) -> np.ndarray:
    d = np.linalg.norm(pixels[:, None, :] - others[None, ::7, :], axis=-1).min(axis=1)
    return d > distance


def tap_mask(scene: Scene, tap: int) -> np.ndarray:
    mask = np.zeros(scene.nodes, bool)
    mask[scene.tap_slice(tap)] = True
    return mask


# -- drawing ------------------------------------------------------------------------------


def test_active_tap_lights_its_nodes_and_leaves_the_others_dark(renderer, scene):
    active = tap_mask(scene, 1)
    acts = np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16)
    acts[active] = 4.0
    renderer.set_clip(acts, None)
    renderer.render(0.5, 1 / 60, {**STILL, "edge_brightness": 0.0})
    image = renderer.read_image()
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8

    pixels = renderer.project(scene.positions)
    lit = peak(image, pixels[active & on_screen(pixels)])
    quiet_nodes = ~active & on_screen(pixels) & far_from(pixels, pixels[active], 25)
    quiet = peak(image, pixels[quiet_nodes])
    assert len(quiet) > 100
    assert np.median(lit) > 170, "active neurons should glow brightly where project() puts them"
    assert np.percentile(quiet, 90) < 100 and np.median(lit) > 2.5 * np.median(quiet), "quiet neurons stay dim"
    assert np.median(quiet) > 3, "quiet neurons keep a faint base glow so the map's shape reads"
    assert image[:3, :3].max() < 8, "the background stays black"


def test_playhead_picks_the_frame_being_heard(renderer, scene):
    acts = np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16)
    acts[:, :32] = 4.0  # loud in the first half of the loop only
    renderer.set_clip(acts, None)
    pixels = renderer.project(scene.positions)
    sample = pixels[on_screen(pixels)][::10]

    renderer.render(0.25, 1 / 60, {**STILL, "edge_brightness": 0.0, "bloom": False})
    first_half = peak(renderer.read_image(), sample)
    renderer.render(0.75, 1 / 60, {**STILL, "edge_brightness": 0.0, "bloom": False})
    second_half = peak(renderer.read_image(), sample)
    assert np.median(first_half) > 150
    assert np.median(second_half) < 60


def test_selection_wears_a_halo(renderer, scene):
    acts = np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16)
    selected = np.zeros(scene.nodes, bool)
    selected[scene.tap_slice(2)] = True
    params = {**STILL, "bloom": False}

    renderer.set_clip(acts, None)
    renderer.render(0.0, 1 / 60, params)
    plain = renderer.read_image().astype(int)
    renderer.set_clip(acts, selected)
    renderer.render(0.0, 1 / 60, params)
    haloed = renderer.read_image().astype(int)

    diff = np.abs(haloed - plain).max(axis=2)
    pixels = renderer.project(scene.positions)
    lo, hi = pixels[selected].min(axis=0), pixels[selected].max(axis=0)
    x0, y0 = np.maximum(lo - 20, 0).astype(int)
    x1, y1 = np.minimum(hi + 20, SIZE).astype(int)
    around = diff[y0:y1, x0:x1]
    assert (around > 40).sum() > 200, "a bright outline should appear around the selected region"
    elsewhere = diff.copy()
    elsewhere[y0:y1, x0:x1] = 0
    assert elsewhere.max() < 8, "the halo belongs to the selection only"


def test_each_decks_selection_wears_its_own_halo(renderer, scene):
    """Deck A's selection (tap 1) in the warm halo, deck B's (tap 3) in the mint one."""
    from immersions.visual.renderer import selection_flags

    acts = np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16)
    a, b = tap_mask(scene, 1), tap_mask(scene, 3)
    params = {**STILL, "bloom": False, "edge_brightness": 0.0}
    renderer.set_clip(acts, None)
    renderer.render(0.0, 1 / 60, params)
    plain = renderer.read_image().astype(float)
    renderer.set_clip(acts, a, None, b, None)
    renderer.render(0.0, 1 / 60, params)
    haloed = renderer.read_image().astype(float)
    diff = haloed - plain
    pixels = renderer.project(scene.positions)

    def ring(mask, others):  # halo light near this deck's neurons, away from the other deck's
        lit = np.abs(diff).max(axis=2) > 30
        ys, xs = np.nonzero(lit)
        found = np.stack([xs, ys], axis=1).astype(float)
        near = far_from(found, pixels[others], 40) & ~far_from(found, pixels[mask], 25)
        return diff[ys[near], xs[near]]

    warm, mint = ring(a, b), ring(b, a)
    assert len(warm) > 50 and len(mint) > 50
    assert np.median(warm[:, 0] - warm[:, 1]) > 10  # A: red over green (warm white)
    assert np.median(mint[:, 1] - mint[:, 0]) > 10  # B: green over red (mint)
    # one deck alone keeps the flags it always had; both decks' neurons are 4
    flags = selection_flags(np.array([1, 1, 0, 0, 1], bool), np.array([0, 1, 0, 0, 0], bool),
                            np.array([0, 0, 1, 1, 1], bool), np.array([0, 0, 0, 1, 0], bool))
    assert flags.tolist() == [1.0, 2.0, 3.0, 5.0, 4.0]


def test_quieted_neurons_glow_frost_instead_of_their_taps_hue(renderer, scene):
    from immersions.visual.palette import QUIET_COLOUR_SRGB

    acts = np.full((scene.nodes, FRAMES_PER_LOOP), 4.0, np.float16)
    selected = tap_mask(scene, 1) | tap_mask(scene, 2)
    quieted = tap_mask(scene, 2)
    params = {**STILL, "bloom": False, "edge_brightness": 0.0}
    renderer.set_clip(acts, selected)
    renderer.render(0.0, 1 / 60, params)
    excited = renderer.read_image().astype(float)
    renderer.set_clip(acts, selected, quieted)
    renderer.render(0.0, 1 / 60, params)
    image = renderer.read_image().astype(float)

    pixels = renderer.project(scene.positions)
    spots = np.rint(pixels[quieted & on_screen(pixels) & far_from(pixels, pixels[~quieted], 6)]).astype(int)
    assert len(spots) > 20

    def chroma(img):  # how far from grey, at the neurons' centres
        rgb = img[spots[:, 1], spots[:, 0]]
        return rgb.max(axis=1) - rgb.min(axis=1), rgb

    before, _ = chroma(excited)
    after, rgb = chroma(image)
    assert np.median(after) < 0.6 * np.median(before), "quieted neurons lose their tap's saturated hue"
    frost = np.array(QUIET_COLOUR_SRGB)
    assert np.median(rgb[:, 2]) >= np.median(rgb[:, 0]), "a cool frost: blue at least as bright as red"
    assert frost[2] > frost[0]
    # the excited tap keeps its hue
    others = np.rint(pixels[tap_mask(scene, 1) & on_screen(pixels) & far_from(pixels, pixels[quieted], 6)]).astype(int)
    assert np.abs(image[others[:, 1], others[:, 0]] - excited[others[:, 1], others[:, 0]]).max() < 8


def test_bloom_spreads_light_beyond_the_sprite(renderer, scene):
    acts = np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16)
    acts[scene.tap_slice(0)] = 5.0
    renderer.set_clip(acts, None)
    renderer.render(0.0, 1 / 60, {**STILL, "edge_brightness": 0.0, "bloom": True, "bloom_intensity": 2.0})
    bloomed = renderer.read_image().astype(int)
    renderer.render(0.0, 1 / 60, {**STILL, "edge_brightness": 0.0, "bloom": False})
    plain = renderer.read_image().astype(int)

    pixels = renderer.project(scene.positions)
    cluster = pixels[scene.tap_slice(0)]
    # a ring of points just outside the lit cluster's sprites
    ys, xs = np.mgrid[0:SIZE[1]:3, 0:SIZE[0]:3]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
    d = np.linalg.norm(grid[:, None, :] - cluster[None, ::5, :], axis=-1).min(axis=1)
    ring = grid[(d > 8) & (d < 16)].astype(int)
    glow_on = bloomed[ring[:, 1], ring[:, 0]].max(axis=1)
    glow_off = plain[ring[:, 1], ring[:, 0]].max(axis=1)
    assert glow_on.mean() > glow_off.mean() + 10, "bloom should light the space around bright neurons"
    assert bloomed.sum() > plain.sum()


def test_edges_drawn_follow_edge_count(renderer, scene):
    acts = np.full((scene.nodes, FRAMES_PER_LOOP), 4.0, np.float16)  # every source active: lines light up
    renderer.set_clip(acts, None)
    images = {}
    for k in (1_000, 5_000, 50_000):
        renderer.render(0.0, 1 / 60, {**STILL, "edge_count": k, "edge_brightness": 2.0, "bloom": False})
        assert renderer.stats.edges_drawn == min(k, scene.edges)
        images[k] = renderer.read_image().astype(int)
    assert renderer.stats.nodes_drawn == scene.nodes
    assert images[5_000].sum() > images[1_000].sum(), "more connections, more light"
    renderer.render(0.0, 1 / 60, {**STILL, "edge_brightness": 0.0, "bloom": False})
    assert renderer.stats.edges_drawn == 0
    assert images[1_000].sum() > renderer.read_image().astype(int).sum(), "the strongest lines are visible"


def test_uploads_stay_within_budget(renderer, scene):
    acts = synthetic_activations(scene, seed=1)
    renderer.set_clip(acts, tap_mask(scene, 1))
    clip_bytes = renderer.stats.bytes_uploaded_last_clip
    assert clip_bytes == renderer.activation_texture_bytes, "one clip = one activation texture"
    assert clip_bytes < scene.nodes * (FRAMES_PER_LOOP + 1) * 2 + 4096 * 2  # float16, one padded row at most
    for i in range(3):
        renderer.render(i / 3, 1 / 60, REGISTRY.defaults())
        assert 0 < renderer.stats.bytes_uploaded_last_frame <= 1024
    assert renderer.stats.bytes_uploaded_last_clip == clip_bytes  # frames upload no activations


def test_draws_into_a_given_framebuffer_and_resizes(ctx, renderer, scene):
    renderer.set_clip(synthetic_activations(scene), None)
    target = ctx.simple_framebuffer(SIZE)
    renderer.render(0.3, 1 / 60, STILL, target=target)
    image = renderer.read_image()
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.max() > 100
    renderer.resize(200, 100)
    renderer.render(0.3, 1 / 60, STILL)
    assert renderer.read_image().shape == (100, 200, 3)
    target.release()


def test_render_scale_draws_the_scene_smaller_and_fills_the_view(ctx, scene):
    """render_scale 0 (automatic) is half size on this software renderer: the scene is drawn
    at a quarter of the pixels, and the composite scales it up to fill the view, so the lit
    neurons still glow where project() puts them; 1 draws at full size, live."""
    assert "llvmpipe" in ctx.info["GL_RENDERER"] or "softpipe" in ctx.info["GL_RENDERER"]
    r = Renderer(ctx, scene, SIZE)
    try:
        active = tap_mask(scene, 1)
        acts = np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16)
        acts[active] = 4.0
        r.set_clip(acts, None)
        images = {}
        for scale in (0.0, 1.0):
            r.render(0.5, 1 / 60, {**STILL, "edge_brightness": 0.0, "render_scale": scale})
            images[scale] = r.read_image()
            assert r.scale == (0.5 if scale == 0 else 1.0)
            assert r._hdr.size == tuple(round(n * r.scale) for n in SIZE)
        half, full = images[0.0], images[1.0]
        assert half.shape == full.shape == (SIZE[1], SIZE[0], 3)
        pixels = r.project(scene.positions)
        lit = active & on_screen(pixels)
        quiet = ~active & on_screen(pixels) & far_from(pixels, pixels[active], 25)
        # scaled up, each lit sprite still shows where it belongs, across the whole view
        assert np.median(peak(half, pixels[lit], radius=2)) > 140
        assert np.median(peak(half, pixels[quiet], radius=2)) < 0.5 * np.median(peak(half, pixels[lit], radius=2))
        # every neuron lit: those outside the lower-left quarter (where a picture drawn at half
        # size would stay if nothing scaled it up) glow too
        r.set_clip(np.full((scene.nodes, FRAMES_PER_LOOP), 4.0, np.float16), None)
        r.render(0.5, 1 / 60, {**STILL, "edge_brightness": 0.0})
        far = on_screen(pixels) & ((pixels[:, 0] > 0.55 * SIZE[0]) | (pixels[:, 1] < 0.45 * SIZE[1]))
        assert far.sum() > 100 and np.median(peak(r.read_image(), pixels[far], radius=2)) > 140
        r.set_clip(acts, None)
        # the same picture, softer: blurred alike, the two frames agree closely
        def blur(image):
            x = image.astype(float).mean(axis=2)
            return sum(np.roll(np.roll(x, dy, 0), dx, 1) for dy in range(-3, 4) for dx in range(-3, 4)) / 49
        assert np.corrcoef(blur(half).ravel(), blur(full).ravel())[0, 1] > 0.9
    finally:
        r.release()


def test_clip_of_the_wrong_model_is_refused(renderer, scene):
    with pytest.raises(ImmersionsError, match="do not match"):
        renderer.set_clip(np.zeros((scene.nodes + 1, FRAMES_PER_LOOP), np.float16), None)
    with pytest.raises(ImmersionsError, match="selection"):
        renderer.set_clip(np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16), np.zeros(5, bool))


def test_camera_follows_a_new_selection(renderer, scene):
    selected = tap_mask(scene, 3)
    renderer.set_clip(np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16), selected)
    params = {"camera_follow": True, "camera_ease": 0.5, "bloom": False}
    renderer.render(0.0, 0.0, params)
    assert renderer.camera.gliding
    for _ in range(6):
        renderer.render(0.0, 0.1, params)
    assert not renderer.camera.gliding
    centre = renderer.project(scene.positions[selected]).mean(axis=0)
    assert np.linalg.norm(centre - np.array(SIZE) / 2) < 0.15 * SIZE[1], "the selection is in the middle"
    assert renderer.camera.pose.zoom > renderer.home_pose().zoom, "and the camera came closer"
    # a free move takes over; the same selection again does not pull the camera back
    renderer.camera.pan(40, 0, SIZE)
    moved = renderer.camera.pose
    renderer.set_clip(np.zeros((scene.nodes, FRAMES_PER_LOOP), np.float16), selected)
    renderer.render(0.0, 0.1, params)
    assert renderer.camera.pose == moved


# -- camera math (no GL) ----------------------------------------------------------------------


def test_glide_reaches_the_target_after_camera_ease_seconds():
    target = Pose((0.5, -0.25), 4.0, 1.0)
    camera = Camera()
    camera.glide_to(target)
    for _ in range(40):
        camera.update(0.1, 4.0)
    assert camera.pose == target and not camera.gliding
    camera.update(0.1, 4.0)
    assert camera.pose == target


def test_glide_starts_and_lands_softly():
    assert smoothstep(0.0) == 0.0 and smoothstep(1.0) == 1.0 and smoothstep(0.5) == 0.5
    eps = 1e-4
    assert smoothstep(eps) / eps < 1e-3 and (1 - smoothstep(1 - eps)) / eps < 1e-3  # zero velocity at both ends
    a, b = Pose((0.0, 0.0), 1.0, 0.0), Pose((1.0, 0.0), 8.0, math.pi / 2)
    xs = [ease_pose(a, b, s).center[0] for s in np.linspace(0, 1, 101)]
    steps = np.diff(xs)
    assert np.all(steps >= 0) and steps[0] < 0.1 * steps.max() and steps[-1] < 0.1 * steps.max()
    assert ease_pose(a, b, 0.5).zoom == pytest.approx(math.sqrt(8.0))  # zoom eases geometrically
    # rotation takes the short way round
    assert abs(ease_pose(Pose(rotation=3.0), Pose(rotation=-3.0), 0.5).rotation) == pytest.approx(math.pi, abs=0.02)


def test_free_camera_moves_and_interrupts_a_glide():
    size = (800, 600)
    camera = Camera()
    camera.glide_to(Pose((1.0, 1.0), 2.0, 0.0))
    camera.update(0.5, 4.0)
    camera.pan(100, 0, size)  # drag right: the map follows the mouse
    assert not camera.gliding
    before = world_to_pixels(np.array([0.0, 0.0]), camera.pose, size)
    camera.pan(50, -20, size)
    after = world_to_pixels(np.array([0.0, 0.0]), camera.pose, size)
    assert after == pytest.approx(before + np.array([50, -20]))

    anchor = np.array([600.0, 200.0])
    under = pixels_to_world(anchor, camera.pose, size)
    camera.zoom_at(2.0, tuple(anchor), size)
    assert world_to_pixels(under, camera.pose, size) == pytest.approx(anchor)  # zooms about the mouse
    zoom = camera.pose.zoom
    camera.rotate(0.3)
    assert camera.pose.rotation == pytest.approx(0.3) and camera.pose.zoom == zoom


def test_projection_round_trips_and_fits():
    pose = Pose((0.2, -0.1), 2.5, 0.7)
    size = (1280, 720)
    pts = np.random.default_rng(0).normal(size=(50, 2))
    assert pixels_to_world(world_to_pixels(pts, pose, size), pose, size) == pytest.approx(pts)
    fit = pose_to_fit(pts, size, margin=0.8)
    px = world_to_pixels(pts, fit, size)
    assert px.min() >= 0 and px[:, 0].max() <= size[0] and px[:, 1].max() <= size[1]
    # a long thin group is turned to lie along the wide side of the screen
    line = np.stack([np.linspace(0, 0.3, 20), np.linspace(0, 1.0, 20)], axis=1)
    turned = world_to_pixels(line, pose_to_fit(line, size, orient=True), size)
    assert np.ptp(turned[:, 0]) > 5 * np.ptp(turned[:, 1])


# -- palette, parameters, scene (no GL) ---------------------------------------------------------


def test_tap_palette_reads_on_a_projector():
    colours = tap_palette(9)
    assert colours.shape == (9, 3) and colours.dtype == np.float32
    luminance = colours @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert luminance.min() > 0.15, "no colour so dark that a projector loses it"
    gaps = np.linalg.norm(np.diff(colours, axis=0), axis=1)
    assert gaps.min() > 0.05, "neighbouring taps are told apart"
    assert activation_glow(np.array([0.0, 3.0, 99.0])) == pytest.approx([0.0, 1.0, 2.0])


def test_visual_parameters_come_from_a_snapshot_or_a_mapping():
    assert visuals_from(REGISTRY.defaults()).edge_count == REGISTRY["edge_count"].default
    assert visuals_from({"bloom": False}).bloom is False
    with pytest.raises(ImmersionsError, match="brightness"):
        visuals_from({"brightness": 99.0})


def test_scene_is_checked_when_built():
    s = Scene.synthetic(500, 2000, 3, seed=1)
    assert s.positions.shape == (500, 2) and s.edges == 2000
    assert np.all(np.diff(s.edge_weight) <= 0) and s.edge_weight[0] == 1.0
    assert np.all(np.diff(s.node_tap) >= 0) and set(np.unique(s.node_tap)) == {0, 1, 2}
    with pytest.raises(ImmersionsError, match="sorted strongest first"):
        Scene(s.positions, s.node_tap, s.tap_names, s.edge_src, s.edge_dst, s.edge_weight[::-1].copy())
    with pytest.raises(ImmersionsError, match="outside"):
        Scene(s.positions, s.node_tap, s.tap_names, s.edge_src + 1000, s.edge_dst, s.edge_weight)


def test_pick_finds_the_neuron_under_the_mouse(renderer, scene):
    pixels = renderer.project(scene.positions)
    node = int(np.argmin(np.abs(pixels - np.array(SIZE) / 2).sum(axis=1)))
    assert renderer.pick(tuple(pixels[node])) == node
    assert renderer.pick((-500.0, -500.0)) is None


def test_a_broken_shader_is_reported_in_one_line(ctx, scene, tmp_path, monkeypatch):
    import shutil

    from immersions.paths import shaders_dir

    folder = tmp_path / "shaders"
    shutil.copytree(shaders_dir(), folder)
    (folder / "nodes.frag.glsl").write_text("#version 330 core\nvoid main() { this is not glsl; }\n")
    monkeypatch.setenv("IMMERSIONS_SHADERS", str(folder))
    with pytest.raises(ImmersionsError, match="nodes.frag.glsl does not compile") as err:
        Renderer(ctx, scene, SIZE)
    assert "\n" not in str(err.value)


def test_bench_reports_fps_for_each_setting(ctx, scene):
    from immersions.bench.render import bench_scene

    report = bench_scene(scene, sizes=((160, 90),), frames=2, warmup=1, edge_counts=(1_000,), bloom=(True, False), ctx=ctx)
    assert [r["bloom"] for r in report["results"]] == [True, False]
    assert all(r["fps"] > 0 and r["edges_drawn"] == 1_000 for r in report["results"])
    assert report["upload"]["bytes_per_frame"] <= 1024


def test_draw_calls_through_ctypes_give_the_same_pixels_as_moderngl(ctx, renderer, scene, monkeypatch):
    """The renderer's draw calls go to the GL library through ctypes (which lets go of the
    GIL while Mesa draws, so the dream thread keeps running); here that path is taken, and
    it draws exactly what moderngl's own draw calls draw."""
    from immersions.visual import gl

    assert gl._DRAW_ARRAYS is not None and gl._FINISH is not None  # found on this machine
    renderer.set_clip(synthetic_activations(scene), np.arange(scene.nodes) < 50)
    images = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(gl, "_DRAW_ARRAYS", None)
            monkeypatch.setattr(gl, "_FINISH", None)
        renderer.render(0.25, 0.0, STILL)
        gl.finish(ctx)
        images.append(renderer.read_image())
    assert images[0].max() > 100 and np.array_equal(images[0], images[1])
