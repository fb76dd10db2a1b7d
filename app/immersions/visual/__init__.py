"""The picture: the neuron map (scene, camera, palette, renderer, the offscreen GL context
in gl.py, video out to other applications, frame pacing) and, built on it, the stage: the
performance (performance.py), the overlay (gui.py), the window (window.py) and the
headless runner (headless.py). Only the installation, the benchmarks and the command line
import from here; nothing below does."""

from immersions.visual.camera import Camera, Pose
from immersions.visual.scene import Scene, synthetic_activations

__all__ = ["Camera", "Pose", "Scene", "synthetic_activations"]
