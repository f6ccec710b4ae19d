"""A soft mask of the face's core (brows to chin, cheek to cheek) in aligned-crop geometry.

Derived from the 5-point template alone, so it needs no segmentation model and lands on the same
pixels in every aligned crop: training uses it as the target for learned masks, swapping uses it
to blend the new face in without pasting the background or hair.
"""

from __future__ import annotations

import numpy as np

from .align import template_points

# Face proportions relative to the template landmarks (ArcFace layout):
BROW_ABOVE_EYES = 0.45  # brows sit this many eye-to-mouth distances above the eye line
CHIN_BELOW_MOUTH = 0.5  # chin tip this many eye-to-mouth distances below the mouth line
HALF_WIDTH = 1.15  # cheek-to-cheek half width in eye distances
FEATHER = 0.12  # soft edge, as a fraction of the ellipse radius on each side of the rim


def face_region_mask(size: int, coverage: float) -> np.ndarray:
    """float32 (size, size) in [0, 1]: 1 inside the face ellipse, fading to 0 across its rim."""
    points = template_points(size, coverage)  # pixels of this crop; validates coverage
    eyes_mid, mouth_mid = points[:2].mean(axis=0), points[3:].mean(axis=0)
    eye_to_mouth = mouth_mid[1] - eyes_mid[1]
    top = eyes_mid[1] - BROW_ABOVE_EYES * eye_to_mouth
    bottom = mouth_mid[1] + CHIN_BELOW_MOUTH * eye_to_mouth
    centre = np.array([(eyes_mid[0] + mouth_mid[0]) / 2, (top + bottom) / 2])
    radii = np.array([HALF_WIDTH * np.linalg.norm(points[1] - points[0]), (bottom - top) / 2])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot((xs - centre[0]) / radii[0], (ys - centre[1]) / radii[1])
    t = np.clip((1 + FEATHER - r) / (2 * FEATHER), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no visible seam when blending
