"""The colour net's single-frame temporal regulariser (engine.train.stability): its motions and its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from skimage import data

from engine.train.stability import BORDER_PX, Motion, stability_loss


def motion(angle=0.0, zoom=1.0, shift=(0.0, 0.0)) -> Motion:
    return Motion(torch.tensor([angle]), torch.tensor([zoom]), torch.tensor([shift]))


def astronaut(side: int) -> torch.Tensor:
    """The astronaut's face, (1, 3, side, side) in [0, 1]."""
    face = torch.from_numpy(data.astronaut()[:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(face, size=side, mode="area")


def test_no_motion_leaves_the_image_and_a_whole_pixel_shift_moves_it_by_that_pixel():
    face = astronaut(64)
    assert torch.allclose(motion().apply(face), face, atol=1e-5)
    moved = motion(shift=(1.0, 0.0)).apply(face)  # one pixel to the right
    assert torch.allclose(moved[..., 1:], face[..., :-1], atol=1e-5)
    moved = motion(shift=(0.0, 1.0)).apply(face, factor=2)  # one input pixel down = two output pixels
    assert torch.allclose(moved[..., 2:, :], face[..., :-2, :], atol=1e-5)


def test_a_network_that_follows_the_motion_scores_nothing_and_one_that_ignores_it_scores_high():
    face, m = astronaut(64), Motion.draw(4, torch.Generator().manual_seed(0), torch.device("cpu"))
    faces = face.expand(4, -1, -1, -1)
    assert stability_loss(faces, m.apply(faces), m, 1) < 1e-6  # the identity is equivariant

    def upscale(x):  # a 2x network that follows the motion up to interpolation
        return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)

    follows = stability_loss(upscale(faces), upscale(m.apply(faces)), m, 2)
    ignores = stability_loss(upscale(faces), upscale(faces), m, 2)  # draws the same face wherever it moved
    assert follows < ignores / 3, (follows, ignores)
    wrong = Motion(m.angle, m.zoom, -m.shift)  # follows the opposite motion
    assert stability_loss(upscale(faces), upscale(wrong.apply(faces)), m, 2) > 3 * follows


def test_the_drawn_motions_stay_small_and_the_border_is_left_out():
    m = Motion.draw(1000, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert m.shift.abs().max() <= 1.0 and m.angle.abs().max() <= 1.0 and (m.zoom - 1).abs().max() <= 0.01
    out = torch.zeros(1, 3, 32, 32)
    rim = out.clone()
    rim[..., :BORDER_PX, :] = 1.0  # differs only inside the border
    assert stability_loss(out, rim, motion(), 1) == 0
