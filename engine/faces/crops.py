"""Batched re-crops of face-set faces in torch: `align.recrop_matrix` applied on the device.

Face sets keep crops at their own coverage (FACESET_COVERAGE); a model sees faces at its own
coverage and resolution. `center_crop_batch` cuts that plain crop for previews, evaluation and the
colour net's targets; `engine.train.augment` builds its random crops from the same pieces, so the
two cannot disagree about where the face is.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from engine.faces.align import FACESET_COVERAGE, recrop_matrix


def center_crop_batch(faces_u8: torch.Tensor, *, resolution: int, src_coverage: float = FACESET_COVERAGE,
                      model_coverage: float) -> torch.Tensor:
    """(N, 3, S, S) uint8 face-set crops -> the plain re-crop (no augmentation), float (N, 3, R, R) in [0, 1]."""
    theta = recrop_theta(faces_u8.shape[-1], src_coverage, resolution, model_coverage, faces_u8.device)
    grid = apply_affine(theta.expand(faces_u8.shape[0], -1, -1), pixel_grid(resolution, faces_u8.device))
    return sample(prefilter(faces_u8, resolution, src_coverage, model_coverage), grid)


def recrop_theta(src_size: int, src_coverage: float, size: int, coverage: float,
                 device: torch.device) -> torch.Tensor:
    """(3, 3) output-normalised -> source-normalised coordinates of `recrop_matrix` (grid_sample's
    align_corners=False convention: pixel i sits at (2i + 1) / side - 1)."""
    recrop = np.vstack([recrop_matrix(src_size, src_coverage, size, coverage), [0, 0, 1]])
    to_src_norm = np.array([[2 / src_size, 0, 1 / src_size - 1], [0, 2 / src_size, 1 / src_size - 1], [0, 0, 1]])
    from_dst_norm = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
    theta = to_src_norm @ np.linalg.inv(recrop) @ from_dst_norm
    return torch.as_tensor(theta, dtype=torch.float32, device=device)


@lru_cache(maxsize=8)
def _pixel_grid_cached(size: int, device: str) -> torch.Tensor:
    centres = (torch.arange(size, dtype=torch.float32, device=device) * 2 + 1) / size - 1
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xs, ys], dim=-1)[None]  # (1, R, R, 2) as x, y like grid_sample


def pixel_grid(size: int, device: torch.device) -> torch.Tensor:
    """(1, R, R, 2) normalised centres of an R x R output's pixels (cached per size and device)."""
    return _pixel_grid_cached(size, str(device))


def apply_affine(theta: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Map (N, H, W, 2) points through (N, 3, 3) or (3, 3) affine matrices."""
    if theta.dim() == 2:
        theta = theta[None]
    return torch.einsum("nij,nhwj->nhwi", theta[:, :2, :2], grid) + theta[:, None, None, :2, 2]


def prefilter(faces_u8: torch.Tensor, resolution: int, src_coverage: float, model_coverage: float) -> torch.Tensor:
    """uint8 -> float [0, 1], shrunk with an antialiasing filter when the crop samples it sparser than
    1:1, so bilinear sampling afterwards does not alias (normalised coordinates ignore the size)."""
    side = faces_u8.shape[-1]
    scale = resolution * model_coverage / (side * src_coverage)
    if scale >= 1:
        return faces_u8.float().div_(255)
    size = (math.ceil(side * scale),) * 2
    if faces_u8.device.type == "cpu":
        # the CPU has a fast uint8 path; shrinking first also makes the float copy small
        return F.interpolate(faces_u8, size=size, mode="bilinear", antialias=True).float().div_(255)
    return F.interpolate(faces_u8.float().div_(255), size=size, mode="bilinear", antialias=True)


def sample(source: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of `source` at normalised `grid` points, borders repeated, clamped to [0, 1]."""
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)
