"""Fine detail from the destination frame: the band a swap model's face cannot carry, added back.

A model that renders 64 px faces, pasted on a 250-350 px face, leaves everything finer than its own
pixels blank: skin texture, the camera's grain and sharpness, the crispness the frame around it
has. Upscaling (bicubic or the colour network) cannot invent that band; the destination face has it,
at the very place the new face lands (the swap keeps the destination's pose and expression). So
`with_detail` adds the destination's luminance detail *above* the resolution the new face carries —
the destination minus its own round trip through that many pixels — to the new face, scaled by a
strength. Everything the model renders (shapes, features, colour: who the face is) stays the
model's; only what it has no pixels for comes from the frame. This is the VFX compositor's
frequency separation (re-grain a plate, restore texture), measured by `evaluate`: sharpness ratio
against identity kept (docs/benchmarks.md, "Detail from the frame").
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.faces import align


def fine_detail(destination: np.ndarray, carried: int) -> np.ndarray:
    """(S, S) float32 luminance of an aligned destination crop (S, S, 3) uint8 minus its round trip
    through `carried` px (area down, bicubic up): the band a `carried`-px face cannot hold; zeros when
    `carried` >= S."""
    size = destination.shape[0]
    grey = cv2.cvtColor(destination, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if carried >= size:
        return np.zeros_like(grey)
    small = cv2.resize(grey, (carried, carried), interpolation=cv2.INTER_AREA)
    return grey - cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def skin_weight(size: int, coverage: float) -> np.ndarray:
    """(S, S) float32 in [0, 1] over an aligned crop: 0 on the eyes with their brows, the nose and the
    mouth (the features that say who a face is), 1 on the skin between them, feathered. Ellipses
    around the template landmarks, sized by the eye distance."""
    eye_l, eye_r, nose, mouth_l, mouth_r = align.template_points(size, coverage)
    d = float(np.linalg.norm(eye_r - eye_l))
    features = np.zeros((size, size), np.float32)
    blobs = [(eye, (0.45 * d, 0.45 * d), (0.0, -0.2 * d)) for eye in (eye_l, eye_r)]
    blobs.append((nose, (0.30 * d, 0.42 * d), (0.0, -0.15 * d)))
    blobs.append(((mouth_l + mouth_r) / 2, (0.5 * float(np.linalg.norm(mouth_r - mouth_l)) + 0.15 * d, 0.3 * d),
                  (0.0, 0.0)))
    for centre, axes, shift in blobs:
        c = (int(round(centre[0] + shift[0])), int(round(centre[1] + shift[1])))
        cv2.ellipse(features, c, (int(round(axes[0])), int(round(axes[1]))), 0, 0, 360, 1.0, -1)
    features = cv2.GaussianBlur(features, (0, 0), sigmaX=0.08 * d)
    return 1.0 - np.clip(features, 0, 1)


FEATURE_BAND = 2  # the features take only the detail finer than this many times the model's pixels


def with_detail(face: np.ndarray, destination: np.ndarray, carried: int, strength: float,
                weight: np.ndarray | None = None, features: float = 0.0,
                features_carried: int | None = None) -> np.ndarray:
    """`face` (S, S, 3) uint8 plus the destination crop's luminance detail, on every channel alike (the
    destination's colour never leaks into the new face): `strength` of the band above `carried` px, times
    `weight` (S, S) where given (`skin_weight`: the skin between the features); and `features` of the finer
    band above `features_carried` px (default FEATURE_BAND x `carried`) on the rest (the eyes, brows, nose
    and mouth, where the face's edges are). Dlib reads identity in the features' band between 64 and 128 px
    (docs/benchmarks.md, "Detail from the frame": taking it cost verified frames), not above it ("Finer
    detail on the features")."""
    finest = FEATURE_BAND * carried if features_carried is None else features_carried
    band = np.zeros(destination.shape[:2], np.float32)
    if strength > 0.0:
        band += strength * fine_detail(destination, carried) * (1.0 if weight is None else weight)
    if features > 0.0 and weight is not None:
        band += features * fine_detail(destination, finest) * (1.0 - weight)
    if not band.any():
        return face
    return np.clip(np.rint(face.astype(np.float32) + band[..., None]), 0, 255).astype(np.uint8)
