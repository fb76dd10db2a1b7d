"""Where resource folders are: resolved here once, nowhere else.

Order: an environment variable (IMMERSIONS_MODELS, IMMERSIONS_ASSETS, IMMERSIONS_SHADERS), then the
checkout this package runs from, then data installed beside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

from immersions.errors import ImmersionsError

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent.parent  # app/immersions -> repository root


def _resource_dir(name: str) -> Path:
    env = os.environ.get(f"IMMERSIONS_{name.upper()}")
    if env:
        return Path(env)
    for candidate in (_CHECKOUT / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise ImmersionsError(
        f"cannot find the '{name}' folder; run from a checkout or set IMMERSIONS_{name.upper()}"
    )


def models_dir() -> Path:
    return _resource_dir("models")


def assets_dir() -> Path:
    return _resource_dir("assets")


def shaders_dir() -> Path:
    return _resource_dir("shaders")


def cache_dir() -> Path:
    """Where computed data that belongs to no model folder goes (layouts of bare presets)."""
    env = os.environ.get("IMMERSIONS_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "immersions"
    return base


def config_dir() -> Path:
    """The performer's own settings (presets, controller maps saved from the overlay):
    $XDG_CONFIG_HOME/immersions, else ~/.config/immersions."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "immersions"


DEFAULT_MODEL = "full"  # the shipped ear `--model default` (and no --model at all) means


def default_model_dir() -> Path:
    """The shipped default ear: the full-band one (models/full). The name `default` means it too."""
    return models_dir() / DEFAULT_MODEL


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """A model is a folder with config.json and model.safetensors; accept a name in models/ or a path.
    A relative path that holds no model falls back to the shipped model of that name, so that
    `--model real` means the shipped ear even where the working folder has a `real/` of music.
    A path to a `.py` file is a model file (model/ear_file.py), returned as it is: only a file
    named so runs code, never a folder."""
    if name_or_path is not None and str(name_or_path).endswith(".py"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ImmersionsError(f"no model file at '{path}': give the path to a Python file whose make_ear() "
                                  "builds an ear (see docs/examples/waveform_ear/)")
        return path
    if name_or_path is None or (str(name_or_path) == "default" and not (Path("default") / "config.json").is_file()):
        path = default_model_dir()
    else:
        path = Path(name_or_path)
        shipped = models_dir() / str(name_or_path)
        if not (path / "config.json").is_file() and not path.is_absolute() and (shipped / "config.json").is_file():
            path = shipped
    if not (path / "config.json").is_file() and any(path.glob("*.py")):
        raise ImmersionsError(f"'{path}' holds Python files but no config.json; a folder never runs code: "
                              "name the model file itself (--model path/to/ear.py)")
    if not (path / "config.json").is_file():
        raise ImmersionsError(
            f"no model at '{path}': expected a folder with config.json and model.safetensors "
            "(train one with `immersions train`, see README)"
        )
    return path
