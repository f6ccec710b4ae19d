"""Pasting a swapped face back: the astronaut's face replaced by Obama's (obama_small.jpg).

Both photos and their hand-checked landmarks come from the `astronaut_and_obama` fixture (conftest).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.errors import UserError
from engine.faces.align import alignment_matrix, invert, warp_face
from engine.swap.blend import BLEND_MODES, blend, place_face
from engine.swap.color import correct_color
from engine.swap.masks import blend_mask

SIZE, COVERAGE = 128, 0.8
MODES = sorted(BLEND_MODES)


@pytest.fixture(scope="module")
def swap(astronaut_and_obama) -> dict:
    """Frame, matrix, blend mask, and Obama's face colour-matched to the astronaut (aligned)."""
    photos = astronaut_and_obama
    frame = photos.frame
    matrix = alignment_matrix(photos.frame_points, SIZE, COVERAGE)
    destination = warp_face(frame, matrix, SIZE)
    mask = blend_mask(SIZE, COVERAGE, erode=2, blur=6)
    source = warp_face(photos.face, alignment_matrix(photos.face_points, SIZE, COVERAGE), SIZE)
    face = correct_color(source, destination, blend_mask(SIZE, COVERAGE), "reinhard")
    return {"frame": frame, "matrix": matrix, "mask": mask, "face": face, "destination": destination,
            "points": photos.frame_points}


def _support(frame_shape: tuple[int, ...], matrix: np.ndarray, mask: np.ndarray, grow: int = 2) -> np.ndarray:
    """Where the mask lands in the frame (computed independently of blend.py), dilated by `grow` px."""
    h, w = frame_shape[:2]
    warped = cv2.warpAffine(mask, invert(matrix), (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return cv2.dilate((warped > 0).astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0


def _core(frame_shape: tuple[int, ...], matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    h, w = frame_shape[:2]
    return cv2.warpAffine(mask, invert(matrix), (w, h), flags=cv2.INTER_LINEAR, borderValue=0) > 0.9


def _shifted(matrix: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Alignment of the same face moved by (dx, dy) frame pixels."""
    moved = matrix.copy()
    moved[:, 2] -= matrix[:, :2] @ np.array([dx, dy])
    return moved


@pytest.mark.parametrize("mode", MODES)
def test_face_replaced_inside_and_frame_untouched_outside(swap, mode):
    frame, matrix, mask = swap["frame"], swap["matrix"], swap["mask"]
    out = blend(frame, swap["face"], matrix, mask, mode)
    assert out.shape == frame.shape and out.dtype == np.uint8
    outside = ~_support(frame.shape, matrix, mask)
    np.testing.assert_array_equal(out[outside], frame[outside])
    core = _core(frame.shape, matrix, mask)
    assert core.sum() > 2000
    assert np.abs(out[core].astype(float) - frame[core]).mean() > 8


def test_poisson_pastes_in_place(swap):
    """Cloning the frame's own face back must reproduce the frame: any placement shift would show."""
    frame, matrix, mask = swap["frame"], swap["matrix"], swap["mask"]
    core = _core(frame.shape, matrix, mask)
    in_place = blend(frame, swap["destination"], matrix, mask, "poisson")
    error = np.abs(in_place[core].astype(float) - frame[core]).mean()
    centre = place_face(swap["destination"], matrix, mask).clone_center()
    off = blend(frame, swap["destination"], matrix, mask, "poisson", center=(centre[0] + 2, centre[1]))
    off_error = np.abs(off[core].astype(float) - frame[core]).mean()
    assert error < 2.5 and off_error > 2 * error


@pytest.mark.parametrize("mode", MODES)
def test_center_moves_the_whole_paste(swap, mode):
    frame, face, matrix, mask = swap["frame"], swap["face"], swap["matrix"], swap["mask"]
    cx, cy = place_face(face, matrix, mask).clone_center()
    assert blend(frame, face, matrix, mask, mode, center=(cx, cy)).tolist() == \
        blend(frame, face, matrix, mask, mode).tolist()
    moved = blend(frame, face, matrix, mask, mode, center=(cx + 7, cy - 4))
    reference = blend(frame, face, _shifted(matrix, 7, -4), mask, mode)
    assert np.abs(moved.astype(int) - reference).max() <= 2
    outside = ~_support(frame.shape, _shifted(matrix, 7, -4), mask)
    np.testing.assert_array_equal(moved[outside], frame[outside])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cut", ["left", "bottom-right"])
def test_face_leaving_the_frame(swap, mode, cut):
    """A face cut by the frame edge still blends, leaves the rest alone, and stays faithful."""
    if cut == "left":  # the frame starts at the astronaut's left eye
        frame, points = swap["frame"][:, 200:].copy(), swap["points"] - (200, 0)
    else:  # the frame ends at her nose
        frame, points = swap["frame"][:128, :226].copy(), swap["points"]
    matrix = alignment_matrix(points, SIZE, COVERAGE)
    mask = swap["mask"]
    out = blend(frame, swap["face"], matrix, mask, mode)
    assert out.shape == frame.shape
    outside = ~_support(frame.shape, matrix, mask)
    np.testing.assert_array_equal(out[outside], frame[outside])
    core = _core(frame.shape, matrix, mask)
    assert core.sum() > 300 and np.abs(out[core].astype(float) - frame[core]).mean() > 8
    # the frame's own face, cloned back, must come out as the frame even at the border
    own = warp_face(frame, matrix, SIZE)
    same = blend(frame, own, matrix, mask, mode)
    assert np.abs(same[core].astype(float) - frame[core]).mean() < 3


def test_face_entirely_outside_the_frame(swap):
    frame, matrix, mask = swap["frame"], swap["matrix"], swap["mask"]
    for mode in MODES:
        out = blend(frame, swap["face"], _shifted(matrix, 2000, 0), mask, mode)
        np.testing.assert_array_equal(out, frame)
        assert out is not frame


def test_empty_mask_returns_the_frame(swap):
    frame = swap["frame"]
    empty = np.zeros((SIZE, SIZE), np.float32)
    np.testing.assert_array_equal(blend(frame, swap["face"], swap["matrix"], empty, "poisson"), frame)


def test_bad_inputs(swap):
    frame, face, matrix, mask = swap["frame"], swap["face"], swap["matrix"], swap["mask"]
    with pytest.raises(UserError, match="poisson"):
        blend(frame, face, matrix, mask, "seamless")
    with pytest.raises(ValueError):
        blend(frame, face, matrix, mask[:64, :64], "alpha")
    with pytest.raises(ValueError):
        blend(frame.astype(np.float32), face, matrix, mask, "alpha")
