"""Reconstruction and mask losses: zero when right, ordered sensibly when wrong."""

from __future__ import annotations

import pytest
import torch

from engine.errors import UserError
from engine.faces.align import template_points
from engine.train.losses import PIXEL_ERRORS, eye_mouth_map, make_loss, mask_loss

R, COVERAGE = 64, 0.85


def smooth_images(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(R, R), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("name", sorted(PIXEL_ERRORS))
@pytest.mark.parametrize("eye_mouth_weight", [0.0, 3.0])
def test_identical_images_cost_nothing(name, eye_mouth_weight):
    images = smooth_images()
    loss = make_loss(name, R, COVERAGE, eye_mouth_weight=eye_mouth_weight)(images, images.clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert loss.dim() == 0


@pytest.mark.parametrize("name", sorted(PIXEL_ERRORS))
def test_slight_noise_costs_less_than_scrambled_pixels(name):
    images = smooth_images()
    noisy = (images + 0.02 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    order = torch.randperm(R * R, generator=torch.Generator().manual_seed(2))
    shuffled = images.flatten(2)[..., order].view_as(images)
    loss = make_loss(name, R, COVERAGE)
    assert 0 < loss(noisy, images) < loss(shuffled, images)


def test_ssim_mse_gradients_reach_the_prediction():
    pred = smooth_images(seed=3).requires_grad_()
    make_loss("ssim_mse", R, COVERAGE)(pred, smooth_images()).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_eye_mouth_weight_makes_errors_on_features_cost_more():
    target = torch.full((1, 3, R, R), 0.5)
    eye_x, eye_y = template_points(R, COVERAGE)[0].round().astype(int)
    on_eye, on_corner = target.clone(), target.clone()
    on_eye[..., eye_y - 1:eye_y + 2, eye_x - 1:eye_x + 2] = 1.0
    on_corner[..., 0:3, 0:3] = 1.0
    plain = make_loss("mae", R, COVERAGE)
    weighted = make_loss("mae", R, COVERAGE, eye_mouth_weight=4.0)
    assert plain(on_eye, target).item() == pytest.approx(plain(on_corner, target).item())
    assert weighted(on_eye, target) > 2 * weighted(on_corner, target)


def test_eye_mouth_map_sits_on_the_features():
    weights = eye_mouth_map(R, COVERAGE)
    for x, y in template_points(R, COVERAGE)[[0, 1]].round().astype(int):
        assert weights[y, x] == 1.0
    assert weights[0, 0] == 0.0 and weights.max() <= 1.0 and weights.min() >= 0.0


def test_mask_loss():
    mask = torch.rand(2, 1, R, R, generator=torch.Generator().manual_seed(4))
    assert mask_loss(mask, mask.clone()).item() == 0.0
    assert mask_loss(mask, 1 - mask).item() > 0.01


def test_unknown_loss_is_a_user_error():
    with pytest.raises(UserError, match="mae"):
        make_loss("l7", R, COVERAGE)


def test_background_weight_spends_the_loss_on_the_face():
    target = torch.full((1, 3, R, R), 0.5)
    face = torch.zeros(1, 1, R, R)
    face[..., 16:48, 16:48] = 1.0
    on_face, on_background = target.clone(), target.clone()
    on_face[..., 30:34, 30:34] = 1.0
    on_background[..., 0:4, 0:4] = 1.0
    plain = make_loss("mae", R, COVERAGE)
    masked = make_loss("mae", R, COVERAGE, background_weight=0.1)
    assert plain(on_face, target).item() == pytest.approx(plain(on_background, target).item())
    assert masked.needs_mask and not plain.needs_mask
    assert masked(on_face, target, face) == pytest.approx(10 * masked(on_background, target, face).item())
    # the weights are normalised: a uniform error costs what it costs unmasked
    assert masked(target + 0.1, target, face).item() == pytest.approx(0.1, rel=1e-4)
    with pytest.raises(ValueError, match="mask"):
        masked(on_face, target)


def test_background_weight_outside_0_to_1_is_a_user_error():
    with pytest.raises(UserError, match="background weight"):
        make_loss("mae", R, COVERAGE, background_weight=1.5)
