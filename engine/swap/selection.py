"""Which detected faces get swapped: `largest`, `all`, or `like:IMAGE` (the face most like a reference).

`like:` compares local-binary-pattern histograms (LBPH; Ahonen, Hadid & Pietikainen, ECCV 2004)
of tightly aligned grey face crops: texture of eyes, brows, nose and mouth on a 6x6 grid, after
histogram equalisation. It needs no weights (every pretrained face-embedding net we could use
downloads its weights at run time) and costs about a millisecond a face.

Its limits, measured on the data in ../shared/data: faces of one shoot (frames of one video, one
photo session) score 0.88-0.93 against each other and 0.71-0.79 against other people in other
footage, so a frame grabbed from the video being swapped is a reliable reference. Different
photos of one person (other light, age, camera) score no higher than strangers (~0.81), so LBPH
cannot recognise a person across shoots. Hence the rule picks the best match per image, and only
if it reaches `LIKE_THRESHOLD`: with two people in a frame it swaps the one the reference shows,
and when that person is absent it swaps no one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces import align
from engine.faces.detection import Face, largest

LIKE_PREFIX = "like:"
LIKE_THRESHOLD = 0.85  # cosine similarity of Hellinger-normalised LBPH descriptors
DESCRIPTOR_SIZE = 96  # px of the grey crop the histograms are taken from
DESCRIPTOR_COVERAGE = 1.0  # the face square only: no hair, background or ears
GRID = 6
_LBP_POINTS, _LBP_RADIUS = 8, 1


def check_rule(rule: str) -> None:
    """UserError unless `rule` is largest, all or like:IMAGE with an existing image."""
    if rule in ("largest", "all"):
        return
    if rule.startswith(LIKE_PREFIX):
        path = Path(rule[len(LIKE_PREFIX):])
        if not path.is_file():
            raise UserError(f"--faces {rule}: no such image {path}; give a photo or frame grab of the person "
                            "to swap")
        return
    raise UserError(f"--faces {rule!r}: use largest, all or like:IMAGE")


def face_descriptor(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Unit-length LBPH descriptor of the face at `landmarks` in RGB `image`."""
    from skimage.feature import local_binary_pattern

    matrix = align.alignment_matrix(landmarks, DESCRIPTOR_SIZE, DESCRIPTOR_COVERAGE)
    grey = cv2.cvtColor(align.warp_face(image, matrix, DESCRIPTOR_SIZE), cv2.COLOR_RGB2GRAY)
    codes = local_binary_pattern(cv2.equalizeHist(grey), _LBP_POINTS, _LBP_RADIUS, "nri_uniform").astype(np.int64)
    bins = _LBP_POINTS * (_LBP_POINTS - 1) + 3
    cell = DESCRIPTOR_SIZE // GRID
    parts = []
    for i in range(GRID):
        for j in range(GRID):
            hist = np.bincount(codes[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].ravel(), minlength=bins)
            parts.append(np.sqrt(hist / max(1, hist.sum())))  # Hellinger: square roots of frequencies
    vector = np.concatenate(parts)
    return vector / max(np.linalg.norm(vector), 1e-12)


@dataclass
class FaceSelector:
    """Applies one selection rule to the faces detected in an image (after the score filter)."""

    rule: str
    min_score: float
    reference: np.ndarray | None = None  # descriptor of the like: face

    @classmethod
    def build(cls, rule: str, min_score: float, detect) -> FaceSelector:
        """`detect(list of RGB) -> list[list[Face]]` finds the reference face for like:IMAGE."""
        check_rule(rule)
        if not rule.startswith(LIKE_PREFIX):
            return cls(rule, min_score)
        from engine.media import read_image

        path = Path(rule[len(LIKE_PREFIX):])
        image = read_image(path)
        faces = largest([f for f in detect([image])[0] if f.score >= min_score])
        if not faces:
            raise UserError(f"{path}: no face found in the --faces like: reference; use a photo or frame grab "
                            "where the face is clearly visible")
        return cls(rule, min_score, face_descriptor(image, faces[0].landmarks))

    def __call__(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        candidates = [f for f in faces if f.score >= self.min_score]
        if self.rule == "largest":
            return largest(candidates)
        if self.rule == "all":
            return sorted(candidates, key=lambda f: f.box[0])
        scored = [(self.similarity(image, f), f) for f in candidates]
        best = max(scored, key=lambda s: s[0], default=None)
        return [best[1]] if best is not None and best[0] >= LIKE_THRESHOLD else []

    def similarity(self, image: np.ndarray, face: Face) -> float:
        """Cosine similarity in [0, 1] between `face` and the reference (like: rule only)."""
        if self.reference is None:
            raise ValueError("similarity needs a like:IMAGE rule")
        return float(face_descriptor(image, face.landmarks) @ self.reference)
