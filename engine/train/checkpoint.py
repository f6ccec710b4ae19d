"""A resumable checkpoint in the model folder, for the swap model or (`color=True`) its colour net.

    weights + config.json    engine.models.save_model / save_color_net; config.json's meta holds the
                             training state (iteration, settings, best loss: engine.models.folder)
    optimizer.pt             Adam's moments, so a resume continues the same optimisation
    loss.csv                 the loss history: the state's one stored copy of it
    snapshots/00005000/      numbered copies of the weights to roll back to
    backup/                  the checkpoint with the lowest smoothed loss so far

The colour net's are color_optimizer.pt and color_loss.csv (engine.models.folder names them all).
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
    COLOR_OPTIMIZER,
    OPTIMIZER,
    SNAPSHOTS,
    LossHistory,
    TrainingState,
    check_model_dir,
    training_state,
    write_history,
)

__all__ = ["BrokenModelError", "save", "load", "restore", "load_optimizer_state", "save_snapshot",
           "save_backup_if_better", "copy_matching_weights", "weights_finite",
           "OPTIMIZER", "LossHistory", "TrainingState"]  # the last three re-exported from engine.models.folder

log = logging.getLogger(__name__)


class BrokenModelError(RuntimeError):
    """Raised instead of saving weights that hold NaN or Inf."""


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def save(folder: str | os.PathLike, net: nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState,
         color: bool = False) -> None:
    """Write a resumable checkpoint: the optimizer, the loss history, then weights + config.json.

    The optimizer file carries its iteration, and the history's rows theirs; if a crash lands between
    the files, a resume sees the weights' iteration and drops what runs ahead of it (a fresh
    optimizer instead of moments from other weights, no rows of iterations it never reached).
    """
    if not weights_finite(net):
        what = f"the colour net in {folder}" if color else f"{folder}"
        raise BrokenModelError(f"refusing to save {what}: the weights hold NaN or Inf")
    folder = Path(folder)
    optimizer_state = {"iteration": state.iteration, "optimizer": optimizer.state_dict()}
    write_with(folder / _optimizer_file(color), lambda tmp: torch.save(optimizer_state, tmp))
    write_history(folder, state.history, color)
    (save_color_net if color else save_model)(folder, net, state.to_meta())


def load(folder: str | os.PathLike, device: torch.device,
         color: bool = False) -> tuple[nn.Module, TrainingState, dict | None]:
    """-> (network, training state, optimizer state dict or None when missing or out of step)."""
    folder = Path(folder)
    check_model_dir(folder)
    net, meta = (load_color_net if color else load_model)(folder, device)
    state = training_state(folder, meta, color)
    return net, state, load_optimizer_state(folder / _optimizer_file(color), state.iteration, device)


def load_optimizer_state(path: Path, iteration: int, device: torch.device) -> dict | None:
    """The optimizer state saved at `path` if it belongs to the weights' `iteration`, else None.

    Weights and optimizer are separate atomic files; a crash between the two leaves them out of
    step, and Adam moments from another iteration would be worse than a fresh optimizer.
    """
    if not path.is_file():
        return None
    saved = torch.load(path, map_location=device, weights_only=True)
    if saved.get("iteration") == iteration:
        return saved["optimizer"]
    log.warning("%s is from iteration %s, the weights from %s: restarting the optimizer",
                path, saved.get("iteration"), iteration)
    return None


def restore(folder: str | os.PathLike, net: nn.Module, optimizer: torch.optim.Optimizer,
            color: bool = False) -> TrainingState:
    """Load the folder's checkpoint into the live network and optimizer (the NaN guard's rewind)."""
    device = next(net.parameters()).device
    saved, state, optimizer_state = load(folder, device, color)
    net.load_state_dict(saved.state_dict())
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    else:
        optimizer.state.clear()
    return state


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
                          state: TrainingState) -> bool:
    """Keep a full checkpoint in backup/ whenever the smoothed loss beats the best so far."""
    loss = state.history.smoothed()
    if loss is None or (state.best_loss is not None and loss >= state.best_loss):
        return False
    state.best_loss = loss
    save(Path(folder) / BACKUP, model, optimizer, state)
    return True


def copy_matching_weights(target: nn.Module, source: nn.Module) -> int:
    """Copy every tensor whose name and shape match (transfer learning); -> how many were copied."""
    source_tensors = source.state_dict()
    updates = {name: source_tensors[name] for name, t in target.state_dict().items()
               if name in source_tensors and source_tensors[name].shape == t.shape}
    target.load_state_dict(updates, strict=False)
    return len(updates)


def _optimizer_file(color: bool) -> str:
    return COLOR_OPTIMIZER if color else OPTIMIZER
