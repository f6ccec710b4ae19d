"""What a video steadies per face track (engine.swap.steady): the low-pass follows the first-order law at
the frames' times and forgets across gaps, the face's low-pass holds small changes and passes large ones,
one `--smooth` sets both cutoffs, and the split keeps the face's finest edge as rendered."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from engine.swap.smoothing import smoothing_params
from engine.swap.steady import (
    FACE_SPEEDUP,
    MOVING_ABOVE,
    STILL_BELOW,
    GatedLowPass,
    TrackLowPass,
    track_filters,
    with_steady_face,
)


def test_the_low_pass_is_first_order_per_track_at_the_frames_times():
    hz, dt = 0.5, 1 / 30
    steady = TrackLowPass(hz)
    zero, one = np.zeros((4, 4, 3), np.float32), np.ones((4, 4, 3), np.float32)
    assert np.array_equal(steady(7, zero, 0.0), zero)  # a new track starts from its own value
    weight = 1 / (1 + 1 / (2 * np.pi * hz * dt))  # exponential smoothing of a first-order low-pass
    assert np.allclose(steady(7, one, dt), weight)
    assert np.allclose(steady(7, one, 2 * dt), weight + (1 - weight) * weight)
    assert np.array_equal(steady(8, one, 2 * dt), one)  # another face keeps its own state
    assert np.array_equal(steady(7, zero, 2 * dt + 1.0), zero)  # a gap longer than reset_after: a cut
    assert np.array_equal(steady(7, one, 0.5), one)  # time going back: a new run
    steady.keep({8})
    assert np.array_equal(steady(7, zero, 0.5 + dt), zero)  # forgotten
    with pytest.raises(ValueError, match="cutoff_hz"):
        TrackLowPass(0.0)


def test_the_faces_low_pass_holds_a_shimmer_and_passes_a_movement():
    """Where a pixel changed by less than STILL_BELOW grey levels it follows at the low-pass's own weight (the
    shimmer is held); from MOVING_ABOVE up it is taken as rendered (a blink, a lip); in between, part way."""
    hz, dt = 0.9, 1 / 30
    weight = 1 / (1 + 1 / (2 * np.pi * hz * dt))
    steady = GatedLowPass(hz)
    start = np.full((48, 96, 3), 100.0, np.float32)
    steady(0, start, 0.0)
    new = start.copy()
    new[:, :32] += STILL_BELOW - 1  # a shimmer
    new[:, 32:64] += (STILL_BELOW + MOVING_ABOVE) / 2  # half way up the gate
    new[:, 64:] += MOVING_ABOVE + 10  # an eye closing
    out = steady(0, new, dt)
    centre = (slice(8, -8),)
    assert np.allclose(out[centre][:, 8:24], 100 + weight * (STILL_BELOW - 1), atol=1e-3)
    half = (STILL_BELOW + MOVING_ABOVE) / 2
    assert np.allclose(out[centre][:, 40:56], 100 + (weight + (1 - weight) / 2) * half, atol=1e-3)
    assert np.allclose(out[centre][:, 72:88], new[centre][:, 72:88])
    with pytest.raises(ValueError, match="still"):
        GatedLowPass(hz, still=5.0, moving=5.0)


def test_one_smooth_setting_steadies_placement_colour_and_the_face():
    assert track_filters(smoothing_params(0.0)) is None
    for smooth in (0.3, 0.85, 1.0):
        rest = smoothing_params(smooth).min_cutoff
        filters = track_filters(smoothing_params(smooth))
        assert filters["membrane"].cutoff_hz == rest and not isinstance(filters["membrane"], GatedLowPass)
        assert filters["face"].cutoff_hz == FACE_SPEEDUP * rest and isinstance(filters["face"], GatedLowPass)


def test_the_split_keeps_the_finest_edge_and_replaces_the_rest():
    face = skimage.data.astronaut()[0:256, 128:384]  # a real face-sized crop with fine texture
    assert np.array_equal(with_steady_face(face, lambda body: body), face)  # identity: unchanged
    seen = []
    flat = with_steady_face(face, lambda body: seen.append(body) or np.full_like(body, 128.0))
    detail = face.astype(float) - seen[0]
    inside = (slice(32, -32), slice(32, -32))  # away from the clip at 0 and 255 and the blur's border
    kept = np.abs(flat.astype(float) - 128.0 - detail)[inside]
    assert np.percentile(kept, 95) <= 1.0  # the detail rides on the new shading unchanged
    assert seen[0].std() > 10 and abs(float(flat[inside].mean()) - 128.0) < 3
