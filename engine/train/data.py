"""Face sets as uint8 tensors on the training device, and the batches drawn from them.

Faces stay uint8 on the device (a quarter of the float size) and augment.warp_batch turns each
batch into float crops there, so a GPU run never waits on CPU-side image decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.faces.faceset import open_faceset

log = logging.getLogger(__name__)

# Faces one training run holds of a side: the whole set sits in memory (on the GPU when training
# there) as uint8, and 20 000 faces of 256 px are 3.9 GB. Bigger sets, or sets of bigger faces
# (the cap shrinks with the face's area above 256 px), are sampled evenly in extraction order, so
# every source keeps its share. A module constant a host can change.
MAX_TRAINING_FACES = 20_000


@dataclass
class FacePool:
    """The faces of one side that this process trains on."""

    name: str  # the face-set path, for messages
    faces: torch.Tensor  # (N, 3, S, S) uint8 RGB on the training device
    coverage: float  # the face set's crop coverage; the model re-crops to its own

    def __len__(self) -> int:
        return self.faces.shape[0]

    @property
    def size(self) -> int:
        return self.faces.shape[-1]


def rank_indices(count: int, rank: int, world_size: int) -> np.ndarray:
    """Every world_size-th face from `rank` on, so that ranks train on disjoint, similar slices."""
    if count < world_size:
        raise UserError(f"a face set has {count} faces, fewer than the {world_size} training processes: "
                        "extract more faces or start fewer processes")
    return np.arange(rank, count, world_size)


def training_limit(size: int) -> int:
    """How many faces of `size` px one side may keep in memory: MAX_TRAINING_FACES at 256 px or less."""
    return max(1, MAX_TRAINING_FACES * 256 * 256 // max(size, 256) ** 2)


def training_sample(count: int, size: int, name: str) -> np.ndarray:
    """Indices of the faces to train on: all of them, or an even spread of `training_limit` (with a warning)."""
    limit = training_limit(size)
    if count <= limit:
        return np.arange(count)
    log.warning("face set %s holds %d faces of %d px, over the %d one training run keeps in memory: "
                "training on an even sample of %d of them (split the set, or raise "
                "engine.train.data.MAX_TRAINING_FACES on a machine with the memory)", name, count, size, limit, limit)
    return np.unique(np.linspace(0, count - 1, num=limit).round().astype(np.int64))


def load_pool(path: str | Path, device: torch.device, rank: int = 0, world_size: int = 1) -> FacePool:
    """Load this rank's slice of a face set onto `device` as (N, 3, S, S) uint8."""
    faceset = open_faceset(path)
    picks = training_sample(len(faceset), faceset.size, str(path))
    keep = picks[rank_indices(len(picks), rank, world_size)]
    images = faceset.load_images(keep)  # (N, S, S, 3) uint8 RGB
    faces = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
    return FacePool(name=str(path), faces=faces, coverage=float(faceset.coverage))


class BatchSampler:
    """Draws batches without replacement and reshuffles each epoch, so every face is seen equally often.

    Sets smaller than a batch wrap around into the next shuffle instead of failing.
    """

    def __init__(self, pool: FacePool, batch_size: int, generator: torch.Generator) -> None:
        self.pool, self.batch_size, self.generator = pool, batch_size, generator
        self._queue = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self._queue.numel() < self.batch_size:
            self._queue = torch.cat([self._queue, torch.randperm(len(self.pool), generator=self.generator)])
        take, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size:]
        return self.pool.faces[take.to(self.pool.faces.device)]


def preview_faces(pool: FacePool, rows: int) -> torch.Tensor:
    """A fixed, evenly spread choice of faces, so successive previews show the same people."""
    picks = np.linspace(0, len(pool) - 1, num=min(rows, len(pool))).round().astype(np.int64)
    return pool.faces[torch.from_numpy(picks).to(pool.faces.device)]
