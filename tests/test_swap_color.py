"""Colour correction on real face crops: Carell's face corrected toward Hader's (boxes.csv crops)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import wasserstein_distance
from skimage import color

from engine.errors import UserError
from engine.faces.mask import face_region_mask
from engine.swap import color as swap_color
from engine.swap.color import COLOR_MODES, correct_color, register_color_mode

PEOPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "people"
SIZE = 128


def _box_crop(name: str) -> np.ndarray:
    """The boxed face from boxes.csv as an RGB SIZE x SIZE crop (boxes are square, face-centred)."""
    with open(PEOPLE / "boxes.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["file"] == name)
    image = cv2.cvtColor(cv2.imread(str(PEOPLE / name)), cv2.COLOR_BGR2RGB)
    x1, y1, x2, y2 = (int(row[k]) for k in ("x1", "y1", "x2", "y2"))
    return cv2.resize(image[y1:y2, x1:x2], (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (PEOPLE / "boxes.csv").exists():
        pytest.skip("shared people photos not available")
    generated = _box_crop("carell/carell0.jpg")
    destination = _box_crop("hader/hader1.jpg")
    return generated, destination, face_region_mask(SIZE, 1.0)


def _masked_lab_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = color.rgb2lab(image)[mask > 0.5]
    return lab.mean(axis=0), lab.std(axis=0)


def test_reinhard_moves_masked_lab_statistics_to_destination(faces):
    generated, destination, mask = faces
    out = correct_color(generated, destination, mask, "reinhard")
    gen_mean, gen_std = _masked_lab_stats(generated, mask)
    dst_mean, dst_std = _masked_lab_stats(destination, mask)
    out_mean, out_std = _masked_lab_stats(out, mask)
    before = np.linalg.norm(gen_mean - dst_mean)
    assert before > 5  # the two faces really differ in colour
    assert np.linalg.norm(out_mean - dst_mean) < 0.2 * before
    assert np.abs(out_std - dst_std).sum() < 0.5 * np.abs(gen_std - dst_std).sum()


def test_hist_matching_brings_masked_histograms_closer(faces):
    generated, destination, mask = faces
    out = correct_color(generated, destination, mask, "hist")
    face = mask > 0.5
    for c in range(3):
        before = wasserstein_distance(generated[..., c][face], destination[..., c][face])
        after = wasserstein_distance(out[..., c][face], destination[..., c][face])
        assert after < 0.25 * before, f"channel {c}: {before:.2f} -> {after:.2f}"


def test_average_matches_masked_rgb_means(faces):
    generated, destination, mask = faces
    out = correct_color(generated, destination, mask, "average")
    face = mask > 0.5
    before = np.abs(generated[face].mean(axis=0) - destination[face].mean(axis=0))
    after = np.abs(out[face].mean(axis=0) - destination[face].mean(axis=0))
    assert before.max() > 5
    assert after.max() < 2.0  # only clipping at 0/255 keeps it from exact


@pytest.mark.parametrize("mode", sorted(COLOR_MODES))
def test_strength_zero_returns_input_and_none_is_identity(faces, mode):
    generated, destination, mask = faces
    np.testing.assert_array_equal(correct_color(generated, destination, mask, mode, strength=0.0), generated)
    np.testing.assert_array_equal(correct_color(generated, destination, mask, "none"), generated)


def test_strength_mixes_corrected_and_raw(faces):
    generated, destination, mask = faces
    full = correct_color(generated, destination, mask, "reinhard", strength=1.0).astype(float)
    half = correct_color(generated, destination, mask, "reinhard", strength=0.5).astype(float)
    np.testing.assert_allclose(half, (full + generated) / 2, atol=1.0)
    assert np.abs(full - generated).mean() > 5


@pytest.mark.parametrize("mode", ["reinhard", "hist", "average"])
def test_only_masked_destination_pixels_matter(faces, mode):
    """Repainting the destination's background must not change the correction."""
    generated, destination, mask = faces
    painted = destination.copy()
    painted[mask == 0] = (0, 255, 0)
    np.testing.assert_array_equal(correct_color(generated, painted, mask, mode),
                                  correct_color(generated, destination, mask, mode))


def test_correction_applies_across_the_whole_crop(faces):
    """The transfer also recolours pixels outside the statistics mask (the blend mask may be wider)."""
    generated, destination, mask = faces
    out = correct_color(generated, destination, mask, "reinhard")
    rim = (mask > 0) & (mask < 0.5)
    assert np.abs(out[rim].astype(float) - generated[rim]).mean() > 3


def test_empty_mask_leaves_face_unchanged(faces):
    generated, destination, _ = faces
    empty = np.zeros(generated.shape[:2], np.float32)
    np.testing.assert_array_equal(correct_color(generated, destination, empty, "reinhard"), generated)


def test_bad_mode_and_strength_are_user_errors(faces):
    generated, destination, mask = faces
    with pytest.raises(UserError, match="reinhard"):
        correct_color(generated, destination, mask, "rct2")
    with pytest.raises(UserError):
        correct_color(generated, destination, mask, "reinhard", strength=1.5)
    with pytest.raises(ValueError):
        correct_color(generated, destination[:64], mask, "reinhard")


def test_a_new_mode_registers_in_one_place(faces, monkeypatch):
    generated, destination, mask = faces
    monkeypatch.setattr(swap_color, "COLOR_MODES", dict(COLOR_MODES))

    @register_color_mode("invert")
    def _invert(gen, dst, weights):  # batches of (N, 3, H, W) faces in [0, 1]
        return 1.0 - gen

    np.testing.assert_array_equal(correct_color(generated, destination, mask, "invert"), 255 - generated)
    with pytest.raises(ValueError, match="already registered"):
        register_color_mode("invert")(_invert)


@pytest.mark.parametrize("mode", sorted(COLOR_MODES))
def test_a_batch_is_corrected_face_by_face(faces, mode):
    """The swap corrects all faces of a frame batch in one call: each face as if alone, on its own statistics."""
    import torch

    generated, destination, mask = faces
    flipped = np.ascontiguousarray(destination[:, ::-1])
    batch = swap_color.correct_faces(swap_color.to_tensor(np.stack([generated, generated])),
                                     swap_color.to_tensor(np.stack([destination, flipped])),
                                     torch.from_numpy(mask), mode, 0.7)
    alone = [correct_color(generated, d, mask, mode, 0.7) for d in (destination, flipped)]
    assert np.abs(swap_color.to_uint8(batch).astype(int) - np.stack(alone)).max() <= 1
