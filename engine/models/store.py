"""Saving and loading a model folder's weights: `model.safetensors` + `config.json` (architecture and
meta); the folder's layout and file names are `engine.models.folder`'s.

A folder may also hold the model's colour network (`engine.models.colornet`): `color.safetensors`
plus a `color_net` entry in the same config.json. It lives in the model's own folder because it is
trained on that model's outputs and is useless with any other; the two are saved at different
times, so each save keeps the other's config entry.

safetensors rather than pickle so opening a model someone sent you cannot run code; the
architecture lives in JSON so a folder is rebuilt without knowing which preset made it. The
optimizer state is the trainer's business and is not stored here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.atomic import write_json, write_with
from engine.errors import UserError

from .colornet import ColorNet, build_color_net
from .folder import COLOR_KEY, COLOR_WEIGHTS, CONFIG, KIND, WEIGHTS, is_model_dir, read_config
from .model import FaceSwapModel, build_model

__all__ = ["save_model", "load_model", "save_color_net", "load_color_net", "has_color_net", "is_model_dir",
           "WEIGHTS", "CONFIG", "KIND", "COLOR_WEIGHTS", "COLOR_KEY"]  # names re-exported from .folder


def save_model(folder: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Write weights and config atomically; `meta` (JSON-able) is returned again by `load_model`.

    Accepts a model wrapped by DistributedDataParallel or torch.compile and saves the bare one.
    """
    model = _unwrap(model)
    folder = Path(folder)
    config = {"kind": KIND, "model": model.config, "meta": meta}
    color_entry = _color_entry(folder)
    if color_entry is not None:  # the colour net was saved separately: keep it
        config[COLOR_KEY] = color_entry
    write_with(folder / WEIGHTS, lambda tmp: save_file(_cpu_tensors(model), tmp))
    write_json(folder / CONFIG, config)


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[FaceSwapModel, dict]:
    """Rebuild the architecture from config.json, load the weights strictly; -> (model in eval mode, meta)."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        model = build_model(**config["model"])
    except (UserError, TypeError) as err:
        raise UserError(f"{folder / CONFIG} describes a model this version cannot build ({err}): "
                        "retrain it with this version, or use the version that trained it") from err
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise UserError(f"{folder} has no {WEIGHTS}: the model was not saved completely; "
                        "resume training to write it again")
    try:
        model.load_state_dict(load_file(weights_path), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise UserError(f"{weights_path} does not match the architecture in {CONFIG} "
                        f"({str(err).splitlines()[0]}): the folder is damaged or its files are mixed up; "
                        "restore it from a backup or retrain") from err
    return model.to(device).eval(), config.get("meta", {})


def save_color_net(folder: str | os.PathLike, net: nn.Module, meta: dict) -> None:
    """Write the colour network into a folder that already holds its model; `meta` comes back from
    `load_color_net`. Weights first, then config.json, each atomically."""
    net = _unwrap(net)
    folder = Path(folder)
    config = read_config(folder)
    write_with(folder / COLOR_WEIGHTS, lambda tmp: save_file(_cpu_tensors(net), tmp))
    config[COLOR_KEY] = {"net": net.config, "meta": meta}
    write_json(folder / CONFIG, config)


def has_color_net(folder: str | os.PathLike) -> bool:
    """True when the model folder holds a colour network (cheap: reads config.json only)."""
    return _color_entry(Path(folder)) is not None


def load_color_net(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ColorNet, dict]:
    """-> (colour network in eval mode, its meta); UserError when the folder has none or it is damaged."""
    folder = Path(folder)
    entry = _color_entry(folder)
    if entry is None:
        raise UserError(f"{folder} has no colour network ({COLOR_WEIGHTS}): train one with "
                        f"`python -m engine train-color --model {folder}`, or use another colour mode")
    try:
        net = build_color_net(**entry["net"])
    except (UserError, TypeError, KeyError) as err:
        raise UserError(f"{folder / CONFIG} describes a colour network this version cannot build ({err}): "
                        f"retrain it with `python -m engine train-color --model {folder}`") from err
    try:
        net.load_state_dict(load_file(folder / COLOR_WEIGHTS), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise UserError(f"{folder / COLOR_WEIGHTS} does not match the colour network in {CONFIG} "
                        f"({str(err).splitlines()[0]}): retrain it with "
                        f"`python -m engine train-color --model {folder}`") from err
    return net.to(device).eval(), entry.get("meta", {})


def _color_entry(folder: Path) -> dict | None:
    """config.json's colour-net entry when its weights are there too, else None (never raises)."""
    if not (folder / COLOR_WEIGHTS).is_file():
        return None
    try:
        entry = json.loads((folder / CONFIG).read_text()).get(COLOR_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("net"), dict) else None


def _cpu_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous CPU tensors; channels_last weights are not contiguous
    return {name: t.detach().to("cpu").contiguous() for name, t in module.state_dict().items()}


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        inner = next((getattr(model, name) for name in ("module", "_orig_mod")
                      if isinstance(getattr(model, name, None), nn.Module)), None)
        if inner is None:
            return model
        model = inner
