"""The identity loss: 1 - cos(SFace(swapped face), B's mean embedding), differentiable end to end.

A model's crops are not SFace's: they show the face square (engine.faces.align, ArcFace's 5-point
template) at the model's coverage c and resolution R, and SFace wants that template exactly at 112 px
(coverage 1). `to_sface_input` re-crops with `align.recrop_matrix(R, c, 112, 1)` as a grid_sample
(the same pieces as engine.faces.crops, so all crops agree where the face is), flips RGB to BGR and
scales to 0-255. B's target is the unit-normalised mean of the unit embeddings of B's face-set faces,
cut exactly like the model's own crops, so a perfect reconstruction of B scores as B's faces do.

Why `robust` (the training default): pulled plainly, a model learns SFace's blind spots instead of B's
face. After 20 minutes on talk1 -> Hader the plain loss had the swaps at cosine 0.997 to Hader's mean,
above Hader's own photos (0.76), while dlib (evaluation's independent judge) still saw no Hader in
them (docs/benchmarks.md). So a robust loss (1) shows SFace each swapped face under a random flip, turn,
scale and shift (`jitter_thetas`), which a pixel-exact pattern does not survive and a face does, and
(2) stops pulling a face once it is as like B as B's own photos are (`ceiling`), so the loss never
asks for more B than B's photos show.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.faces.crops import apply_affine, center_crop_batch, pixel_grid, recrop_theta, sample

from .sface import DIMS, SIZE

JITTER_DEGREES = 6.0  # the robust loss's random turn of each swapped face, at most this many degrees
JITTER_SCALE = 0.06  # ... its random scale, within 1 +- this
JITTER_SHIFT = 0.05  # ... its random shift, within +- this share of the crop's side, each way
MEAN_FACES = 256  # faces of B's set (evenly spread) that its mean embedding averages (about 25 ms each here)
CHUNK = 8  # faces per SFace call while averaging (8: 3.6 s for 142 faces here, 64: 7.0 s)


def jitter_thetas(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3, 3) random similarity maps of SFace's input square (normalised coordinates): a mirror
    half of the time, a turn, a scale and a shift within the JITTER_ limits."""
    device = generator.device
    u = torch.rand(count, 4, generator=generator, device=device) * 2 - 1
    flip = torch.where(torch.rand(count, generator=generator, device=device) < 0.5, -1.0, 1.0)
    angle, scale = u[:, 0] * math.radians(JITTER_DEGREES), 1 + u[:, 1] * JITTER_SCALE
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(count, 3, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip, -sin, u[:, 2] * 2 * JITTER_SHIFT
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip, cos, u[:, 3] * 2 * JITTER_SHIFT
    theta[:, 2, 2] = 1
    return theta


def to_sface_input(rgb: torch.Tensor, coverage: float, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3, R, R) RGB in [0, 1], a model crop at `coverage` -> (N, 3, 112, 112) BGR 0-255 aligned to
    ArcFace's template (SFace's input), each moved by its `jitter` map first when given ((N, 3, 3),
    `jitter_thetas`). Differentiable in `rgb`."""
    side = rgb.shape[-1]
    theta = recrop_theta(side, coverage, SIZE, 1.0, rgb.device)
    theta = theta.expand(rgb.shape[0], -1, -1) if jitter is None else theta @ jitter.to(rgb.device)
    scale = SIZE / (side * coverage)  # output pixels per input pixel
    if scale < 1:  # shrinking: antialias first (normalised coordinates ignore the size)
        rgb = F.interpolate(rgb, size=(math.ceil(side * scale),) * 2, mode="bilinear", antialias=True)
    grid = apply_affine(theta, pixel_grid(SIZE, rgb.device))
    return sample(rgb.float(), grid).flip(1) * 255


class IdentityLoss:
    """SFace (engine.identity.sface.load) judging a model's crops at `coverage`.

    With a `generator`, each call jitters the swapped faces (`jitter_thetas`) before SFace sees them;
    with a `ceiling` (a cosine: B's own photos' mean likeness to B's mean, `own_likeness`), a face
    already that like B adds nothing. Neither: the plain 1 - cosine.
    """

    def __init__(self, net: nn.Module, coverage: float, *, generator: torch.Generator | None = None,
                 ceiling: float | None = None) -> None:
        self.net, self.coverage, self.generator, self.ceiling = net, coverage, generator, ceiling

    def embed(self, rgb: torch.Tensor, jitter: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, R, R) model crops -> (N, 128) unit embeddings."""
        return F.normalize(self.net(to_sface_input(rgb, self.coverage, jitter)), dim=1)

    def __call__(self, swapped_rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch mean of 1 - cos(SFace(swapped_rgb), target): 0 for the target's identity, about 1
        for an unrelated face; with a ceiling, no less than 1 - ceiling per face (no pull beyond it).
        `target`: (128,) unit vector (`mean_embedding`)."""
        jitter = None if self.generator is None else jitter_thetas(len(swapped_rgb), self.generator)
        distance = 1 - self.embed(swapped_rgb, jitter) @ target
        if self.ceiling is not None:
            distance = distance.clamp(min=1 - self.ceiling)
        return distance.mean()

    @torch.no_grad()
    def embeddings(self, faces_u8: torch.Tensor, src_coverage: float, resolution: int) -> torch.Tensor:
        """(M, 128) unit embeddings of face-set faces ((N, 3, S, S) uint8 RGB at `src_coverage`; up to
        MEAN_FACES of them, evenly spread), each cut as the model's crop of `resolution` first."""
        picks = np.unique(np.linspace(0, len(faces_u8) - 1, num=min(MEAN_FACES, len(faces_u8))).round())
        faces_u8 = faces_u8[torch.from_numpy(picks.astype(np.int64)).to(faces_u8.device)]
        chunks = [self.embed(center_crop_batch(faces_u8[start:start + CHUNK], resolution=resolution,
                                               src_coverage=src_coverage, model_coverage=self.coverage))
                  for start in range(0, len(faces_u8), CHUNK)]
        return torch.cat(chunks) if chunks else torch.zeros(0, DIMS, device=faces_u8.device)

    def mean_embedding(self, faces_u8: torch.Tensor, src_coverage: float, resolution: int) -> torch.Tensor:
        """(128,) unit mean of `embeddings` of the faces: B's target."""
        return unit_mean(self.embeddings(faces_u8, src_coverage, resolution))


def unit_mean(embeddings: torch.Tensor) -> torch.Tensor:
    """(N, D) or (D,) -> (D,): the unit-normalised sum (mean) over the first axis of a 2-D input, or
    a 1-D vector normalised (e.g. ranks' means averaged by the cluster)."""
    return F.normalize(embeddings.sum(0) if embeddings.dim() == 2 else embeddings, dim=0)


def own_likeness(embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cosine of B's own faces' embeddings to B's mean `target`: the robust loss's ceiling."""
    return (embeddings @ target).mean()
