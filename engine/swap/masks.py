"""The blend mask: where, in aligned space, the swapped face replaces the frame, and how softly.

It starts from the fixed face region of the crop geometry (engine/faces/mask.py), optionally
narrowed by the mask the model learned (hair, hands and glasses in front of the face), then is
eroded or dilated and feathered. Erosion can differ per side, like DFL's and faceswap's per-edge
erosion, because forehead and chin usually need different margins than the cheeks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.faces.mask import face_region_mask

COMBINE_MODES = ("multiply", "min")


@dataclass(frozen=True)
class SideErosion:
    """Extra erosion in pixels per edge of the mask (negative dilates); adds to the uniform one."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0


def blend_mask(size: int, coverage: float, learned: np.ndarray | None = None, erode: int = 0,
               blur: int = 0, sides: SideErosion | None = None, combine: str = "multiply") -> np.ndarray:
    """Float32 (size, size) mask in [0, 1] for pasting an aligned face of `size` at `coverage`.

    `learned` is the model's mask (any square resolution, resized here). `erode` shrinks the mask
    by that many pixels (negative grows it), `blur` feathers its edge over about that many
    pixels. The outer ring of the crop is always 0, so the pasted face never ends in a hard crop
    edge, however the face region and erosion came out.
    """
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
    if blur < 0:
        raise ValueError(f"blur must be >= 0 pixels, got {blur}")
    mask = np.asarray(face_region_mask(size, coverage), dtype=np.float32)
    if learned is not None:
        learned = _resized(np.clip(np.asarray(learned, dtype=np.float32), 0.0, 1.0), size)
        mask = mask * learned if combine == "multiply" else np.minimum(mask, learned)
    mask = erode_mask(mask, erode)
    if sides is not None:
        mask = erode_sides(mask, sides)
    return feather(mask, blur)


def erode_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink the mask by `pixels` on every side with a round element (negative grows it)."""
    if pixels == 0:
        return mask
    n = abs(pixels)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * n + 1, 2 * n + 1))
    op = cv2.erode if pixels > 0 else cv2.dilate
    return op(mask, element, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def erode_sides(mask: np.ndarray, sides: SideErosion) -> np.ndarray:
    """Move each edge of the mask inward by its own amount (outward where negative).

    A one-sided line element moves one edge only: eroding with a run of n + 1 pixels anchored at
    its far end keeps a pixel only if the n pixels on that side are also inside.
    """
    for pixels, axis, near_side in ((sides.left, 1, True), (sides.right, 1, False),
                                    (sides.top, 0, True), (sides.bottom, 0, False)):
        if pixels == 0:
            continue
        n = abs(pixels)
        element = np.ones((1, n + 1) if axis == 1 else (n + 1, 1), dtype=np.uint8)
        # erode: min over the run; anchor at the run's end facing away from the edge that moves.
        # dilate: max over the run; the opposite anchor grows the same edge outward.
        anchor_at_end = near_side if pixels > 0 else not near_side
        offset = n if anchor_at_end else 0
        anchor = (offset, 0) if axis == 1 else (0, offset)
        op = cv2.erode if pixels > 0 else cv2.dilate
        mask = op(mask, element, anchor=anchor, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask


def feather(mask: np.ndarray, blur: int) -> np.ndarray:
    """Gaussian-soften the edge over `blur` pixels, keeping the crop's outer ring exactly 0.

    Clearing a ring of blur + 1 pixels first means the kernel (radius `blur`) cannot carry any
    weight onto the outermost pixels.
    """
    ring = blur + 1
    out = mask.astype(np.float32, copy=True)
    out[:ring] = 0
    out[-ring:] = 0
    out[:, :ring] = 0
    out[:, -ring:] = 0
    if blur > 0:
        out = cv2.GaussianBlur(out, (2 * blur + 1, 2 * blur + 1), 0, borderType=cv2.BORDER_CONSTANT)
    return np.clip(out, 0.0, 1.0)


def _resized(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    return mask
