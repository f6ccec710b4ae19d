"""Warped-face augmentation and the face-region mask: geometry shared with alignment, and the recipe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine.faces.align import FACESET_COVERAGE, recrop_matrix, template_points, warp_face
from engine.faces.crops import center_crop_batch
from engine.faces.mask import face_region_mask
from engine.models import MODEL_COVERAGE
from engine.train.augment import warp_batch

S, R = 128, 64  # small face-set crops keep the tests fast; the geometry does not depend on size
NO_AUGMENT = {"rotation": 0.0, "zoom": 0.0, "shift": 0.0, "flip": 0.0}


def smooth_faces(n: int = 4, seed: int = 0) -> np.ndarray:
    """(n, S, S, 3) uint8: random blobs blurred so that interpolation methods agree closely."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, size=(n, 8, 8, 3)).astype(np.float32)
    return np.stack([cv2.resize(img, (S, S), interpolation=cv2.INTER_CUBIC) for img in noise]).clip(0, 255) \
        .astype(np.uint8)


def as_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def test_center_crop_matches_alignment_recrop():
    images = smooth_faces()
    crop = center_crop_batch(as_batch(images), resolution=R, src_coverage=FACESET_COVERAGE,
                             model_coverage=MODEL_COVERAGE)
    got = crop.permute(0, 2, 3, 1).numpy() * 255
    matrix = recrop_matrix(S, FACESET_COVERAGE, R, MODEL_COVERAGE)

    def error(shift_px: float) -> float:
        shifted = matrix + np.array([[0, 0, shift_px], [0, 0, shift_px]])
        return float(np.abs(got - np.stack([warp_face(img, shifted, R) for img in images])).mean())

    # interpolation filters differ, so compare with what half a pixel of misplacement would cost
    assert error(0.0) < 0.5 * min(error(0.5), error(-0.5))


def test_outputs_are_unit_range_images_of_the_model_size():
    faces = as_batch(smooth_faces(3))
    warped, target, mask = warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE,
                                      color_jitter=0.3, generator=torch.Generator().manual_seed(0))
    assert warped.shape == target.shape == (3, 3, R, R) and mask.shape == (3, 1, R, R)
    for t in (warped, target, mask):
        assert t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    assert warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, mask=False)[2] is None


def test_without_augmentation_the_target_is_the_centre_crop():
    faces = as_batch(smooth_faces())
    crop = center_crop_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE)
    warped, target, _ = warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, warp=False, **NO_AUGMENT)
    torch.testing.assert_close(target, crop, atol=1e-5, rtol=0)
    torch.testing.assert_close(warped, crop, atol=1e-5, rtol=0)


def test_unaugmented_mask_target_is_the_swap_mask_of_the_model_crop():
    faces = as_batch(smooth_faces(1))
    _, _, mask = warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, warp=False, **NO_AUGMENT)
    swap_mask = torch.from_numpy(face_region_mask(R, MODEL_COVERAGE))
    assert (mask[0, 0] - swap_mask).abs().mean() < 0.01


def test_warp_moves_the_input_only():
    faces = as_batch(smooth_faces())
    crop = center_crop_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE)
    warped, target, _ = warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, warp=True,
                                   generator=torch.Generator().manual_seed(1), **NO_AUGMENT)
    torch.testing.assert_close(target, crop, atol=1e-5, rtol=0)
    assert (warped - target).abs().mean() > 0.01


def test_same_generator_seed_same_batch():
    faces = as_batch(smooth_faces(2))

    def run():
        return warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, color_jitter=0.2,
                          generator=torch.Generator().manual_seed(7))

    for first, second in zip(run(), run(), strict=True):
        assert (first is None and second is None) or torch.equal(first, second)


def test_random_similarity_moves_target_and_mask_together():
    faces = as_batch(smooth_faces(8))
    crop = center_crop_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE)
    _, target, mask = warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, warp=False, mask=True,
                                 rotation=10, zoom=0.05, shift=0.05, flip=0.4,
                                 generator=torch.Generator().manual_seed(3))
    moved = (target - crop).abs().flatten(1).mean(1)
    assert (moved > 0.01).all()
    plain_mask = torch.from_numpy(face_region_mask(R, MODEL_COVERAGE))
    assert ((mask[:, 0] - plain_mask).abs().flatten(1).mean(1) > 0.001).all()


def test_flip_mirrors_left_and_right():
    half = np.zeros((1, S, S, 3), np.uint8)
    half[:, :, : S // 2] = 255
    _, target, _ = warp_batch(as_batch(half), resolution=R, model_coverage=MODEL_COVERAGE, warp=False,
                              **{**NO_AUGMENT, "flip": 1.0})
    assert target[..., : R // 2 - 2].mean() < 0.01 and target[..., R // 2 + 2:].mean() > 0.99


def test_color_jitter_changes_colour_the_same_way_in_input_and_target():
    faces = as_batch(smooth_faces())
    crop = center_crop_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE)
    warped, target, _ = warp_batch(faces, resolution=R, model_coverage=MODEL_COVERAGE, warp=False,
                                   color_jitter=0.3, generator=torch.Generator().manual_seed(2), **NO_AUGMENT)
    assert torch.equal(warped, target)
    assert (target - crop).abs().mean() > 0.02


@pytest.mark.parametrize("coverage", [0.6, MODEL_COVERAGE, 1.0])
def test_face_region_mask_covers_the_features_not_the_corners(coverage):
    size = 96
    mask = face_region_mask(size, coverage)
    assert mask.shape == (size, size) and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1
    for x, y in template_points(size, coverage).round().astype(int):
        assert mask[y, x] == pytest.approx(1.0)
    corners = mask[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all()
