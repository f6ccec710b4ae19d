"""What a video steadies per face track (engine.swap.steady): the low-pass follows the first-order law at
the frames' times and forgets across gaps, one `--smooth` sets both cutoffs, and the shading split keeps
the face's detail as rendered."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from engine.swap.smoothing import smoothing_params
from engine.swap.steady import SHADING_SPEEDUP, TrackLowPass, track_filters, with_steady_shading


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


def test_one_smooth_setting_steadies_placement_colour_and_shading():
    assert track_filters(smoothing_params(0.0)) is None
    for smooth in (0.3, 0.85, 1.0):
        rest = smoothing_params(smooth).min_cutoff
        filters = track_filters(smoothing_params(smooth))
        assert filters["membrane"].cutoff_hz == rest
        assert filters["shading"].cutoff_hz == SHADING_SPEEDUP * rest


def test_the_shading_split_keeps_the_detail_and_replaces_only_the_coarse_shading():
    face = skimage.data.astronaut()[0:256, 128:384]  # a real face-sized crop with fine texture
    assert np.array_equal(with_steady_shading(face, lambda coarse: coarse), face)  # identity: unchanged
    seen = []
    flat = with_steady_shading(face, lambda coarse: seen.append(coarse) or np.full_like(coarse, 128.0))
    detail = face.astype(float) - seen[0]
    inside = (slice(32, -32), slice(32, -32))  # away from the clip at 0 and 255 and the blur's border
    kept = np.abs(flat.astype(float) - 128.0 - detail)[inside]
    assert np.percentile(kept, 95) <= 1.0  # the detail rides on the new shading unchanged
    assert seen[0].std() > 10 and abs(float(flat[inside].mean()) - 128.0) < 3
