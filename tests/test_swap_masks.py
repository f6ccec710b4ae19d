"""Blend masks: face region x learned mask, erosion (uniform and per side), feathering."""

from __future__ import annotations

import numpy as np
import pytest

from engine.faces.mask import face_region_mask
from engine.swap.masks import SideErosion, blend_mask, feather

SIZE, COVERAGE = 128, 0.8


def _face_centre() -> tuple[int, int]:
    rows, cols = np.nonzero(face_region_mask(SIZE, COVERAGE) >= 0.5)
    return int(rows.mean()), int(cols.mean())


CENTRE_ROW, CENTRE_COL = _face_centre()


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last index >= 0.5 along the face's centre row (axis 1) or centre column (axis 0)."""
    inside = mask >= 0.5
    line = inside[CENTRE_ROW] if axis == 1 else inside[:, CENTRE_COL]
    hits = np.nonzero(line)[0]
    return int(hits[0]), int(hits[-1])


def test_plain_mask_is_the_face_region():
    mask = blend_mask(SIZE, COVERAGE)
    assert mask.dtype == np.float32 and mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(mask, face_region_mask(SIZE, COVERAGE))


@pytest.mark.parametrize("pixels", [3, 8])
def test_erosion_moves_every_edge_in_and_negative_moves_it_out(pixels):
    plain = blend_mask(SIZE, COVERAGE)
    eroded = blend_mask(SIZE, COVERAGE, erode=pixels)
    dilated = blend_mask(SIZE, COVERAGE, erode=-pixels)
    for axis in (0, 1):
        lo, hi = _extent(plain, axis)
        e_lo, e_hi = _extent(eroded, axis)
        d_lo, d_hi = _extent(dilated, axis)
        assert abs((e_lo - lo) - pixels) <= 1 and abs((hi - e_hi) - pixels) <= 1
        assert abs((lo - d_lo) - pixels) <= 1 and abs((d_hi - hi) - pixels) <= 1
    assert eroded.sum() < plain.sum() < dilated.sum()


@pytest.mark.parametrize(("sides", "moves"), [
    (SideErosion(left=6), ((6, 0), (0, 0))),
    (SideErosion(left=-3, right=7), ((-3, -7), (0, 0))),
    (SideErosion(top=-5, bottom=4), ((0, 0), (-5, -4))),
    (SideErosion(top=2), ((0, 0), (2, 0))),
])
def test_side_erosion_moves_only_its_own_edges(sides, moves):
    """Edge shifts (first, last index) along the centre row and column; + means toward larger index.

    1 px of slack: eroding top or bottom also narrows the centre row where the ellipse curves.
    """
    plain = blend_mask(SIZE, COVERAGE)
    sided = blend_mask(SIZE, COVERAGE, sides=sides)
    for axis, expected in ((1, moves[0]), (0, moves[1])):
        (lo, hi), (s_lo, s_hi) = _extent(plain, axis), _extent(sided, axis)
        assert abs(s_lo - lo - expected[0]) <= 1 and abs(s_hi - hi - expected[1]) <= 1, (axis, s_lo - lo, s_hi - hi)


def test_blur_feathers_the_edge_and_keeps_the_crop_border_zero():
    hard = (blend_mask(SIZE, COVERAGE) > 0.5).astype(np.float32)
    learned_everywhere = np.ones((SIZE, SIZE), np.float32)
    # coverage 1.5 pushes the face region past the crop edge: the border must still be 0
    for coverage in (COVERAGE, 1.5):
        mask = blend_mask(SIZE, coverage, learned=learned_everywhere, blur=10)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        for edge in (mask[0], mask[-1], mask[:, 0], mask[:, -1]):
            assert not edge.any()
    soft = blend_mask(SIZE, COVERAGE, blur=10)
    partial = lambda m: np.count_nonzero((m > 0.02) & (m < 0.98))  # noqa: E731
    assert partial(soft) > 1.5 * partial(blend_mask(SIZE, COVERAGE))
    assert partial(feather(hard, 6)) > 0 and partial(hard) == 0


def test_learned_mask_narrows_the_face_region():
    region = blend_mask(SIZE, COVERAGE)
    learned = np.ones((64, 64), np.float32)  # the model's own resolution
    learned[:, 32:] = 0.25  # e.g. a hand over the right half
    multiplied = blend_mask(SIZE, COVERAGE, learned=learned, combine="multiply")
    minimum = blend_mask(SIZE, COVERAGE, learned=learned, combine="min")
    left, right = (slice(None), slice(0, 60)), (slice(None), slice(68, None))
    np.testing.assert_allclose(multiplied[left], region[left], atol=1e-6)
    np.testing.assert_allclose(multiplied[right], 0.25 * region[right], atol=1e-6)
    np.testing.assert_allclose(minimum[right], np.minimum(region[right], 0.25), atol=1e-6)
    assert minimum.sum() > multiplied.sum()


def test_bad_options_are_rejected():
    with pytest.raises(ValueError):
        blend_mask(SIZE, COVERAGE, combine="max")
    with pytest.raises(ValueError):
        blend_mask(SIZE, COVERAGE, blur=-2)
