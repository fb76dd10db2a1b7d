"""The OpenGL context for drawing without a window: the headless runner, the installation's
offscreen mode, the benchmarks and the tests all open theirs here."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import moderngl

from immersions.errors import ImmersionsError


def offscreen_context() -> moderngl.Context:
    """A headless OpenGL 3.3+ context on EGL (a GPU, or Mesa's llvmpipe on the CPU)."""
    try:
        return moderngl.create_standalone_context(backend="egl", require=330)
    except Exception as err:  # moderngl raises plain Exceptions from the EGL loader
        raise ImmersionsError(
            f"cannot open an offscreen OpenGL context ({err}); install libegl1 libgl1-mesa-dri libegl-mesa0 libgbm1") from None


# -- draw calls outside Python's GIL ----------------------------------------------------------
# moderngl holds the GIL through every GL call. On Mesa's llvmpipe a draw call does the vertex
# work, and waits for the passes it reads from, in the calling thread: drawing the map at 8 fps
# held the GIL for about 30 % of the time, and the dream thread, which needs the GIL between
# torch operations, stood still for all of it. ctypes lets go of the GIL during a foreign call,
# so the draw itself goes through ctypes: moderngl binds the program and the vertex array (a
# draw of 0 vertices), then glDrawArrays runs without the GIL (measured: 0.18 s of 5 s held
# instead of 1.53 s, the same pixels). `finish` waits for a frame the same way. Where no GL
# library can be found, moderngl does both.

def _load_gl(name: str, argtypes: list):
    if sys.platform == "win32":
        names, loader = ["opengl32"], getattr(ctypes, "WinDLL", ctypes.CDLL)
    elif sys.platform == "darwin":
        names, loader = ["/System/Library/Frameworks/OpenGL.framework/OpenGL"], ctypes.CDLL
    else:
        names, loader = ["libGL.so.1", "libOpenGL.so.0", ctypes.util.find_library("GL")], ctypes.CDLL
    for library in filter(None, names):
        try:
            function = getattr(loader(library), name)
        except (OSError, AttributeError):
            continue
        function.argtypes = argtypes
        function.restype = None
        return function
    return None


_DRAW_ARRAYS = _load_gl("glDrawArrays", [ctypes.c_uint, ctypes.c_int, ctypes.c_int])
_FINISH = _load_gl("glFinish", [])


def draw(vao: moderngl.VertexArray, mode: int, vertices: int) -> None:
    """`vao.render(mode, vertices=vertices)`, with the GL work done outside the GIL."""
    if _DRAW_ARRAYS is None or vertices <= 0:
        vao.render(mode, vertices=vertices)
        return
    vao.render(mode, vertices=0)  # binds the program and the vertex array; draws nothing
    _DRAW_ARRAYS(mode, 0, vertices)


def finish(ctx: moderngl.Context) -> None:
    """`ctx.finish()` (wait for the frame, as a buffer swap does), outside the GIL."""
    if _FINISH is None:
        ctx.finish()
    else:
        _FINISH()
