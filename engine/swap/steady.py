"""What a video steadies along each face's track besides its landmarks: the Poisson membrane and the new
face's coarse shading.

Both live in the aligned crop, where a face stays put as the head moves, so a per-track low-pass there
removes shimmer without smearing motion. The membrane (`engine.swap.membrane`) is the face's colour cast
against the frame: it changes slowly, and follows the landmarks' rest cutoff. The model's face itself
shimmers from frame to frame in its coarse shading (a 64 px decoder answers small input changes with
broad changes of tone); above a blur of `SHADING_SIGMA` the face is left as rendered, below it the shading
is low-passed `SHADING_SPEEDUP` times faster than the membrane: a time constant of about two frames at the
default smoothing, with landmark error level and no lag seen in the frames (docs/benchmarks.md, "The face's
coarse shading steadied too").
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from engine.swap.settings import BLEND_SIZE
from engine.swap.smoothing import OneEuroParams, smoothing_factor

# (frame position in a batch, face position in that frame, what: "membrane" | "shading", this frame's value)
#   -> the value to paste
Steadier = Callable[[int, int, str, np.ndarray], np.ndarray]

SHADING_SIGMA = 6.0  # px of a BLEND_SIZE face: the blur that splits coarse shading from the face's detail
SHADING_SPEEDUP = 4.0  # the shading's cutoff over the membrane's: 1.8 Hz at the default --smooth 0.85


class TrackLowPass:
    """A first-order low-pass of one array per face track, at the frames' own times.

    A track seen for the first time, or after a gap longer than `reset_after` seconds, or with time going
    back (a new run), starts from its own value: no smear across a cut.
    """

    def __init__(self, cutoff_hz: float, reset_after: float = 0.5) -> None:
        if cutoff_hz <= 0:
            raise ValueError(f"cutoff_hz must be > 0, got {cutoff_hz}")
        self.cutoff_hz, self.reset_after = cutoff_hz, reset_after
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def __call__(self, track: int, value: np.ndarray, t: float) -> np.ndarray:
        """The low-passed value of `track` at time `t` seconds, given this frame's `value`."""
        previous = self._state.get(track)
        if previous is None or previous[0].shape != value.shape or not 0 < t - previous[1] <= self.reset_after:
            out = np.asarray(value, dtype=np.float32).copy()
        else:
            weight = np.float32(smoothing_factor(self.cutoff_hz, t - previous[1]))
            out = previous[0] + weight * (value - previous[0])
        self._state[track] = (out, t)
        return out.copy()

    def keep(self, tracks: set[int]) -> None:
        """Forget the tracks not in `tracks` (faces that left)."""
        self._state = {k: v for k, v in self._state.items() if k in tracks}


def track_filters(params: OneEuroParams | None) -> dict[str, TrackLowPass] | None:
    """The low-passes of a video whose landmarks are smoothed with `params`, so one `--smooth` steadies where
    the face goes, its colour and its shading; None when smoothing is off (every frame pasted on its own)."""
    if params is None:
        return None
    return {"membrane": TrackLowPass(params.min_cutoff),
            "shading": TrackLowPass(SHADING_SPEEDUP * params.min_cutoff)}


def with_steady_shading(face: np.ndarray, steady: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`face` (S, S, 3 uint8) with its coarse shading (blur of SHADING_SIGMA px of a BLEND_SIZE face)
    replaced by `steady(shading)`; the detail above it is kept as rendered."""
    pixels = face.astype(np.float32)
    coarse = cv2.GaussianBlur(pixels, (0, 0), SHADING_SIGMA * face.shape[0] / BLEND_SIZE)
    return np.clip(np.rint(pixels - coarse + steady(coarse)), 0, 255).astype(np.uint8)
