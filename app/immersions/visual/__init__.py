"""The picture: the neuron map (scene, camera, palette, renderer), the offscreen GL context
(gl.py), video out to other applications, and frame pacing. The stage that draws it live
(the performance, its overlay and windows) is the room above, `performance/`; nothing
below imports from here."""

from immersions.visual.camera import Camera, Pose
from immersions.visual.scene import Scene, synthetic_activations

__all__ = ["Camera", "Pose", "Scene", "synthetic_activations"]
