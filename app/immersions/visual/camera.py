"""Camera math for the neuron map: a pose (center, zoom, rotation), the projection from
layout coordinates to pixels, eased glides between poses, and free moves. No GL here.

Conventions (one place): layout coordinates are the scene's positions after the renderer
fits them into -1..1; pixel coordinates have their origin at the top-left corner, y down,
as in a screenshot or a mouse event. At zoom 1 one layout unit spans half the smaller
side of the viewport. Rotation turns the map counter-clockwise on screen (radians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

MIN_ZOOM, MAX_ZOOM = 0.2, 40.0


@dataclass(frozen=True)
class Pose:
    center: tuple[float, float] = (0.0, 0.0)  # layout point at the middle of the screen
    zoom: float = 1.0
    rotation: float = 0.0


def smoothstep(s: float) -> float:
    """0 -> 0, 1 -> 1, with zero velocity at both ends (the glide starts and lands softly)."""
    s = min(1.0, max(0.0, s))
    return s * s * (3.0 - 2.0 * s)


def wrap_angle(a: float) -> float:
    """The same angle in -pi..pi."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def ease_pose(a: Pose, b: Pose, s: float) -> Pose:
    """The pose a fraction `s` (0..1, eased) of the way from a to b. Zoom moves geometrically
    (so zooming in 2x then 2x feels even), rotation takes the short way round."""
    e = smoothstep(s)
    cx = a.center[0] + (b.center[0] - a.center[0]) * e
    cy = a.center[1] + (b.center[1] - a.center[1]) * e
    zoom = a.zoom * (b.zoom / a.zoom) ** e
    rotation = a.rotation + wrap_angle(b.rotation - a.rotation) * e
    return Pose((cx, cy), zoom, rotation)


def pixels_per_unit(pose: Pose, size: tuple[int, int]) -> float:
    return pose.zoom * 0.5 * min(size)


def world_to_pixels(points: np.ndarray, pose: Pose, size: tuple[int, int]) -> np.ndarray:
    """Layout coordinates [..., 2] -> pixel coordinates [..., 2] (origin top-left, y down)."""
    p = np.asarray(points, dtype=np.float64) - np.asarray(pose.center)
    c, s = math.cos(pose.rotation), math.sin(pose.rotation)
    k = pixels_per_unit(pose, size)
    x = (c * p[..., 0] - s * p[..., 1]) * k
    y = (s * p[..., 0] + c * p[..., 1]) * k
    return np.stack([size[0] / 2 + x, size[1] / 2 - y], axis=-1)


def pixels_to_world(pixels: np.ndarray, pose: Pose, size: tuple[int, int]) -> np.ndarray:
    """Inverse of world_to_pixels: where on the map a pixel (a mouse position) points."""
    q = np.asarray(pixels, dtype=np.float64)
    k = pixels_per_unit(pose, size)
    x = (q[..., 0] - size[0] / 2) / k
    y = (size[1] / 2 - q[..., 1]) / k
    c, s = math.cos(pose.rotation), math.sin(pose.rotation)
    return np.stack([c * x + s * y + pose.center[0], -s * x + c * y + pose.center[1]], axis=-1)


def pose_to_fit(points: np.ndarray, size: tuple[int, int], margin: float = 0.85, rotation: float = 0.0,
                orient: bool = False, min_extent: float = 0.25) -> Pose:
    """The pose that frames `points` (layout coordinates) in a viewport of `size` pixels.

    With `orient`, the map may also turn so that the points' long axis lies along the
    screen's wide side: of the two such angles the one nearer to `rotation` is tried (no
    half spins), and it is taken only if it frames the points at least 10% larger.
    `min_extent` (layout units) keeps a tiny group, or one neuron, from zooming in absurdly.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        return Pose(rotation=rotation)
    best = _fit_at(p, size, margin, rotation, min_extent)
    if orient and len(p) >= 3:
        cov = np.cov((p - p.mean(axis=0)).T)
        evals, evecs = np.linalg.eigh(cov)
        axis = math.atan2(evecs[1, 1], evecs[0, 1])
        wide = 0.0 if size[0] >= size[1] else math.pi / 2
        aligned = wide - axis
        aligned = rotation + wrap_angle(2.0 * (aligned - rotation)) / 2.0  # nearest of aligned, aligned + pi
        turned = _fit_at(p, size, margin, aligned, min_extent)
        if turned.zoom > 1.1 * best.zoom:
            best = turned
    return best


def _fit_at(p: np.ndarray, size: tuple[int, int], margin: float, rotation: float, min_extent: float) -> Pose:
    c, s = math.cos(rotation), math.sin(rotation)
    q = np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=-1)
    lo, hi = q.min(axis=0), q.max(axis=0)
    mid = (lo + hi) / 2
    center = (c * mid[0] + s * mid[1], -s * mid[0] + c * mid[1])
    extent = np.maximum(hi - lo, min_extent)
    scale = min(size[0] * margin / extent[0], size[1] * margin / extent[1])
    zoom = min(MAX_ZOOM, max(MIN_ZOOM, scale / (0.5 * min(size))))
    return Pose((float(center[0]), float(center[1])), float(zoom), float(rotation))


class Camera:
    """The view of the map: a pose that either glides (eased) toward a target or is moved
    freely by the performer. A free move ends any glide in progress."""

    def __init__(self, pose: Pose | None = None):
        self.pose = pose or Pose()
        self._start = self.pose
        self._target: Pose | None = None
        self._progress = 0.0

    @property
    def gliding(self) -> bool:
        return self._target is not None

    @property
    def target(self) -> Pose | None:
        return self._target

    def glide_to(self, target: Pose) -> None:
        """Start an eased move from wherever the camera is now to `target`."""
        self._start, self._target, self._progress = self.pose, target, 0.0

    def update(self, dt: float, duration: float) -> Pose:
        """Advance a glide by dt seconds; a glide takes `duration` seconds from start to target
        (changing the duration mid-glide only changes the remaining speed)."""
        if self._target is not None:
            self._progress = min(1.0, self._progress + max(dt, 0.0) / max(duration, 1e-6))
            self.pose = ease_pose(self._start, self._target, self._progress)
            if self._progress >= 1.0:
                self.pose, self._target = self._target, None
        return self.pose

    # -- free moves (mouse drag, wheel, keys) ---------------------------------------------

    def pan(self, dx: float, dy: float, size: tuple[int, int]) -> None:
        """Drag the map by (dx, dy) pixels (y down), as a mouse drag does."""
        self._target = None
        origin = pixels_to_world(np.array([size[0] / 2, size[1] / 2]), self.pose, size)
        moved = pixels_to_world(np.array([size[0] / 2 - dx, size[1] / 2 - dy]), self.pose, size)
        delta = moved - origin
        self.pose = replace(self.pose, center=(self.pose.center[0] + float(delta[0]), self.pose.center[1] + float(delta[1])))

    def zoom_at(self, factor: float, pixel: tuple[float, float], size: tuple[int, int]) -> None:
        """Zoom by `factor` keeping the map point under `pixel` (the mouse) where it is."""
        self._target = None
        anchor = pixels_to_world(np.asarray(pixel, dtype=np.float64), self.pose, size)
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, self.pose.zoom * factor))
        zoomed = replace(self.pose, zoom=zoom)
        drift = pixels_to_world(np.asarray(pixel, dtype=np.float64), zoomed, size) - anchor
        self.pose = replace(zoomed, center=(zoomed.center[0] - float(drift[0]), zoomed.center[1] - float(drift[1])))

    def rotate(self, angle: float) -> None:
        """Turn the map counter-clockwise by `angle` radians around the screen's center."""
        self._target = None
        self.pose = replace(self.pose, rotation=wrap_angle(self.pose.rotation + angle))
