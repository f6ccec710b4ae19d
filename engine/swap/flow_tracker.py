"""Carry detected faces to the next frames by sparse optical flow, so video need not detect every frame.

Detection costs 40-100 ms a frame on a CPU; this costs a few. For each face, corners inside its
box are followed with pyramidal Lucas-Kanade, kept only if tracking them back lands where they
started (forward-backward check), and a similarity transform fitted to them with RANSAC moves the
face's landmarks and box. It follows head motion (shift, turn in the image plane, scale), not
expression: mouth corners move with the head, not with the lips, until the next detection
refreshes them. A face whose points are lost is dropped until the next detection.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.faces import align
from engine.faces.detection import Face

MAX_CORNERS = 60
MIN_POINTS = 8  # fewer good tracks than this: the face is lost
BOX_INSET = 0.15  # corners come from the inner box: fewer background and hair points
FB_ERROR_PX = 1.0  # forward-backward distance above which a point track is rejected
_LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


class FlowTracker:
    """Call `reset(frame, faces)` on detected frames and `track(frame)` on the frames between."""

    def __init__(self) -> None:
        self._grey: np.ndarray | None = None
        self.faces: list[Face] = []

    def reset(self, frame: np.ndarray, faces: list[Face]) -> None:
        self._grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        self.faces = list(faces)

    def track(self, frame: np.ndarray) -> list[Face]:
        """The faces moved into `frame` (the next frame after the last call); lost faces are left out."""
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        moved = []
        if self._grey is not None:
            for face in self.faces:
                transform = self._motion(self._grey, grey, face.box)
                if transform is not None:
                    moved.append(_moved(face, transform))
        self._grey, self.faces = grey, moved
        return moved

    @staticmethod
    def _motion(previous: np.ndarray, current: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """2x3 similarity moving `box`'s content from `previous` to `current`, or None if lost."""
        h, w = previous.shape
        x1, y1, x2, y2 = box
        dx, dy = BOX_INSET * (x2 - x1), BOX_INSET * (y2 - y1)
        left, top = int(max(0, x1 + dx)), int(max(0, y1 + dy))
        right, bottom = int(min(w, x2 - dx)), int(min(h, y2 - dy))
        if right - left < 8 or bottom - top < 8:
            return None
        roi = previous[top:bottom, left:right]
        spacing = max(3, int(min(roi.shape) / 12))
        corners = cv2.goodFeaturesToTrack(roi, MAX_CORNERS, 0.01, spacing)
        if corners is None or len(corners) < MIN_POINTS:
            return None
        start = (corners.reshape(-1, 2) + (left, top)).astype(np.float32)
        ahead, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **_LK)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, ahead, None, **_LK)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (np.linalg.norm(back - start, axis=1) < FB_ERROR_PX)
        if good.sum() < MIN_POINTS:
            return None
        transform, inliers = cv2.estimateAffinePartial2D(start[good], ahead[good], method=cv2.RANSAC,
                                                          ransacReprojThreshold=2.0)
        if transform is None or inliers is None or inliers.sum() < MIN_POINTS:
            return None
        return transform


def _moved(face: Face, transform: np.ndarray) -> Face:
    """`face` moved by `transform`; the box keeps its shape (scaled), so it cannot grow with each turn."""
    x1, y1, x2, y2 = face.box
    centre = align.transform_points([[(x1 + x2) / 2, (y1 + y2) / 2]], transform)[0]
    half = np.array([x2 - x1, y2 - y1]) / 2 * np.sqrt(abs(np.linalg.det(transform[:, :2])))
    box = np.concatenate([centre - half, centre + half])
    return Face(box=box, score=face.score, landmarks=align.transform_points(face.landmarks, transform))
