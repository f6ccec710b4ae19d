"""A resumable checkpoint in the model folder, for the swap model or (`COLOR_FILES`) its colour net.

    weights + config.json    engine.models.save_model / save_color_net; config.json's meta holds the
                             training state (iteration, settings, best loss: engine.models.folder)
    optimizer.pt             Adam's moments, so a resume continues the same optimisation; with a
                             weight average (engine.train.average) the weights file holds the average
                             and this file the trained weights too, which the moments belong to
    loss.csv                 the loss history: the state's one stored copy of it
    snapshots/00005000/      numbered copies of the weights to roll back to
    backup/                  the checkpoint with the lowest smoothed loss so far

The colour net's are color_optimizer.pt and color_loss.csv (engine.models.folder names them all).
An optimizer file that cannot be read safely or does not fit the model is set aside (NAME.refused)
and the run goes on with a fresh optimizer, rather than every resume failing on it.
Every file is written atomically (temporary name + rename), so a crash or SIGKILL at any moment
leaves the previous complete file in place. A network with NaN or Inf weights is never written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from engine.atomic import write_with
from engine.models import load_color_net, load_model, save_color_net, save_model
from engine.models.folder import (
    BACKUP,
    COLOR_FILES,
    MODEL_FILES,
    REFUSED_SUFFIX,
    SNAPSHOTS,
    NetFiles,
    TrainingState,
    check_model_dir,
    training_state,
    write_history,
)

log = logging.getLogger(__name__)
# how each network's weights are written and read (engine.models.store)
_STORE = {MODEL_FILES: (save_model, load_model), COLOR_FILES: (save_color_net, load_color_net)}
TRAINED = "trained"  # the optimizer file's key for the trained weights of a run that saves their average


class BrokenModelError(RuntimeError):
    """Raised instead of saving weights that hold NaN or Inf."""


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def save(folder: str | os.PathLike, net: nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState,
         files: NetFiles = MODEL_FILES, trained: nn.Module | None = None, beside: dict | None = None) -> None:
    """Write a resumable checkpoint: the optimizer, the loss history, then weights + config.json.

    The optimizer file carries its iteration, and the history's rows theirs; if a crash lands between
    the files, a resume sees the weights' iteration and drops what runs ahead of it (a fresh
    optimizer instead of moments from other weights, no rows of iterations it never reached).
    `trained`: the weights the optimizer steps, when `net` (what the weights file gets) is their
    average; they go into the optimizer file, with the moments that belong to them. `beside`: more
    training state that belongs to this iteration (the colour net's critic), under its own keys there.
    """
    what = f"{files.label} in {folder}" if files.label else f"{folder}"
    for weights in (net, trained):
        if weights is not None and not weights_finite(weights):
            raise BrokenModelError(f"refusing to save {what}: the weights hold NaN or Inf")
    folder = Path(folder)
    optimizer_state = {"iteration": state.iteration, "optimizer": optimizer.state_dict()}
    if trained is not None:
        optimizer_state[TRAINED] = trained.state_dict()
    for key, value in (beside or {}).items():
        if key in optimizer_state:
            raise ValueError(f"{key!r} is a key of the optimizer file's own")
        optimizer_state[key] = value
    write_with(folder / files.optimizer, lambda tmp: torch.save(optimizer_state, tmp))
    write_history(folder, state.history, files)
    _STORE[files][0](folder, net, state.to_meta())


def load(folder: str | os.PathLike, device: torch.device,
         files: NetFiles = MODEL_FILES) -> tuple[nn.Module, TrainingState, dict | None]:
    """-> (network, training state, optimizer state dict or None when missing or out of step)."""
    folder = Path(folder)
    check_model_dir(folder)
    net, meta = _STORE[files][1](folder, device)
    state = training_state(folder, meta, files)
    return net, state, load_optimizer_state(folder / files.optimizer, state.iteration, device)


def load_trained(folder: str | os.PathLike, iteration: int, device: torch.device,
                 files: NetFiles = MODEL_FILES) -> dict | None:
    """The trained weights (a state dict) a run with a weight average kept beside Adam's moments, when
    they belong to the weights' `iteration`; else None (no average, another iteration, unreadable: the
    optimizer's own load says why and sets a bad file aside)."""
    return load_beside(folder, iteration, device, files, TRAINED)


def load_beside(folder: str | os.PathLike, iteration: int, device: torch.device, files: NetFiles,
                key: str) -> dict | None:
    """What `save(beside=...)` (or `trained`) kept under `key` in the optimizer file, when it belongs to
    the weights' `iteration`; else None."""
    path = Path(folder) / files.optimizer
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 (load_optimizer_state reports and sets aside the same file)
        return None
    kept = saved.get(key) if isinstance(saved, dict) and saved.get("iteration") == iteration else None
    return kept if isinstance(kept, dict) else None


def load_optimizer_state(path: Path, iteration: int, device: torch.device) -> dict | None:
    """The optimizer state saved at `path` if it belongs to the weights' `iteration`, else None.

    Weights and optimizer are separate atomic files; a crash between the two leaves them out of
    step, and Adam moments from another iteration would be worse than a fresh optimizer. A file that
    cannot be read safely (`weights_only` refuses its pickle: an imported file that would run code;
    damaged; not this studio's) is set aside as `optimizer.pt.refused` with a warning, so that every
    later resume does not trip over it again; the run goes on with a fresh optimizer.
    """
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # whatever it fails with, the file is no use; the unpickler ran nothing
        set_aside_optimizer(path, f"it cannot be read safely ({_first_line(err)})")
        return None
    if not (isinstance(saved, dict) and isinstance(saved.get("optimizer"), dict)
            and isinstance(saved["optimizer"].get("state"), dict)
            and isinstance(saved["optimizer"].get("param_groups"), list)):
        set_aside_optimizer(path, "it is not an optimizer state this studio wrote")
        return None
    if saved.get("iteration") == iteration:
        return saved["optimizer"]
    log.warning("%s is from iteration %s, the weights from %s: restarting the optimizer",
                path, saved.get("iteration"), iteration)
    return None


def set_aside_optimizer(path: Path, why: str) -> Path:
    """Rename an optimizer file that a resume cannot use to NAME.refused (kept to look at, never loaded or
    archived), with a warning saying why; -> its new path."""
    refused = path.with_name(path.name + REFUSED_SUFFIX)
    try:
        os.replace(path, refused)
    except FileNotFoundError:  # another rank of the run set it aside first
        return refused
    log.warning("%s: %s; set aside as %s, training goes on with a fresh optimizer (Adam's moments restart)",
                path, why, refused.name)
    return refused


def optimizer_mismatch(optimizer: torch.optim.Optimizer, saved: dict) -> str | None:
    """Why the saved optimizer state cannot go into `optimizer` (its groups, parameters or moment shapes
    differ: another architecture's file), in a few words; None when it fits."""
    groups = saved.get("param_groups")
    if len(groups) != len(optimizer.param_groups):
        return f"{len(groups)} parameter groups, the model's optimizer has {len(optimizer.param_groups)}"
    params = {}
    for group, live in zip(groups, optimizer.param_groups, strict=True):
        ids = group.get("params") if isinstance(group, dict) else None
        if not isinstance(ids, list) or len(ids) != len(live["params"]):
            return "parameter lists of other lengths than the model's"
        params.update(zip(ids, live["params"], strict=True))
    for key, moments in saved["state"].items():
        if key not in params or not isinstance(moments, dict):
            return f"state for parameter {key!r}, which the model does not have"
        for name, value in moments.items():
            if name != "step" and (not isinstance(value, torch.Tensor) or value.shape != params[key].shape):
                return f"{name} of parameter {key} of another shape than the model's"
    return None


def restore(folder: str | os.PathLike, net: nn.Module, optimizer: torch.optim.Optimizer,
            files: NetFiles = MODEL_FILES, average: nn.Module | None = None) -> TrainingState:
    """Load the folder's checkpoint into the live network and optimizer (the NaN guard's rewind); with a
    weight average, the weights file into `average` and the trained weights saved beside the moments
    into `net` (the weights file, when a checkpoint holds none)."""
    device = next(net.parameters()).device
    saved, state, optimizer_state = load(folder, device, files)
    trained = load_trained(folder, state.iteration, device, files) if average is not None else None
    net.load_state_dict(saved.state_dict() if trained is None else trained)
    if average is not None:
        average.load_state_dict(saved.state_dict())
    if not load_optimizer_into(optimizer, optimizer_state, folder, files):
        optimizer.state.clear()
    return state


def load_optimizer_into(optimizer: torch.optim.Optimizer, saved: dict | None, folder: str | os.PathLike,
                        files: NetFiles = MODEL_FILES) -> bool:
    """Load `saved` (from `load`) into the live optimizer when it fits its parameters; one that does not
    is set aside like an unreadable file. -> whether it was loaded."""
    if saved is None:
        return False
    problem = optimizer_mismatch(optimizer, saved)
    if problem is None:
        try:
            optimizer.load_state_dict(saved)
            return True
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            problem = _first_line(err)
    path = Path(folder) / files.optimizer
    if path.is_file():
        set_aside_optimizer(path, f"it does not fit the model ({problem})")
    return False


def save_snapshot(folder: str | os.PathLike, model: nn.Module, state: TrainingState, name: str | None = None) -> Path:
    """Weights, config and loss history (no optimizer): a point to roll back to or swap with, at a third
    the size; named by its iteration unless `name` is given (e.g. "30min" at a training-time mark)."""
    target = Path(folder) / SNAPSHOTS / (name or f"{state.iteration:08d}")
    if not weights_finite(model):
        raise BrokenModelError(f"refusing to save {target}: the weights hold NaN or Inf")
    write_history(target, state.history)
    save_model(target, model, state.to_meta())
    return target


def save_backup_if_better(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                          state: TrainingState, trained: nn.Module | None = None) -> bool:
    """Keep a full checkpoint in backup/ whenever the smoothed loss beats the best so far (`trained`: as
    in `save`)."""
    loss = state.history.smoothed()
    if loss is None or (state.best_loss is not None and loss >= state.best_loss):
        return False
    state.best_loss = loss
    save(Path(folder) / BACKUP, model, optimizer, state, trained=trained)
    return True


def copy_matching_weights(target: nn.Module, source: nn.Module) -> int:
    """Copy every tensor whose name and shape match (transfer learning); -> how many were copied."""
    source_tensors = source.state_dict()
    updates = {name: source_tensors[name] for name, t in target.state_dict().items()
               if name in source_tensors and source_tensors[name].shape == t.shape}
    target.load_state_dict(updates, strict=False)
    return len(updates)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
