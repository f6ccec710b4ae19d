"""Paste a swapped aligned face back onto its frame: Poisson (seamless) or feathered alpha.

Everything happens on a canvas around the face (not the whole frame), so a 4K frame costs no
more than a small one. The canvas may stick out of the frame where the face leaves it; there the
frame is extended by edge replication, which keeps seamlessClone's region away from the image
border (where it asserts or smears) and still gives the visible part real boundary colours.

The swap pipeline solves normal Poisson in the aligned crop instead (`engine.swap.membrane`: the same
result, and a video can steady it over time); this module's clone serves mixed cloning and callers of
`blend` itself.

Whatever the mode, the final step is an alpha blend with the feathered mask, so pixels where the
mask is 0 are returned exactly as they came in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces.align import invert

BLEND_MODES = {"poisson": cv2.NORMAL_CLONE, "poisson-mixed": cv2.MIXED_CLONE, "alpha": None}

_CANVAS_MARGIN = 2  # px of zero mask around the face: seamlessClone clears the outermost ring


@dataclass(frozen=True)
class PlacedFace:
    """The swapped face and its mask warped into frame space, on a canvas at (x, y) in the frame."""

    x: int
    y: int
    face: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1], 0 on the canvas margin

    def clone_center(self) -> tuple[int, int]:
        """Frame point that makes seamlessClone paste the face exactly where it was warped.

        seamlessClone puts the mask's bounding box at (center - size // 2); taking the centre from
        that same box and the same integer division gives a zero shift, so the face follows the
        alignment matrix alone and cannot wander with the mask's rounding.
        """
        bx, by, bw, bh = cv2.boundingRect((self.alpha > 0).astype(np.uint8))
        return self.x + bx + bw // 2, self.y + by + bh // 2

    def moved_to(self, center: tuple[int, int]) -> PlacedFace:
        """The same face shifted so its clone centre lands on `center` (whole pixels)."""
        cx, cy = self.clone_center()
        return replace(self, x=self.x + int(round(center[0])) - cx, y=self.y + int(round(center[1])) - cy)


def blend(frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask: np.ndarray, mode: str = "poisson",
          center: tuple[int, int] | None = None) -> np.ndarray:
    """A copy of `frame` with the aligned `face` pasted through the inverse of `matrix`.

    `face` is the (S, S, 3) uint8 swapped crop, `mask` its (S, S) float blend mask, `matrix` the
    2x3 frame-to-crop alignment. `center` (frame pixels) overrides where the face's mask box is
    centred, for callers that smooth placement over time; by default the face goes exactly where
    `matrix` puts it. Pixels where the warped mask is 0 are identical to `frame`.
    """
    if mode not in BLEND_MODES:
        raise UserError(f"unknown blend mode {mode!r}: choose one of {', '.join(BLEND_MODES)}")
    _check_inputs(frame, face, mask)
    placed = place_face(face, matrix, mask)
    if placed is None:
        return frame.copy()
    if center is not None:
        placed = placed.moved_to(center)
    flag = BLEND_MODES[mode]
    content = placed.face if flag is None else poisson_clone(frame, placed, flag)
    return composite(frame, placed, content)


def place_face(face: np.ndarray, matrix: np.ndarray, mask: np.ndarray) -> PlacedFace | None:
    """Warp face and mask into frame space on a canvas just large enough for the crop.

    None when the mask is empty (nothing would be pasted).
    """
    inv = invert(matrix)
    size_h, size_w = face.shape[:2]
    # pixel edges of the crop, not centres, so the canvas holds every interpolated pixel
    corners = np.array([[-0.5, -0.5], [size_w - 0.5, -0.5], [-0.5, size_h - 0.5], [size_w - 0.5, size_h - 0.5]])
    mapped = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - _CANVAS_MARGIN
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + _CANVAS_MARGIN
    to_canvas = inv.copy()
    to_canvas[:, 2] -= (x0, y0)
    canvas = (int(x1 - x0) + 1, int(y1 - y0) + 1)
    warped = cv2.warpAffine(face, to_canvas, canvas, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.asarray(mask, dtype=np.float32), to_canvas, canvas, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(alpha, 0.0, 1.0)
    # bilinear leaves ~1e-8 dust where a zero mask meets the crop edge; it would widen the region
    alpha[alpha < 1.0 / 512] = 0.0
    if not alpha.any():
        return None
    return PlacedFace(int(x0), int(y0), warped, alpha)


def poisson_clone(frame: np.ndarray, placed: PlacedFace, flag: int) -> np.ndarray:
    """seamlessClone of the placed face into the frame under it, as canvas-sized pixels.

    The frame is read with edge replication where the canvas leaves it. Falls back to the raw
    face (plain alpha) if OpenCV still refuses, e.g. for a region too thin to solve.
    """
    h, w = placed.alpha.shape
    background = frame_under(frame, placed.x, placed.y, w, h)
    region = (placed.alpha > 0).astype(np.uint8) * 255
    cx, cy = placed.clone_center()
    try:
        return cv2.seamlessClone(placed.face, background, region, (cx - placed.x, cy - placed.y), flag)
    except cv2.error:
        return placed.face


def frame_under(frame: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The (h, w) window of `frame` at (x, y), edge-replicated where it leaves the frame."""
    rows = np.clip(np.arange(y, y + h), 0, frame.shape[0] - 1)
    cols = np.clip(np.arange(x, x + w), 0, frame.shape[1] - 1)
    return frame[np.ix_(rows, cols)]


def composite(frame: np.ndarray, placed: PlacedFace, content: np.ndarray) -> np.ndarray:
    """Alpha-blend canvas `content` over a copy of `frame` with the placed face's feathered mask."""
    out = frame.copy()
    h, w = placed.alpha.shape
    fx0, fy0 = max(placed.x, 0), max(placed.y, 0)
    fx1, fy1 = min(placed.x + w, frame.shape[1]), min(placed.y + h, frame.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return out  # the face lies entirely outside the frame
    cx0, cy0 = fx0 - placed.x, fy0 - placed.y
    window = (slice(cy0, cy0 + fy1 - fy0), slice(cx0, cx0 + fx1 - fx0))
    alpha = placed.alpha[window][..., None]
    under = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    mixed = under + alpha * (content[window].astype(np.float32) - under)
    out[fy0:fy1, fx0:fx1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def _check_inputs(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> None:
    for name, image in (("frame", frame), ("face", face)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if np.shape(mask) != face.shape[:2]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match the face {face.shape[:2]}")
