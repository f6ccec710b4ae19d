"""Temporal smoothing of face landmarks in video, one filter per tracked face.

Detector landmarks jitter by a pixel or two from frame to frame; the pasted face inherits the
jitter through the alignment matrix and shimmers. A One-Euro filter (Casiez, Roussel & Vogel,
CHI 2012) removes jitter when the face is still and follows quickly when it moves: its cutoff
rises with the filtered speed. Speeds are measured in face sizes per second, so one `--smooth`
setting behaves the same for a small face in 480p and a close-up in 4K.

Faces are matched between frames by box IoU so each keeps its own filter state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.errors import UserError


def smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential-smoothing weight of a first-order low-pass at `cutoff` Hz for a step of dt s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over arrays of any fixed shape (e.g. 5x2 landmarks), element-wise.

    `min_cutoff` (Hz) sets smoothing at rest (lower = smoother, more lag), `beta` how fast the
    cutoff rises with speed (higher = less lag in motion), `d_cutoff` (Hz) smooths the speed
    estimate itself. Speeds are divided by the `scale` passed with each sample.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time: float | None = None

    def __call__(self, sample: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filtered value of `sample` taken at time `t` seconds (times must increase)."""
        x = np.asarray(sample, dtype=np.float64)
        if self._value is None:
            self._value, self._speed, self._time = x.copy(), np.zeros_like(x), t
            return x.copy()
        if x.shape != self._value.shape:
            raise ValueError(f"sample shape changed from {self._value.shape} to {x.shape}")
        dt = t - self._time
        if dt <= 0:
            raise ValueError(f"sample times must increase, got {t} after {self._time}")
        raw_speed = (x - self._value) / dt
        a_d = smoothing_factor(self.d_cutoff, dt)
        self._speed = self._speed + a_d * (raw_speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed) / max(scale, 1e-9)
        a = smoothing_factor(cutoff, dt)
        self._value = self._value + a * (x - self._value)
        self._time = t
        return self._value.copy()


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0

    def make(self) -> OneEuroFilter:
        return OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)


# --smooth 0..1 spans these: light smoothing keeps a high rest cutoff, heavy a low one
_LIGHT_CUTOFF_HZ, _HEAVY_CUTOFF_HZ = 4.0, 0.3
# Hz per (face size / s), tuned on 1 px jitter of a ~45 px-wide face at 30 fps: 1.5 cuts
# frame-to-frame jitter 4-9x (--smooth 0.3-1) yet settles a 30 px jump within 3 frames. Much
# higher and the jitter alone raises the cutoff (noise reads as motion).
_BETA = 1.5


def smoothing_params(smooth: float) -> OneEuroParams | None:
    """One-Euro settings for the CLI's `--smooth S` (0 = off, 1 = heaviest); None when off.

    The rest cutoff falls geometrically from 4 Hz to 0.3 Hz, so equal steps of S feel equal.
    """
    if not 0.0 <= smooth <= 1.0:
        raise UserError(f"--smooth must be between 0 (off) and 1 (heaviest), got {smooth}")
    if smooth == 0.0:
        return None
    cutoff = _LIGHT_CUTOFF_HZ * (_HEAVY_CUTOFF_HZ / _LIGHT_CUTOFF_HZ) ** smooth
    return OneEuroParams(min_cutoff=cutoff, beta=_BETA)


def face_scale(landmarks: np.ndarray) -> float:
    """Face size in pixels from 5 landmarks: RMS distance from their centroid (robust to pose)."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean()))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes given as x1, y1, x2, y2 -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class _Track:
    box: np.ndarray
    missed: int = 0


@dataclass
class FaceTracker:
    """Gives each face a stable id across frames by matching boxes to the previous frame's (IoU).

    Matching is one-to-one (Hungarian on IoU); a pair below `min_iou` is not a match. A track
    survives `max_missed` frames without a match (a missed detection), then is dropped.
    """

    min_iou: float = 0.3
    max_missed: int = 5
    tracks: dict[int, _Track] = field(default_factory=dict, init=False)
    _next_id: int = field(default=0, init=False)

    def update(self, boxes: np.ndarray) -> list[int]:
        """Track ids for this frame's (N, 4) boxes, in the same order; new faces get new ids."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = list(self.tracks)
        assigned: list[int | None] = [None] * len(boxes)
        if ids and len(boxes):
            iou = box_iou(np.stack([self.tracks[i].box for i in ids]), boxes)
            for row, col in zip(*linear_sum_assignment(-iou), strict=True):
                if iou[row, col] >= self.min_iou:
                    assigned[col] = ids[row]
        for track_id in ids:
            if track_id not in assigned:
                self.tracks[track_id].missed += 1
                if self.tracks[track_id].missed > self.max_missed:
                    del self.tracks[track_id]
        for col, box in enumerate(boxes):
            if assigned[col] is None:
                assigned[col] = self._next_id
                self._next_id += 1
            self.tracks[assigned[col]] = _Track(box.copy())
        return assigned


class LandmarkSmoother:
    """Per-face One-Euro smoothing of 5-point landmarks through a video (one per swap job).

    Call once per frame with every detected face; faces keep their filter while their track
    lives, and a face that reappears after its track expired starts fresh (no smear across a cut).
    """

    def __init__(self, params: OneEuroParams | None, fps: float, tracker: FaceTracker | None = None):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.params = params
        self.fps = fps
        self.tracker = tracker or FaceTracker()
        self._filters: dict[int, OneEuroFilter] = {}

    def __call__(self, frame_index: int, boxes: np.ndarray, landmarks: list[np.ndarray]) -> list[np.ndarray]:
        """Smoothed copies of `landmarks` (one (5, 2) array per box) for frame `frame_index`."""
        return self.track(frame_index, boxes, landmarks)[1]

    def track(self, frame_index: int, boxes: np.ndarray,
              landmarks: list[np.ndarray]) -> tuple[list[int], list[np.ndarray]]:
        """(each box's track id, the smoothed landmarks) for frame `frame_index`: the ids let later
        stages keep their own state per face (`engine.swap.steady`)."""
        if len(landmarks) != len(np.asarray(boxes).reshape(-1, 4)):
            raise ValueError("need one landmark set per box")
        ids = self.tracker.update(boxes)
        self._filters = {i: f for i, f in self._filters.items() if i in self.tracker.tracks}
        if self.params is None:
            return ids, [np.asarray(p, dtype=np.float64).copy() for p in landmarks]
        t = frame_index / self.fps
        out = []
        for track_id, points in zip(ids, landmarks, strict=True):
            filt = self._filters.setdefault(track_id, self.params.make())
            out.append(filt(points, t, scale=face_scale(points)))
        return ids, out
