"""Single-frame temporal regularisation (Eilertsen, Mantiuk & Unger, CVPR 2019): a network applied to one
frame at a time flickers in video when a small motion of its input changes its output by more than that
motion. Each step also feeds the inputs moved by a small random similarity (a sub-pixel shift, a fraction of
a degree, a percent of zoom: what a face does in its aligned crop between two frames) and penalises the
difference between the output of the moved input and the moved output. It needs no video to train on.

The moved inputs go through the network in the same forward pass as the plain ones (one forward per step,
as DistributedDataParallel expects).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch

MAX_SHIFT_PX = 1.0  # of the input's pixels, each axis
MAX_DEGREES = 1.0
MAX_ZOOM = 0.01  # a scale within 1 +- this
BORDER_PX = 4  # of the input's pixels: left out of the comparison, where the moved images lost content


@dataclass(frozen=True)
class Motion:
    """One small similarity per image: about the image centre, `shift` in input pixels."""

    angle: torch.Tensor  # (N,) degrees
    zoom: torch.Tensor  # (N,)
    shift: torch.Tensor  # (N, 2) x, y

    @staticmethod
    def draw(n: int, generator: torch.Generator, device: torch.device) -> Motion:
        def uniform(*shape: int) -> torch.Tensor:
            return (2 * torch.rand(*shape, generator=generator, device=generator.device) - 1).to(device)
        return Motion(MAX_DEGREES * uniform(n), 1 + MAX_ZOOM * uniform(n), MAX_SHIFT_PX * uniform(n, 2))

    def apply(self, images: torch.Tensor, factor: int = 1) -> torch.Tensor:
        """`images` (N, C, S, S) moved; `factor`: their side over the input's (the same motion at 2x or 4x)."""
        n, _, h, w = images.shape
        centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=images.device).expand(n, 2)
        matrix = kornia.geometry.transform.get_rotation_matrix2d(
            centre, self.angle.to(images.dtype), torch.stack([self.zoom, self.zoom], dim=1).to(images.dtype))
        matrix[:, :, 2] += factor * self.shift.to(images.dtype)
        return kornia.geometry.transform.warp_affine(images, matrix, (h, w), mode="bicubic",
                                                     padding_mode="border", align_corners=True)


def stability_loss(output: torch.Tensor, output_of_moved: torch.Tensor, motion: Motion, factor: int) -> torch.Tensor:
    """Mean absolute difference between the output of the moved input and the moved output, inside the
    border (`factor`: the output's side over the input's)."""
    b = BORDER_PX * factor
    expected = motion.apply(output, factor)
    return (output_of_moved - expected)[..., b:-b, b:-b].abs().mean()
