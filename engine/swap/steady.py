"""What a video steadies along each face's track besides its landmarks: the Poisson membrane and the new
face itself.

Both live in the aligned crop, where a face stays put as the head moves, so a per-track low-pass there
removes shimmer without smearing motion. The membrane (`engine.swap.membrane`) is the face's colour cast
against the frame: it changes slowly, and follows the landmarks' rest cutoff. The model's face shimmers
from frame to frame (a 64 px decoder answers the small changes of its input crop with broad changes of
tone, and its edges step with the crop's grid): below a blur of `FACE_SIGMA` px it is low-passed
`FACE_SPEEDUP` times faster than the membrane (0.9 Hz at the default smoothing), but only where it barely
changed: a pixel that moved by more than `STILL_BELOW` grey levels since the last steady frame is followed
in proportion, and one that moved by `MOVING_ABOVE` or more is taken as rendered, so blinks and speech pass
at once while the shimmer between them is held (`GatedLowPass`: a motion-adaptive temporal filter, the
video denoiser's rule). The frame's own fine detail (`engine.swap.detail`) is added after it, as the frame
has it. Measured: docs/benchmarks.md, "The face steadied where it shimmers".
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from engine.swap.settings import BLEND_SIZE
from engine.swap.smoothing import OneEuroParams, smoothing_factor

# (frame position in a batch, face position in that frame, what: "membrane" | "face", this frame's value)
#   -> the value to paste
Steadier = Callable[[int, int, str, np.ndarray], np.ndarray]

FACE_SIGMA = 1.5  # px of a BLEND_SIZE face: what is finer than this blur stays as rendered
FACE_SPEEDUP = 2.0  # the face's cutoff over the membrane's: 0.9 Hz at the default --smooth 0.85
STILL_BELOW = 3.0  # grey levels a pixel changed (channel mean, blurred GATE_SIGMA px): below, fully low-passed
MOVING_ABOVE = 10.0  # grey levels: from here on the pixel is taken as rendered (an eye closing, a lip moving)
GATE_SIGMA = 1.0  # px: the change is measured a little blurred, so single-pixel noise does not open the gate


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
            out = self._step(previous[0], value, float(smoothing_factor(self.cutoff_hz, t - previous[1])))
        self._state[track] = (out, t)
        return out.copy()

    def _step(self, previous: np.ndarray, value: np.ndarray, weight: float) -> np.ndarray:
        """One step of the low-pass from `previous` towards `value` with the exponential `weight`."""
        return previous + np.float32(weight) * (value - previous)

    def keep(self, tracks: set[int]) -> None:
        """Forget the tracks not in `tracks` (faces that left)."""
        self._state = {k: v for k, v in self._state.items() if k in tracks}


class GatedLowPass(TrackLowPass):
    """`TrackLowPass` of an image (H, W[, C]) whose weight opens per pixel with how much it changed: the
    low-pass's own weight where the change is below `still` grey levels, 1 (the new value) from `moving` up,
    linear between. The change is the channels' mean absolute difference from the last output, blurred
    `GATE_SIGMA` px."""

    def __init__(self, cutoff_hz: float, still: float = STILL_BELOW, moving: float = MOVING_ABOVE,
                 reset_after: float = 0.5) -> None:
        super().__init__(cutoff_hz, reset_after)
        if not 0 <= still < moving:
            raise ValueError(f"need 0 <= still < moving, got {still}, {moving}")
        self.still, self.moving = still, moving

    def _step(self, previous: np.ndarray, value: np.ndarray, weight: float) -> np.ndarray:
        change = np.abs(value - previous)
        change = cv2.GaussianBlur(change.mean(axis=2) if change.ndim == 3 else change, (0, 0), GATE_SIGMA)
        opened = np.clip((change - self.still) / (self.moving - self.still), 0.0, 1.0)
        gate = (weight + (1.0 - weight) * opened).astype(np.float32)
        return previous + (gate[..., None] if value.ndim == 3 else gate) * (value - previous)


def track_filters(params: OneEuroParams | None) -> dict[str, TrackLowPass] | None:
    """The low-passes of a video whose landmarks are smoothed with `params`, so one `--smooth` steadies where
    the face goes, its colour and the face itself; None when smoothing is off (every frame pasted on its own)."""
    if params is None:
        return None
    return {"membrane": TrackLowPass(params.min_cutoff),
            "face": GatedLowPass(FACE_SPEEDUP * params.min_cutoff)}


def with_steady_face(face: np.ndarray, steady: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`face` (S, S, 3 uint8) with everything but its finest edge (a blur of FACE_SIGMA px of a BLEND_SIZE
    face) replaced by `steady(that)`; the rest is kept as rendered."""
    pixels = face.astype(np.float32)
    body = cv2.GaussianBlur(pixels, (0, 0), FACE_SIGMA * face.shape[0] / BLEND_SIZE)
    return np.clip(np.rint(pixels - body + steady(body)), 0, 255).astype(np.uint8)
