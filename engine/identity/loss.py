"""The identity loss: 1 - cos(SFace(swapped face), B's mean embedding), differentiable end to end.

A model's crops are not SFace's: they show the face square (engine.faces.align, ArcFace's 5-point
template) at the model's coverage c and resolution R, and SFace wants that template exactly at 112 px
(coverage 1). `to_sface_input` re-crops with `align.recrop_matrix(R, c, 112, 1)` as a grid_sample
(the same pieces as engine.faces.crops, so all crops agree where the face is), flips RGB to BGR and
scales to 0-255. B's target is the unit-normalised mean of the unit embeddings of B's face-set faces,
cut exactly like the model's own crops, so a perfect reconstruction of B scores as B's faces do.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.faces.crops import apply_affine, center_crop_batch, pixel_grid, recrop_theta, sample

from .sface import DIMS, SIZE

MEAN_FACES = 256  # faces of B's set (evenly spread) that its mean embedding averages (about 25 ms each here)
CHUNK = 8  # faces per SFace call while averaging (8: 3.6 s for 142 faces here, 64: 7.0 s)


def to_sface_input(rgb: torch.Tensor, coverage: float) -> torch.Tensor:
    """(N, 3, R, R) RGB in [0, 1], a model crop at `coverage` -> (N, 3, 112, 112) BGR 0-255 aligned to
    ArcFace's template (SFace's input). Differentiable in `rgb`."""
    side = rgb.shape[-1]
    theta = recrop_theta(side, coverage, SIZE, 1.0, rgb.device)
    scale = SIZE / (side * coverage)  # output pixels per input pixel
    if scale < 1:  # shrinking: antialias first (normalised coordinates ignore the size)
        rgb = F.interpolate(rgb, size=(math.ceil(side * scale),) * 2, mode="bilinear", antialias=True)
    grid = apply_affine(theta.expand(rgb.shape[0], -1, -1), pixel_grid(SIZE, rgb.device))
    return sample(rgb.float(), grid).flip(1) * 255


class IdentityLoss:
    """SFace (engine.identity.sface.load) judging a model's crops at `coverage`."""

    def __init__(self, net: nn.Module, coverage: float) -> None:
        self.net, self.coverage = net, coverage

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) model crops -> (N, 128) unit embeddings."""
        return F.normalize(self.net(to_sface_input(rgb, self.coverage)), dim=1)

    def __call__(self, swapped_rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch mean of 1 - cos(SFace(swapped_rgb), target): 0 for the target's identity, about 1
        for an unrelated face. `target`: (128,) unit vector (`mean_embedding`)."""
        return 1 - (self.embed(swapped_rgb) @ target).mean()

    @torch.no_grad()
    def mean_embedding(self, faces_u8: torch.Tensor, src_coverage: float, resolution: int) -> torch.Tensor:
        """(128,) unit mean of the unit embeddings of face-set faces ((N, 3, S, S) uint8 RGB at
        `src_coverage`, up to MEAN_FACES of them, evenly spread), each cut as the model's crop of
        `resolution` first."""
        picks = np.unique(np.linspace(0, len(faces_u8) - 1, num=min(MEAN_FACES, len(faces_u8))).round())
        faces_u8 = faces_u8[torch.from_numpy(picks.astype(np.int64)).to(faces_u8.device)]
        total = torch.zeros(DIMS, device=faces_u8.device)
        for start in range(0, len(faces_u8), CHUNK):
            crops = center_crop_batch(faces_u8[start:start + CHUNK], resolution=resolution,
                                      src_coverage=src_coverage, model_coverage=self.coverage)
            total += self.embed(crops).sum(0)
        return F.normalize(total, dim=0)
