"""One interface over the face detectors: boxes, scores and 5 landmarks per image, in batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Face:
    """One detected face in source-image pixels. Landmarks: left eye, right eye, nose, mouth L, mouth R."""

    box: np.ndarray        # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def size(self) -> float:
        """Short side of the box, the figure `--min-face` compares against."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class Detector(Protocol):
    name: str

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces for each RGB uint8 image; images in one call may differ in size."""
        ...


def largest(faces: list[Face]) -> list[Face]:
    return [max(faces, key=lambda f: f.area)] if faces else []


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def group_by_shape(images: list[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of same-sized images, so detectors can stack each group into one batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape, []).append(i)
    return groups
