"""Landmark smoothing for video: One-Euro filter, --smooth mapping, IoU face tracks."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UserError
from engine.swap.smoothing import (
    FaceTracker,
    LandmarkSmoother,
    OneEuroFilter,
    box_iou,
    face_scale,
    smoothing_params,
)

FPS = 30.0
# the astronaut's 5 landmarks (eyes ~43 px apart), as a detector would give them
FACE = np.array([(204, 101), (247, 102), (225, 126), (205, 140), (245, 140)], float)
STEP_AT, STEP_PX = 60, 30.0


def _step_track(frames: int = 100, noise_px: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True and noisy landmarks of a still face that jumps STEP_PX to the right at STEP_AT."""
    truth = np.stack([FACE + (STEP_PX * (i >= STEP_AT), 0.0) for i in range(frames)])
    noisy = truth + np.random.default_rng(seed).normal(0.0, noise_px, truth.shape)
    return truth, noisy


def _run(filt: OneEuroFilter, samples: np.ndarray) -> np.ndarray:
    return np.stack([filt(x, i / FPS, scale=face_scale(x)) for i, x in enumerate(samples)])


@pytest.mark.parametrize(("smooth", "jitter_cut"), [(0.3, 3), (0.6, 5), (1.0, 7)])
def test_one_euro_removes_jitter_but_follows_a_jump(smooth, jitter_cut):
    truth, noisy = _step_track()
    out = _run(smoothing_params(smooth).make(), noisy)
    still = slice(10, STEP_AT)  # after the start-up, before the jump
    raw_jitter = np.diff(noisy[still], axis=0).std()
    assert np.diff(out[still], axis=0).std() < raw_jitter / jitter_cut
    error_after = np.abs(out[STEP_AT:, :, 0] - truth[STEP_AT:, :, 0]).max(axis=1)
    assert error_after[0] < STEP_PX  # it moved at once
    assert error_after[3] < 0.1 * STEP_PX  # and caught up within a few frames


def test_heavier_smoothing_is_smoother_at_rest():
    _, noisy = _step_track()
    jitter = [np.diff(_run(smoothing_params(s).make(), noisy)[10:STEP_AT], axis=0).std() for s in (0.2, 0.5, 1.0)]
    assert jitter[0] > jitter[1] > jitter[2]


def test_beta_cuts_lag_on_steady_motion():
    """A face panning at one face size per second: beta lets the filter keep up."""
    truth = np.stack([FACE + (25.0 * i / FPS, 0.0) for i in range(90)])
    lag = {beta: (truth[30:, :, 0] - _run(OneEuroFilter(0.5, beta), truth)[30:, :, 0]).mean() for beta in (0.0, 1.5)}
    assert lag[0.0] > 3.0 and lag[1.5] < lag[0.0] / 3


def test_filter_basics():
    filt = OneEuroFilter(1.0, 0.5)
    first = filt(FACE, 0.0)
    np.testing.assert_array_equal(first, FACE)  # nothing to smooth against yet
    np.testing.assert_allclose(filt(FACE, 1 / FPS), FACE)  # a still input stays put
    with pytest.raises(ValueError):
        filt(FACE, 0.0)  # time went backwards
    with pytest.raises(ValueError):
        filt(FACE[:4], 2 / FPS)
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)


def test_smooth_option_mapping():
    assert smoothing_params(0.0) is None
    cutoffs = [smoothing_params(s).min_cutoff for s in (0.1, 0.5, 1.0)]
    assert cutoffs[0] > cutoffs[1] > cutoffs[2] > 0
    for bad in (-0.1, 1.5):
        with pytest.raises(UserError):
            smoothing_params(bad)


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_tracker_keeps_ids_as_faces_move_and_swap_order():
    tracker = FaceTracker()
    left, right = np.array([10, 10, 60, 60.0]), np.array([200, 20, 260, 80.0])
    ids = tracker.update([left, right])
    assert len(set(ids)) == 2
    for i in range(1, 10):  # both drift; the detector lists them in either order
        moved_left, moved_right = left + (3 * i, 1 * i, 3 * i, 1 * i), right - (2 * i, 0, 2 * i, 0)
        if i % 2:
            assert tracker.update([moved_right, moved_left]) == [ids[1], ids[0]]
        else:
            assert tracker.update([moved_left, moved_right]) == ids


def test_tracker_new_faces_missed_frames_and_expiry():
    tracker = FaceTracker(max_missed=2)
    face = np.array([100, 100, 150, 150.0])
    (first,) = tracker.update([face])
    assert tracker.update([]) == []
    assert tracker.update([face + 2]) == [first]  # one missed detection is bridged
    newcomer = np.array([300, 300, 340, 340.0])
    ids = tracker.update([face, newcomer])
    assert ids[0] == first and ids[1] != first
    for _ in range(3):
        tracker.update([newcomer])
    (again,) = tracker.update([face])  # gone longer than max_missed: a new track
    assert again not in (first, ids[1])


def test_landmark_smoother_keeps_one_filter_per_face():
    """Two faces smoothed together come out exactly as each smoothed alone."""
    _, noisy_a = _step_track(frames=30, seed=1)
    _, noisy_b = _step_track(frames=30, seed=2)
    noisy_b = noisy_b + (150.0, 0.0)
    params = smoothing_params(0.7)

    def boxes(points: np.ndarray) -> np.ndarray:
        return np.concatenate([points.min(axis=0) - 20, points.max(axis=0) + 20])

    both = LandmarkSmoother(params, FPS)
    alone = LandmarkSmoother(params, FPS)
    for i in range(30):
        order = [noisy_b[i], noisy_a[i]] if i % 2 else [noisy_a[i], noisy_b[i]]
        out = both(i, np.stack([boxes(p) for p in order]), order)
        solo = alone(i, boxes(noisy_a[i])[None], [noisy_a[i]])[0]
        np.testing.assert_allclose(out[1 if i % 2 else 0], solo)
    assert np.abs(solo - noisy_a[-1]).max() > 0.05  # it really smoothed


def test_landmark_smoother_off_passes_landmarks_through():
    smoother = LandmarkSmoother(smoothing_params(0.0), FPS)
    _, noisy = _step_track(frames=5)
    for i, points in enumerate(noisy):
        box = np.concatenate([points.min(axis=0), points.max(axis=0)])
        np.testing.assert_array_equal(smoother(i, box[None], [points])[0], points)
