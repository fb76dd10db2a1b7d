"""The OpenGL context for drawing without a window: the headless runner, the installation's
offscreen mode, the benchmarks and the tests all open theirs here."""

from __future__ import annotations

import moderngl

from immersions.errors import ImmersionsError


def offscreen_context() -> moderngl.Context:
    """A headless OpenGL 3.3+ context on EGL (a GPU, or Mesa's llvmpipe on the CPU)."""
    try:
        return moderngl.create_standalone_context(backend="egl", require=330)
    except Exception as err:  # moderngl raises plain Exceptions from the EGL loader
        raise ImmersionsError(
            f"cannot open an offscreen OpenGL context ({err}); install libegl1 libgl1-mesa-dri libegl-mesa0 libgbm1") from None
