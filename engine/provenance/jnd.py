"""What the eye cannot see: Chou and Li's pixel just-noticeable difference, and how a change measures against it.

Chou, C.-H. and Li, Y.-C., "A perceptually tuned subband image coder based on the measure of
just-noticeable-distortion profile", IEEE Trans. Circuits Syst. Video Technol. 5(6), 1995. Each
pixel's visibility threshold is the larger of two maskings, both functions of the mean background
luminance `bg` around it (a 5x5 weighted mean) and the largest of four directional gradients `mg`:

- luminance masking: 17 (1 - sqrt(bg / 127)) + 3 below mid-grey, 3 / 128 (bg - 127) + 3 above;
- texture (contrast) masking: mg (0.0001 bg + 0.115) + (1/2 - 0.01 bg).

So a flat, mid-grey patch of skin hides about 3 grey levels, a dark one up to 20, and an edge or
texture more in proportion to its gradient. The kernels and constants are the paper's; the filters
are OpenCV's.

`visibility` is how the watermark is judged (issue 24): the share of 8x8 blocks of the face where
the change exceeds this threshold anywhere, and the largest change where the face is flat (local
standard deviation under 2 grey levels).
"""

from __future__ import annotations

import cv2
import numpy as np

_BACKGROUND = np.array([[1, 1, 1, 1, 1],
                        [1, 2, 2, 2, 1],
                        [1, 2, 0, 2, 1],
                        [1, 2, 2, 2, 1],
                        [1, 1, 1, 1, 1]], dtype=np.float32) / 32.0
_GRADIENTS = [np.array(k, dtype=np.float32) / 16.0 for k in (
    [[0, 0, 0, 0, 0], [1, 3, 8, 3, 1], [0, 0, 0, 0, 0], [-1, -3, -8, -3, -1], [0, 0, 0, 0, 0]],
    [[0, 0, 1, 0, 0], [0, 8, 3, 0, 0], [1, 3, 0, -3, -1], [0, 0, -3, -8, 0], [0, 0, -1, 0, 0]],
    [[0, 0, 1, 0, 0], [0, 0, 3, 8, 0], [-1, -3, 0, 3, 1], [0, -8, -3, 0, 0], [0, 0, -1, 0, 0]],
    [[0, 1, 0, -1, 0], [0, 3, 0, -3, 0], [0, 8, 0, -8, 0], [0, 3, 0, -3, 0], [0, 1, 0, -1, 0]],
)]
T0, GAMMA, LAMBDA = 17.0, 3.0 / 128.0, 0.5
FLAT_STD = 2.0  # grey levels: a region whose local std is below this is "flat" (issue 24)
FLAT_WINDOW = 5  # px: the window of that local std
BLOCK = 8  # px: the blocks the visibility share counts
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _LUMA if rgb.ndim == 3 else rgb.astype(np.float32)


def chou_li(gray: np.ndarray) -> np.ndarray:
    """Per-pixel JND (grey levels, float32) of an 8-bit-range luma image."""
    gray = np.asarray(gray, dtype=np.float32)
    bg = cv2.filter2D(gray, -1, _BACKGROUND, borderType=cv2.BORDER_REFLECT)
    mg = np.max([np.abs(cv2.filter2D(gray, -1, k, borderType=cv2.BORDER_REFLECT)) for k in _GRADIENTS], axis=0)
    luminance = np.where(bg <= 127.0, T0 * (1.0 - np.sqrt(np.clip(bg, 0, None) / 127.0)) + 3.0,
                         GAMMA * (bg - 127.0) + 3.0)
    texture = mg * (0.0001 * bg + 0.115) + (LAMBDA - 0.01 * bg)
    return np.maximum(luminance, texture).astype(np.float32)


def local_std(gray: np.ndarray, window: int = FLAT_WINDOW) -> np.ndarray:
    """Standard deviation of `gray` over a `window` x `window` box around each pixel."""
    gray = np.asarray(gray, dtype=np.float32)
    mean = cv2.blur(gray, (window, window), borderType=cv2.BORDER_REFLECT)
    square = cv2.blur(gray * gray, (window, window), borderType=cv2.BORDER_REFLECT)
    return np.sqrt(np.clip(square - mean * mean, 0, None))


def visibility(before: np.ndarray, after: np.ndarray, area: np.ndarray) -> dict:
    """How `after` (RGB uint8) differs from `before` inside the bool mask `area`, judged by Chou-Li's JND
    of `before`: blocks (8x8, on the image's grid, counted when at least half inside `area`) where the
    change of any channel exceeds the JND at any pixel; the largest change on flat pixels (local std of
    `before`'s luma under 2); the largest and mean change; and the share of pixels over the JND."""
    gray = luma(before)
    threshold = chou_li(gray)
    change = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2).astype(np.float32)
    over = (change > threshold) & area
    flat = (local_std(gray) < FLAT_STD) & area
    h, w = area.shape
    hb, wb = h // BLOCK, w // BLOCK

    def blocks(mask: np.ndarray, how) -> np.ndarray:
        return how(mask[:hb * BLOCK, :wb * BLOCK].reshape(hb, BLOCK, wb, BLOCK), axis=(1, 3))

    counted = blocks(area.astype(np.float32), np.mean) >= 0.5
    n = int(counted.sum())
    bad = int((blocks(over, np.any) & counted).sum())
    return {"blocks": n, "blocks_over_jnd": bad, "share_blocks_over_jnd": bad / n if n else 0.0,
            "pixels_over_jnd_share": float(over.sum() / max(int(area.sum()), 1)),
            "max_change": float(change[area].max()) if area.any() else 0.0,
            "mean_change": float(change[area].mean()) if area.any() else 0.0,
            "flat_share": float(flat.sum() / max(int(area.sum()), 1)),
            "max_change_flat": float(change[flat].max()) if flat.any() else 0.0,
            "max_change_over_jnd": float((change - threshold)[area].max()) if area.any() else 0.0}
