"""Warped-face augmentation, batched in torch on the training device.

The classic recipe: a random similarity (rotation, zoom, shift, flip) shared by input and target,
plus a smooth random warp applied to the input only. The model must undo the warp, so it learns
what a face of this identity looks like instead of copying pixels; because input and target share
everything but the warp, it is never asked to guess a different pose.

Everything happens in one sampling step per image: face-set crops (uint8, size S at the face set's
coverage) are re-cropped to the model's coverage and resolution with the pieces of
`engine.faces.crops` (the geometry of `engine.faces.align.recrop_matrix`), so training crops match
the crops the swap step feeds in.
"""

from __future__ import annotations

import math
from functools import lru_cache

import kornia
import torch
import torch.nn.functional as F

from engine.faces.align import FACESET_COVERAGE
from engine.faces.crops import apply_affine, pixel_grid, prefilter, recrop_theta, sample
from engine.faces.mask import face_region_mask

WARP_GRID = 5  # control points per side of the random warp
WARP_REFERENCE_SIDE = 256  # the warp strength is given in pixels of a face-set crop this big


def warp_batch(faces_u8: torch.Tensor, *, resolution: int, src_coverage: float = FACESET_COVERAGE,
               model_coverage: float, generator: torch.Generator | None = None, warp: bool = True,
               color_jitter: float = 0.0, rotation: float = 10.0, zoom: float = 0.05, shift: float = 0.05,
               flip: float = 0.4, warp_px: float = 5.0, mask: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Augment a batch: -> (warped input, target, face-mask target or None), float (N, C, R, R) in [0, 1].

    faces_u8: (N, 3, S, S) uint8 face-set crops on the training device.
    rotation: max degrees either way; zoom, shift: max fraction either way; flip: probability.
    warp_px: std-dev of the warp control points, in pixels of a 256 px crop at the face-set coverage
        (scaled to the face's size at any other resolution). `warp=False` gives input == target.
    color_jitter: max LAB shift; L moves up to 100 * j, a and b up to 32 * j (0.3 ~ faceswap's default).
    mask: also return `face_region_mask` moved by the target's transform, (N, 1, R, R); one cheap
        single-channel sample, so on by default (pass `mask=model.learn_mask` to skip it).
    """
    n, device = faces_u8.shape[0], faces_u8.device
    draw = _Draw(n, generator, device)
    augment = _random_similarity(draw, rotation, zoom, shift, flip, resolution)
    theta = recrop_theta(faces_u8.shape[-1], src_coverage, resolution, model_coverage, device) @ augment
    grid = pixel_grid(resolution, device).expand(n, -1, -1, -1)
    source = prefilter(faces_u8, resolution, src_coverage, model_coverage)
    target = sample(source, apply_affine(theta, grid))
    if warp and warp_px > 0:
        # face-relative strength: the face square spans 2 * model_coverage in normalised units
        sigma = warp_px / (WARP_REFERENCE_SIDE * FACESET_COVERAGE) * 2 * model_coverage
        warped = sample(source, apply_affine(theta, grid + _smooth_field(draw, sigma, resolution)))
    else:
        warped = target.clone()
    if color_jitter > 0:
        shifts = _lab_shifts(draw, color_jitter)
        warped, target = _shift_lab(warped, shifts), _shift_lab(target, shifts)
    mask_target = None
    if mask:
        template = _face_mask(source.shape[-1], src_coverage, str(device)).expand(n, 1, -1, -1)
        mask_target = F.grid_sample(template, apply_affine(theta, grid), mode="bilinear", padding_mode="zeros",
                                    align_corners=False)
    return warped, target, mask_target


class _Draw:
    """Random numbers from `generator` (on its own device), delivered on the batch's device."""

    def __init__(self, n: int, generator: torch.Generator | None, device: torch.device):
        self.n, self.generator, self.device = n, generator, device
        self.source_device = generator.device if generator is not None else device

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        u = torch.rand(self.n, *shape, generator=self.generator, device=self.source_device)
        return (low + (high - low) * u).to(self.device)

    def normal(self, std: float, *shape: int) -> torch.Tensor:
        z = torch.randn(self.n, *shape, generator=self.generator, device=self.source_device)
        return (std * z).to(self.device)


def _random_similarity(draw: _Draw, rotation: float, zoom: float, shift: float, flip: float,
                       resolution: int) -> torch.Tensor:
    """(N, 3, 3) output-normalised -> output-normalised: where each output pixel looks in the plain crop.

    Rotation and zoom turn about the face centre (pixel R/2 in align's convention, 1/R normalised).
    """
    angle = draw.uniform(-rotation, rotation) * (math.pi / 180)
    scale = 1 / draw.uniform(1 - zoom, 1 + zoom)  # sampling a smaller area zooms in
    mirror = torch.where(draw.uniform(0, 1) < flip, -1.0, 1.0)
    offset = draw.uniform(-2 * shift, 2 * shift, 2)  # shift is a fraction of the side = 2 units
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    m = torch.zeros(draw.n, 3, 3, device=draw.device)
    m[:, 0, 0], m[:, 0, 1] = cos * mirror, -sin
    m[:, 1, 0], m[:, 1, 1] = sin * mirror, cos
    m[:, 2, 2] = 1
    centre = torch.full((2,), 1 / resolution, device=draw.device)
    m[:, :2, 2] = centre - (m[:, :2, :2] @ centre) + offset
    return m


def _smooth_field(draw: _Draw, sigma: float, resolution: int) -> torch.Tensor:
    """(N, R, R, 2) displacement: Gaussian noise on a coarse grid, interpolated bicubically."""
    coarse = draw.normal(sigma, 2, WARP_GRID, WARP_GRID)
    dense = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=True)
    return dense.permute(0, 2, 3, 1)


@lru_cache(maxsize=8)
def _face_mask(size: int, coverage: float, device: str) -> torch.Tensor:
    return torch.from_numpy(face_region_mask(size, coverage)).to(device)[None, None]


def _lab_shifts(draw: _Draw, strength: float) -> torch.Tensor:
    return draw.uniform(-1, 1, 3, 1, 1) * torch.tensor([100.0, 32.0, 32.0], device=draw.device)[:, None, None] * strength


def _shift_lab(rgb: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move lightness and colour in LAB (perceptually even), so jitter looks like lighting changes."""
    return kornia.color.lab_to_rgb(kornia.color.rgb_to_lab(rgb) + shifts, clip=True)
