"""A model folder's layout, its training facts, and what a page reads from it without loading weights.

    model.safetensors, config.json      weights; {"kind", "model": architecture, "meta": training facts}
    optimizer.pt                        Adam's moments, so a resume continues the same optimisation
    loss.csv                            the loss history (iteration, loss_a, loss_b): its one stored copy
    previews/latest.png, NNNNNNNN.png   preview grids, the newest and the history
    snapshots/NNNNNNNN/, backup/        numbered copies of the weights, the best checkpoint so far
    color.safetensors, config.json["color_net"], color_optimizer.pt, color_loss.csv,
    previews/color-latest.png           the colour network's counterparts (engine.train.color)
    .lock                               held by the folder's training (engine.models.lock)
    optimizer.pt.refused                an optimizer file a resume could not use, set aside
                                        (engine.train.checkpoint); archives carry PORTABLE_FILES only,
                                        never these two

Every other module and the web app name these files and keys through this one, so renaming one is a
single edit here. `engine.models.store` writes and loads the weights; `engine.train.checkpoint` the
resumable checkpoint. Folders written before loss.csv became the one copy of the history keep it in
config.json's meta as well; `training_state` still reads it from there when the CSV is missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
KIND = "faceswap-studio model"  # marks our config.json among other tools' files
OPTIMIZER = "optimizer.pt"
LOSS_CSV = "loss.csv"
PREVIEWS = "previews"
SNAPSHOTS = "snapshots"
BACKUP = "backup"
COLOR_WEIGHTS = "color.safetensors"
COLOR_KEY = "color_net"  # config.json entry: {"net": architecture, "meta": colour training state}
COLOR_OPTIMIZER = "color_optimizer.pt"
COLOR_LOSS_CSV = "color_loss.csv"
COLOR_PREFIX = "color-"  # the colour net's preview names: previews/color-latest.png, ...
LOCK = ".lock"  # the lock a training holds on its folder (engine.models.lock)
REFUSED_SUFFIX = ".refused"  # optimizer.pt.refused: set aside by a resume that could not use it

# what a model archive carries: the colour net's files too, else an imported model falls back to Reinhard
PORTABLE_FILES = (CONFIG, WEIGHTS, OPTIMIZER, LOSS_CSV, f"{PREVIEWS}/latest.png", COLOR_WEIGHTS,
                  COLOR_OPTIMIZER, COLOR_LOSS_CSV)

_CSV_HEADER = "iteration,loss_a,loss_b"


@dataclass(frozen=True)
class NetFiles:
    """The files of one network a model folder holds besides config.json: the swap model's or its colour
    net's. Handed to the functions that read and write them, instead of a flag that picks the names."""

    label: str  # how messages name the network beside its folder: "" for the swap model, the folder's own
    weights: str
    optimizer: str
    loss_csv: str
    preview_prefix: str  # previews/<prefix>latest.png, previews/<prefix><iteration>.png


MODEL_FILES = NetFiles("", WEIGHTS, OPTIMIZER, LOSS_CSV, "")
COLOR_FILES = NetFiles("the colour net", COLOR_WEIGHTS, COLOR_OPTIMIZER, COLOR_LOSS_CSV, COLOR_PREFIX)


@dataclass
class LossHistory:
    """Loss curve as rows [iteration, loss_a, loss_b], each the mean over `every` iterations.

    Averaging into buckets keeps the file small on runs of a million iterations.
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
        lines = [_CSV_HEADER] + [f"{int(it)},{a:.6g},{b:.6g}" for it, a, b in self.rows]
        return "\n".join(lines) + "\n"


@dataclass
class TrainingState:
    """What a resume needs besides weights and optimizer: config.json's meta, plus the loss history."""

    iteration: int = 0
    history: LossHistory = field(default_factory=LossHistory)
    best_loss: float | None = None  # smoothed loss of the checkpoint in backup/
    settings: dict = field(default_factory=dict)  # the run's settings (face sets, lr, loss, ...)
    seconds: float = 0.0  # training time so far, all runs together (what a --minutes budget counts)

    def to_meta(self) -> dict:
        """config.json's meta: everything but the history rows, which go to the loss CSV."""
        return {"iteration": self.iteration, "history_every": self.history.every, "best_loss": self.best_loss,
                "train": self.settings, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_meta(cls, meta: dict, rows: list[list[float]] | None = None) -> TrainingState:
        """The state of `meta` with the history `rows` (None: the rows older folders kept in the meta)."""
        iteration = int(meta.get("iteration", 0))
        if rows is None:
            rows = [list(r) for r in meta.get("loss_history", [])]
        # the CSV is written before the weights: after a crash between the two it may run ahead of them
        history = LossHistory(rows=[r for r in rows if r[0] <= iteration], every=int(meta.get("history_every", 10)))
        return cls(iteration=iteration, history=history, best_loss=meta.get("best_loss"),
                   settings=dict(meta.get("train", {})), seconds=float(meta.get("seconds", 0.0)))


def is_model_dir(path: str | os.PathLike) -> bool:
    """True for a folder written by `save_model` (cheap: reads config.json only)."""
    path = Path(path)
    try:
        return (path / WEIGHTS).is_file() and json.loads((path / CONFIG).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def read_config(folder: str | os.PathLike) -> dict:
    """config.json as a dict; UserError with the fix when it is missing, damaged or another tool's."""
    config_path = Path(folder) / CONFIG
    if not config_path.is_file():
        raise UserError(f"{folder} is not a model folder (no {CONFIG}): "
                        f"pass the folder that training wrote, which holds {CONFIG} and {WEIGHTS}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{config_path} is not readable JSON ({err}): restore it or retrain the model") from err
    if not isinstance(config, dict) or config.get("kind") != KIND or not isinstance(config.get("model"), dict):
        raise UserError(f"{config_path} is not a face-swap model config: "
                        "pass the folder that training wrote, not another tool's model")
    return config


def write_history(folder: str | os.PathLike, history: LossHistory, files: NetFiles = MODEL_FILES) -> None:
    from engine.atomic import write_text

    write_text(Path(folder) / files.loss_csv, history.csv())


def read_history_rows(folder: str | os.PathLike, files: NetFiles = MODEL_FILES) -> list[list[float]] | None:
    """The rows of the network's loss CSV; None when there is none (a folder from before it was written)."""
    try:
        lines = (Path(folder) / files.loss_csv).read_text().splitlines()
    except OSError:
        return None
    rows = []
    for line in lines[1:]:
        try:
            it, a, b = (float(x) for x in line.split(","))
        except ValueError:
            continue
        rows.append([it, a, b])
    return rows


def training_state(folder: str | os.PathLike, meta: dict, files: NetFiles = MODEL_FILES) -> TrainingState:
    """The training state of the network whose config meta is `meta`."""
    return TrainingState.from_meta(meta, read_history_rows(folder, files))


def summary(folder: str | os.PathLike) -> dict | None:
    """{"iteration", "minutes" (of training), "preset", "resolution", "batch_size", "precision" (what the
    last run computed in: bf16 or fp32) and "precision_reason"} of a saved model; None when there is none.

    Reads the JSON only (no weights), so polling pages can call it.
    """
    if not is_model_dir(folder):
        return None
    try:
        config = read_config(folder)
    except UserError:
        return None
    model, state = config["model"], TrainingState.from_meta(config.get("meta", {}), rows=[])
    return {"iteration": state.iteration, "minutes": state.seconds / 60.0, "preset": model.get("preset"),
            "resolution": model.get("resolution"), "batch_size": state.settings.get("batch_size"),
            "precision": state.settings.get("precision"), "precision_reason": state.settings.get("precision_reason")}


def check_model_dir(folder: str | os.PathLike) -> None:
    """UserError with the fix unless a model is there to continue (a resume's first question)."""
    if not is_model_dir(folder):
        raise UserError(f"{folder} is not a model folder (no {CONFIG} + {WEIGHTS} written by "
                        "training): drop --resume to start a new model there, or pass the folder of one")


def training_settings(folder: str | os.PathLike) -> dict:
    """The settings the model's training stored (face sets, batch size, ...); UserError if no model is there."""
    check_model_dir(folder)
    return TrainingState.from_meta(read_config(folder).get("meta", {}), rows=[]).settings


def recorded_face_sets(folder: str | os.PathLike, faces_a: str | None = None,
                       faces_b: str | None = None) -> tuple[str | None, str | None]:
    """The face sets given, each one missing filled in from those the model's training recorded."""
    if faces_a and faces_b:
        return faces_a, faces_b
    saved = training_settings(folder)
    return faces_a or saved.get("faces_a"), faces_b or saved.get("faces_b")


def loss_history(folder: str | os.PathLike) -> list[tuple[float, float, float]]:
    """The model's loss curve (iteration, loss_a, loss_b) as training logged it; [] when there is none."""
    if not is_model_dir(folder):
        return []
    try:
        state = training_state(folder, read_config(folder).get("meta", {}))
    except (UserError, ValueError, TypeError):
        return []
    return [(float(it), float(a), float(b)) for it, a, b in state.history.rows]


def stamp(folder: str | os.PathLike) -> tuple[int, int] | None:
    """Changes whenever training (or a colour-net run) saves the folder again; None when no model is there.

    Two stats, cheap enough for every poll of a page.
    """
    try:
        return tuple((Path(folder) / name).stat().st_mtime_ns for name in (CONFIG, WEIGHTS))
    except OSError:
        return None


def preview_paths(folder: str | os.PathLike, iteration: int, files: NetFiles = MODEL_FILES) -> tuple[Path, Path]:
    """(numbered, latest) paths of a preview grid: previews/00001000.png and previews/latest.png."""
    prefix = files.preview_prefix
    previews = Path(folder) / PREVIEWS
    return previews / f"{prefix}{iteration:08d}.png", previews / f"{prefix}latest.png"


def latest_preview(folder: str | os.PathLike) -> Path | None:
    """The newest preview grid of the model's training, if it wrote one."""
    path = preview_paths(folder, 0)[1]
    return path if path.is_file() else None


def portable_files(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """(path, name inside the folder) of the files a model archive carries that the folder has.

    Snapshots and the backup stay home: they are copies of the same weights.
    """
    folder = Path(folder)
    return [(folder / name, name) for name in PORTABLE_FILES if (folder / name).is_file()]


def model_root(unpacked: str | os.PathLike) -> Path | None:
    """The model folder inside an unpacked archive: its root, or its one top folder (as exports have)."""
    unpacked = Path(unpacked)
    if (unpacked / CONFIG).is_file():
        return unpacked
    tops = [p for p in unpacked.iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / CONFIG).is_file():
        return tops[0]
    return None
