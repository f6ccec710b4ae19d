"""Saving and loading a model folder's weights: `model.safetensors` + `config.json` (architecture and
meta); the folder's layout and file names are `engine.models.folder`'s.

A folder may also hold the model's colour network (`engine.models.colornet`): `color.safetensors`
plus a `color_net` entry in the same config.json. It lives in the model's own folder because it is
trained on that model's outputs and is useless with any other; the two are saved at different
times, so each save keeps the other's config entry.

safetensors rather than pickle so opening a model someone sent you cannot run code; the
architecture lives in JSON so a folder is rebuilt without knowing which preset made it. The
optimizer state is the trainer's business and is not stored here.

Loading checks before it allocates: the architecture is first built on the meta device (shapes, no
memory) and must stay under MAX_MODEL_PARAMETERS, and the weights file's header (names and shapes,
read without its data) must match it exactly; only then is the model built for real. A 17 KB config
asking for thousands of decoders is refused in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from engine.atomic import write_json, write_with
from engine.errors import UserError

from .colornet import ColorNet, build_color_net
from .folder import COLOR_KEY, COLOR_WEIGHTS, CONFIG, KIND, WEIGHTS, read_config
from .model import FaceSwapModel, ModelLimitError, build_model

# Parameters a loaded model (or colour net) may have: above the largest built-in setting (intracoder at
# 512 px, ~550 M; the `original` preset is ~82 M), at 4 bytes each ~2.4 GB. A module constant a host
# can lower.
MAX_MODEL_PARAMETERS = 600_000_000


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
    """Rebuild the architecture from config.json, load the weights strictly; -> (model in eval mode, meta).

    `check_model` runs first, so nothing big is allocated for a folder that would not load.
    """
    folder = Path(folder)
    config = check_model(folder)
    model = build_model(**config["model"])
    weights_path = folder / WEIGHTS
    try:
        model.load_state_dict(load_file(weights_path), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise UserError(f"{weights_path} does not match the architecture in {CONFIG} "
                        f"({str(err).splitlines()[0]}): the folder is damaged or its files are mixed up; "
                        "restore it from a backup or retrain") from err
    return model.to(device).eval(), config.get("meta", {})


def check_model(folder: str | os.PathLike) -> dict:
    """config.json of a model folder that will load, checked without allocating the model; UserError
    naming the file and the limit or mismatch otherwise. -> the config.

    The architecture is built on the meta device: over MAX_MODEL_PARAMETERS, more identities or a larger
    resolution than `engine.models.model` allows, or names and shapes that differ from the weights
    file's header are refused.
    """
    folder = Path(folder)
    config = read_config(folder)
    _check_against_weights(lambda: build_model(**config["model"]), folder / CONFIG, folder / WEIGHTS, "a model",
                           "retrain it with this version, or use the version that trained it")
    return config


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
    _check_against_weights(lambda: build_color_net(**entry["net"]), folder / CONFIG, folder / COLOR_WEIGHTS,
                           "a colour network", f"retrain it with `python -m engine train-color --model {folder}`")
    net = build_color_net(**entry["net"])
    try:
        net.load_state_dict(load_file(folder / COLOR_WEIGHTS), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise UserError(f"{folder / COLOR_WEIGHTS} does not match the colour network in {CONFIG} "
                        f"({str(err).splitlines()[0]}): retrain it with "
                        f"`python -m engine train-color --model {folder}`") from err
    return net.to(device).eval(), entry.get("meta", {})


def _check_against_weights(build: Callable[[], nn.Module], config_path: Path, weights_path: Path, what: str,
                           fix: str) -> None:
    """Build on the meta device (no memory), bound its size, compare it with the weights file's header."""
    try:
        with torch.device("meta"):
            skeleton = build()
    except ModelLimitError as err:
        raise UserError(f"{config_path} is refused: {err}") from err
    except (UserError, TypeError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"{config_path} describes {what} this version cannot build ({err}): {fix}") from err
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    count = sum(math.prod(shape) for shape in expected.values())
    if count > MAX_MODEL_PARAMETERS:
        raise UserError(f"{config_path} is refused: it asks for {count / 1e6:.0f} M parameters, over the limit "
                        f"of {MAX_MODEL_PARAMETERS / 1e6:.0f} M")
    if not weights_path.is_file():
        raise UserError(f"{weights_path.parent} has no {weights_path.name}: the model was not saved completely; "
                        "resume training to write it again")
    stored = _stored_shapes(weights_path)
    problem = _shape_difference(expected, stored)
    if problem:
        raise UserError(f"{weights_path} does not match the architecture in {config_path.name} ({problem}): "
                        "the folder is damaged or its files are mixed up; restore it from a backup or retrain")


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from a safetensors file's header, its data unread; UserError if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]}): "
                        "the folder is damaged; restore it from a backup or retrain") from err


def _shape_difference(expected: dict[str, tuple], stored: dict[str, tuple]) -> str | None:
    """What differs between the architecture's tensors and the file's, in a few words; None when equal."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    wrong = [k for k in expected if k in stored and expected[k] != stored[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of other shapes, e.g. {k}: {list(stored[k])} in the file, "
                     f"{list(expected[k])} in the architecture")
    return "; ".join(parts) or None


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
