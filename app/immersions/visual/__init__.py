"""The picture: the neuron map (scene, camera, palette, renderer); the window and the
overlay build on it. Nothing outside visual/ imports from here."""

from immersions.visual.camera import Camera, Pose
from immersions.visual.scene import Scene, synthetic_activations

__all__ = ["Camera", "Pose", "Scene", "synthetic_activations"]
