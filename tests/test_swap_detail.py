"""Fine detail from the frame (engine.swap.detail): only the band finer than the new face's pixels
moves, on luminance only, and it makes a model-sized face as sharp as the frame it lands in."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from engine.evaluate.metrics import sharpness_ratio
from engine.faces import align
from engine.models import MODEL_COVERAGE
from engine.swap.detail import fine_detail, skin_weight, with_detail
from engine.swap.masks import blend_mask
from engine.swap.settings import BLEND_SIZE

ASTRONAUT_POINTS = np.array([(204, 101), (247, 102), (225, 126), (205, 140), (245, 140)], np.float64)  # eyes, nose, mouth


@pytest.fixture(scope="module")
def destination() -> np.ndarray:
    """The astronaut's face, aligned at the blend size like a swap's destination crop."""
    matrix = align.alignment_matrix(ASTRONAUT_POINTS, BLEND_SIZE, MODEL_COVERAGE)
    return align.warp_face(data.astronaut(), matrix, BLEND_SIZE)


def _round_trip(image: np.ndarray, size: int) -> np.ndarray:
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, image.shape[:2][::-1], interpolation=cv2.INTER_CUBIC)


def test_the_band_is_what_a_small_face_cannot_hold(destination):
    band = fine_detail(destination, 64)
    assert band.shape == destination.shape[:2] and band.dtype == np.float32
    assert abs(float(band.mean())) < 1.0  # a high-pass: no brightness of its own
    # little of what a 64 px face carries is in it: its own round trip through 64 px keeps about a quarter
    assert np.abs(_round_trip(band, 64)).mean() < 0.35 * np.abs(band).mean()
    assert not fine_detail(destination, BLEND_SIZE).any()  # a face as large as the crop misses nothing
    flat = np.full_like(destination, 128)
    assert np.abs(fine_detail(flat, 64)).max() < 1e-3


def test_a_model_sized_face_regains_the_frames_sharpness_and_keeps_its_colours(destination):
    mask = blend_mask(BLEND_SIZE, MODEL_COVERAGE, blur=6)
    soft = _round_trip(destination, 64)  # the best a 64 px model can paste
    assert with_detail(soft, destination, 64, 0.0) is soft
    restored = with_detail(soft, destination, 64, 1.0)
    before, after = sharpness_ratio(soft, destination, mask), sharpness_ratio(restored, destination, mask)
    assert before < 0.3 and after > 0.8, (before, after)
    half = sharpness_ratio(with_detail(soft, destination, 64, 0.5), destination, mask)
    assert before < half < after
    # luminance only: every channel moves by the same amount (up to clipping at 0 and 255)
    moved = restored.astype(int) - soft.astype(int)
    inside = (restored > 0).all(axis=2) & (restored < 255).all(axis=2)
    assert np.abs(moved[..., 0] - moved[..., 1])[inside].max() <= 1
    assert np.abs(moved[..., 1] - moved[..., 2])[inside].max() <= 1


def test_the_skin_weight_keeps_the_features_the_models(destination):
    weight = skin_weight(BLEND_SIZE, MODEL_COVERAGE)
    assert weight.shape == (BLEND_SIZE, BLEND_SIZE) and 0.0 <= weight.min() and weight.max() <= 1.0
    eye_l, eye_r, nose, mouth_l, mouth_r = align.template_points(BLEND_SIZE, MODEL_COVERAGE).round().astype(int)
    for x, y in (eye_l, eye_r, nose, (mouth_l + mouth_r) // 2):
        assert weight[y, x] < 0.01  # the eyes, nose and mouth take nothing from the frame
    cheek = ((eye_l + mouth_l) // 2 - [(eye_r - eye_l)[0] // 3, 0]).astype(int)
    assert weight[cheek[1], cheek[0]] > 0.99
    soft = _round_trip(destination, 64)
    skin = with_detail(soft, destination, 64, 1.0, weight)
    untouched = weight < 1e-3
    assert untouched.sum() > 0.02 * weight.size  # the feathered blobs fall to zero at their hearts
    assert np.array_equal(skin[untouched], soft[untouched])
    assert not np.array_equal(skin[weight > 0.99], soft[weight > 0.99])


def test_the_features_take_only_the_finest_band_and_the_skin_none_of_it(destination):
    weight = skin_weight(BLEND_SIZE, MODEL_COVERAGE)
    soft = _round_trip(destination, 64)
    sharp = with_detail(soft, destination, 64, 0.0, weight, features=1.0)
    skin = weight > 0.99
    assert np.array_equal(sharp[skin], soft[skin])  # the skin keeps the model's face
    hearts = weight < 1e-3
    assert not np.array_equal(sharp[hearts], soft[hearts])
    # only what a 128 px face could not hold: little of it is left in a destination already seen through
    # 128 px (about 40 %: area down and bicubic up is not an exact projection), less still in one seen through 64
    finest = np.abs(fine_detail(destination, 128)).mean()
    assert np.abs(fine_detail(_round_trip(destination, 128), 128)).mean() < 0.45 * finest
    assert finest < 0.8 * np.abs(fine_detail(destination, 64)).mean()
    band = sharp.astype(int) - soft.astype(int)
    inside = (sharp > 0).all(axis=2) & (sharp < 255).all(axis=2)
    expected = np.rint(fine_detail(destination, 128) * (1.0 - weight))
    assert np.abs(band[..., 0] - expected)[inside].max() <= 1
    mask = blend_mask(BLEND_SIZE, MODEL_COVERAGE, blur=6)
    assert sharpness_ratio(sharp, destination, mask) > 2 * sharpness_ratio(soft, destination, mask)
    # without a skin weight there is no telling features from skin: the feature share adds nothing
    assert with_detail(soft, destination, 64, 0.0, None, features=1.0) is soft
