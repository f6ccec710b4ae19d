"""Align faces on 5 landmarks (eyes, nose tip, mouth corners) to a canonical template.

The template is the ArcFace 5-point layout in a unit square ("the face square"). An aligned crop of
`size` pixels at `coverage` c shows the face square as a centred square of side c * size: c = 1 is
a tight face crop, smaller values add margin (forehead, hair, background). Face sets store crops
at a generous coverage; models train and swap at their own, and `recrop_matrix` maps between them,
so extraction, training and swapping share one geometry.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

# ArcFace's 112x112 template, normalised to the unit face square:
# left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in the image).
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
) / 112.0

FACESET_COVERAGE = 0.6  # face sets keep context around the face for augmentation and re-cropping


def template_points(size: int, coverage: float) -> np.ndarray:
    """The 5 template landmarks in pixels of an aligned crop of `size` at `coverage`."""
    _check_coverage(coverage)
    return size * (0.5 + (TEMPLATE - 0.5) * coverage)


def alignment_matrix(landmarks: np.ndarray, size: int, coverage: float = FACESET_COVERAGE) -> np.ndarray:
    """2x3 similarity matrix mapping source-image pixels to aligned-crop pixels (Umeyama fit)."""
    src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dst = template_points(size, coverage)
    tform = SimilarityTransform.from_estimate(src, dst) if hasattr(SimilarityTransform, "from_estimate") \
        else _legacy_estimate(src, dst)
    if not tform:
        raise ValueError("landmarks are degenerate: cannot fit a similarity transform")
    return np.asarray(tform.params[:2], dtype=np.float64)


def _legacy_estimate(src: np.ndarray, dst: np.ndarray) -> SimilarityTransform:
    tform = SimilarityTransform()
    return tform if tform.estimate(src, dst) else None


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned crop out of `image` (edges replicated where the crop leaves the frame)."""
    scale = np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2])))
    # area-like filtering when shrinking a big face keeps crops sharp but not aliased
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_CUBIC
    if interp == cv2.INTER_AREA:
        # warpAffine has no INTER_AREA: pre-shrink the image, then warp with the rest of the scale
        factor = 1.0 / np.floor(1.0 / scale)
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = np.asarray(matrix, dtype=np.float64).copy()
        # pixel centres: source x = small x / factor + (1 / factor - 1) / 2
        matrix[:, 2] += matrix[:, :2] @ np.full(2, 0.5 * (1.0 / factor - 1.0))
        matrix[:, :2] /= factor
        image, interp = small, cv2.INTER_CUBIC
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (size, size), flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


def invert(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 matrix mapping aligned-crop pixels back to source-image pixels."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def recrop_matrix(src_size: int, src_coverage: float, dst_size: int, dst_coverage: float) -> np.ndarray:
    """2x3 matrix mapping a crop at (src_size, src_coverage) to one at (dst_size, dst_coverage).

    Equivalent to re-aligning from the original landmarks: both crops share the template centre.
    """
    _check_coverage(src_coverage)
    _check_coverage(dst_coverage)
    s = dst_size * dst_coverage / (src_size * src_coverage)
    t = dst_size * 0.5 - s * src_size * 0.5
    return np.array([[s, 0.0, t], [0.0, s, t]])


def _check_coverage(coverage: float) -> None:
    if not 0.1 <= coverage <= 1.5:
        raise ValueError(f"coverage must be in [0.1, 1.5], got {coverage}")
