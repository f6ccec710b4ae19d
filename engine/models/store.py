"""A model folder: `model.safetensors` (weights) + `config.json` (architecture and training facts).

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

from .model import FaceSwapModel, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
KIND = "faceswap-studio model"  # marks our config.json among other tools' files


def save_model(folder: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Write weights and config atomically; `meta` (JSON-able) is returned again by `load_model`.

    Accepts a model wrapped by DistributedDataParallel or torch.compile and saves the bare one.
    """
    model = _unwrap(model)
    folder = Path(folder)
    # safetensors needs contiguous CPU tensors; channels_last weights are not contiguous
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    write_with(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    write_json(folder / CONFIG, {"kind": KIND, "model": model.config, "meta": meta})


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[FaceSwapModel, dict]:
    """Rebuild the architecture from config.json, load the weights strictly; -> (model in eval mode, meta)."""
    folder = Path(folder)
    config = _read_config(folder)
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


def is_model_dir(path: str | os.PathLike) -> bool:
    """True for a folder written by `save_model` (cheap: reads config.json only)."""
    path = Path(path)
    try:
        return (path / WEIGHTS).is_file() and json.loads((path / CONFIG).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def _read_config(folder: Path) -> dict:
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise UserError(f"{folder} is not a model folder (no {CONFIG}): "
                        "pass the folder that training wrote, which holds config.json and model.safetensors")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{config_path} is not readable JSON ({err}): restore it or retrain the model") from err
    if not isinstance(config, dict) or config.get("kind") != KIND or not isinstance(config.get("model"), dict):
        raise UserError(f"{config_path} is not a face-swap model config: "
                        "pass the folder that training wrote, not another tool's model")
    return config


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        inner = next((getattr(model, name) for name in ("module", "_orig_mod")
                      if isinstance(getattr(model, name, None), nn.Module)), None)
        if inner is None:
            return model
        model = inner
