"""The preview grid: what the model makes of a few fixed faces, one face per row.

Columns: A, A->A, A->B, B, B->B, B->A. Reconstructions (A->A, B->B) show how well each decoder
has learnt its person; the swaps (A->B, B->A) are what the user is training for.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch

from engine.atomic import write_image
from engine.models.folder import MODEL_FILES, NetFiles, preview_paths

COLUMNS = ("A", "A->A", "A->B", "B", "B->B", "B->A")


@torch.no_grad()
def render_grid(model: torch.nn.Module, faces_a: torch.Tensor, faces_b: torch.Tensor,
                autocast: AbstractContextManager) -> np.ndarray:
    """Faces (N, 3, R, R) float in [0, 1] already cropped for the model -> (N*R, 6*R, 3) uint8 RGB."""
    rows = min(len(faces_a), len(faces_b))
    faces_a, faces_b = faces_a[:rows], faces_b[:rows]
    was_training = model.training
    model.eval()
    try:
        with autocast:
            z_a, z_b = model.encode(faces_a), model.encode(faces_b)
            columns = [faces_a, model.decode(z_a, "a")[0], model.decode(z_a, "b")[0],
                       faces_b, model.decode(z_b, "b")[0], model.decode(z_b, "a")[0]]
    finally:
        model.train(was_training)
    tiles = torch.stack([c.float().clamp(0, 1) for c in columns], dim=1)  # (N, 6, 3, R, R)
    n, cols, ch, r, _ = tiles.shape
    grid = tiles.permute(0, 3, 1, 4, 2).reshape(n * r, cols * r, ch)  # rows of faces, columns side by side
    return (grid * 255 + 0.5).to(torch.uint8).cpu().numpy()


def write_preview(model_dir: str | os.PathLike, iteration: int, grid: np.ndarray,
                  files: NetFiles = MODEL_FILES) -> Path:
    """Save as previews/latest.png (what UIs show) and previews/<iteration>.png (the history); the colour
    net's (COLOR_FILES) as previews/color-latest.png and color-<iteration>.png."""
    numbered, latest = preview_paths(model_dir, iteration, files)
    write_image(numbered, grid)
    write_image(latest, grid)
    return numbered
