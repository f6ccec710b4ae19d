"""The model folder while training: the latest checkpoint, numbered snapshots, the best backup.

    model.safetensors, config.json   weights and architecture (engine.models.save_model); config.json's
                                     meta holds the training state (iteration, loss history, settings)
    optimizer.pt                     Adam's moments, so a resume continues the same optimisation
    loss.csv                         the loss history, for spreadsheets and plots
    snapshots/00005000/              numbered copies of the weights to roll back to
    backup/                          the checkpoint with the lowest smoothed loss so far

Every file is written atomically (temporary name + rename), so a crash or SIGKILL at any moment
leaves the previous complete file in place. A model with NaN or Inf weights is never written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.atomic import write_text, write_with
from engine.errors import UserError
from engine.models import is_model_dir, load_model, save_model

log = logging.getLogger(__name__)

OPTIMIZER = "optimizer.pt"
LOSS_CSV = "loss.csv"
SNAPSHOTS = "snapshots"
BACKUP = "backup"


class BrokenModelError(RuntimeError):
    """Raised instead of saving weights that hold NaN or Inf."""


@dataclass
class LossHistory:
    """Loss curve as rows [iteration, loss_a, loss_b], each the mean over `every` iterations.

    Averaging into buckets keeps config.json small on runs of a million iterations.
    """

    rows: list[list[float]] = field(default_factory=list)
    every: int = 10
    _sum_a: float = 0.0
    _sum_b: float = 0.0
    _count: int = 0

    def add(self, iteration: int, loss_a: float, loss_b: float, count: int = 1) -> None:
        """Add the mean losses of the `count` iterations that end at `iteration`."""
        self._sum_a += loss_a * count
        self._sum_b += loss_b * count
        self._count += count
        if self._count >= self.every:
            self.close(iteration)

    def close(self, iteration: int) -> None:
        """Turn the partly filled bucket into a row (before a save, so nothing is lost)."""
        if self._count:
            self.rows.append([iteration, self._sum_a / self._count, self._sum_b / self._count])
            self._sum_a = self._sum_b = 0.0
            self._count = 0

    def smoothed(self, span: int = 100) -> float | None:
        """Mean of loss_a + loss_b over the last `span` iterations of rows: the backup criterion."""
        if not self.rows:
            return None
        last = self.rows[-1][0]
        recent = [a + b for it, a, b in self.rows if it > last - span]
        return sum(recent) / len(recent)

    def csv(self) -> str:
        lines = ["iteration,loss_a,loss_b"] + [f"{int(it)},{a:.6g},{b:.6g}" for it, a, b in self.rows]
        return "\n".join(lines) + "\n"


@dataclass
class TrainingState:
    """What a resume needs besides weights and optimizer; kept as the meta of config.json."""

    iteration: int = 0
    history: LossHistory = field(default_factory=LossHistory)
    best_loss: float | None = None  # smoothed loss of the checkpoint in backup/
    settings: dict = field(default_factory=dict)  # the run's settings (face sets, lr, loss, ...)

    def to_meta(self) -> dict:
        return {"iteration": self.iteration, "loss_history": self.history.rows,
                "history_every": self.history.every, "best_loss": self.best_loss, "train": self.settings}

    @classmethod
    def from_meta(cls, meta: dict) -> TrainingState:
        history = LossHistory(rows=[list(r) for r in meta.get("loss_history", [])],
                              every=int(meta.get("history_every", 10)))
        return cls(iteration=int(meta.get("iteration", 0)), history=history,
                   best_loss=meta.get("best_loss"), settings=dict(meta.get("train", {})))


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def save(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
         state: TrainingState) -> None:
    """Write a resumable checkpoint: optimizer.pt, then weights + config.json, then loss.csv.

    The optimizer file carries its iteration; if a crash lands between the files, a resume sees
    the mismatch and starts the optimizer afresh instead of pairing it with other weights.
    """
    if not weights_finite(model):
        raise BrokenModelError(f"refusing to save {folder}: the weights hold NaN or Inf")
    folder = Path(folder)
    optimizer_state = {"iteration": state.iteration, "optimizer": optimizer.state_dict()}
    write_with(folder / OPTIMIZER, lambda tmp: torch.save(optimizer_state, tmp))
    save_model(folder, model, state.to_meta())
    write_text(folder / LOSS_CSV, state.history.csv())


def load(folder: str | os.PathLike, device: torch.device) -> tuple[nn.Module, TrainingState, dict | None]:
    """-> (model, training state, optimizer state dict or None when missing or out of step)."""
    folder = Path(folder)
    if not is_model_dir(folder):
        raise UserError(f"{folder} is not a model folder (no config.json + model.safetensors written by "
                        "training): drop --resume to start a new model there, or pass the folder of one")
    model, meta = load_model(folder, device)
    state = TrainingState.from_meta(meta)
    return model, state, load_optimizer_state(folder / OPTIMIZER, state.iteration, device)


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


def restore(folder: str | os.PathLike, model: nn.Module,
            optimizer: torch.optim.Optimizer) -> TrainingState:
    """Load the folder's checkpoint into the live model and optimizer (the NaN guard's rewind)."""
    device = next(model.parameters()).device
    saved_model, state, optimizer_state = load(folder, device)
    model.load_state_dict(saved_model.state_dict())
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    else:
        optimizer.state.clear()
    return state


def save_snapshot(folder: str | os.PathLike, model: nn.Module, state: TrainingState) -> Path:
    """Weights and config only (no optimizer): a point to roll back to or swap with, at a third the size."""
    target = Path(folder) / SNAPSHOTS / f"{state.iteration:08d}"
    if not weights_finite(model):
        raise BrokenModelError(f"refusing to save {target}: the weights hold NaN or Inf")
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
