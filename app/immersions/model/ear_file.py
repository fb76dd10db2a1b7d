"""Your own ear in one file: `--model path/to/ear.py`.

The file is a Python module of the user's own, run as Python runs a script (it may do
anything a script may: that is why it is only ever run when named). It defines

    def make_ear() -> Ear: ...

returning an untrained `immersions.model.ear.Ear`; its weights are `model.safetensors` in
the file's folder (and, where they have been made, `stats.safetensors` and the layout's
cache `layout.npz`, as in a model folder). See docs/examples/waveform_ear/ear.py.

A file that raises on import, has no `make_ear`, or makes something that is not an Ear is
refused in one line, before anything else is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from immersions.errors import ImmersionsError
from immersions.model.ear import Ear

FACTORY = "make_ear"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def build_ear_file(path: str | os.PathLike) -> Ear:
    """Run the model file and call its factory: the ear, untrained."""
    path = Path(path).resolve()
    module_name = "immersions_ear_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImmersionsError(f"cannot read model file {path}: give the path to a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        factory = getattr(module, FACTORY, None)
        if not callable(factory):
            raise ImmersionsError(f"model file {path} defines no {FACTORY}(): it must define "
                                  f"`def {FACTORY}() -> Ear` (see docs/examples/waveform_ear/ear.py)")
        ear = factory()
    except ImmersionsError:
        sys.modules.pop(module_name, None)
        raise
    except BaseException as err:  # the user's code: whatever it raises is reported in one line
        sys.modules.pop(module_name, None)
        if isinstance(err, KeyboardInterrupt):
            raise
        raise ImmersionsError(f"model file {path} failed: {_one_line(err)}; fix the file "
                              "(it runs as a Python script)") from err
    if not isinstance(ear, Ear):
        sys.modules.pop(module_name, None)
        raise ImmersionsError(f"model file {path}: {FACTORY}() returned a {type(ear).__name__}, not an Ear "
                              "(subclass immersions.model.ear.Ear)")
    if not ear.taps:
        raise ImmersionsError(f"model file {path}: its ear declares no taps")
    return ear
