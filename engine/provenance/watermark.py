"""An invisible mark in the pixels of each swapped face, read back after re-encoding, scaling and cropping.

How: improved spread spectrum (ISS, Malvar & Florencio 2003) in the face's own geometry. Each of the
32 payload bits owns a fixed pseudo-random pattern of 4 px cells over the face core of a 128 px
aligned crop (the same 5-point alignment as extraction and swapping, `engine.faces.align`, at
coverage 0.8); the 32 patterns are high-passed and orthonormal. Marking adds to the crop's luma
`strength * (+-1) - (host's own projection)` along each pattern, so the correlation a reader
computes is +-strength whatever the face looked like, and the residual is warped back onto the
frame inside the swapped region. Reading detects the face, aligns it the same way, high-passes its
luma and correlates: +1 / -1 per bit.

Why not a library's mark: the face moves between frames and a reader finds it again with a detector,
so the mark must live in the face's geometry and survive a re-alignment that is off by a pixel.
Measured on talk2's faces marked this way (bench/watermark.py, docs/benchmarks.md), the
`invisible-watermark` package's DWT-DCT and DWT-DCT-SVD read 0.59-0.74 of the bits even without
any re-encoding, because their quantised block coefficients break when the blocks shift; its
RivaGAN network (ONNX) reads 0.81-0.96 but costs 415-605 ms per face on one CPU core (a swap is
about 130 ms a frame). This mark costs 5-12 ms per face (128 px warps each way, 32 x 16384
projections, two passes), 40.6-40.9 dB, and reads 0.94-1.00 of the bits per frame after the attacks
the issue names, all 32 of them per clip. On the smooth faces of a weakly trained model it shows as faint mottling.

The mark is made at the landmarks the swap used (the face before it was swapped); a reader detects
the swapped face, whose landmarks a detector places a little differently, and the search in
`read_face` covers that for a model whose faces keep the pose and expression. A barely trained
model (a blob where the face was, tens of iterations) moves them further, and its mark is missed.
Cropping and downscaling the frame do not move the mark off the face, since the reader re-aligns;
the patterns are fixed by `KEY`, so anyone with this code can read (and, knowingly, strip) the mark:
it labels honest output, it is not a secret.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from engine.faces import align
from engine.faces.mask import face_region_mask
from engine.provenance.record import PAYLOAD_BITS, SIGNATURE, bits_payload, payload_bits

MARK_SIZE = 128  # px of the aligned crop the mark lives in
MARK_COVERAGE = 0.8  # that crop's coverage: the face square at 0.8 of its side
CELL = 4  # px (of MARK_SIZE) of one pattern cell: small enough to stay clear of the face's own shading
HIGHPASS_SIGMA = 2.0  # px: the reader's (and the patterns') high-pass removes shading below this scale
PATTERN_BLUR = 1.0  # px: softens the cells' edges (1.5 reads worse on photos: tests/test_watermark.py)
STRENGTH = 25.0  # correlation each bit is set to, in luma levels x unit pattern (about 40 dB PSNR)
KEY = 20261202  # seed of the patterns: fixed, so every copy of the studio reads every other's marks
SIGNATURE_BITS = 16
ROUNDS = 2  # embedding passes: the second corrects most of what warping to the frame and rounding lost
FOUND_AT = 15  # signature bits (of 16) that must agree before a mark counts as found: 2.6e-4 by chance
_STEPS = (-3.0, -2.25, -1.5, -0.75, 0.0, 0.75, 1.5, 2.25, 3.0)  # px of MARK_SIZE
SEARCH_SHIFTS = [(dx, dy) for dy in _STEPS for dx in _STEPS]  # where a reader looks around the detected face
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _highpass(luma: np.ndarray) -> np.ndarray:
    return luma - cv2.GaussianBlur(luma, (0, 0), HIGHPASS_SIGMA)


@functools.cache
def _patterns() -> tuple[np.ndarray, np.ndarray]:
    """(32, MARK_SIZE**2) orthonormal bit patterns, and the face-core weight they live under."""
    weight = face_region_mask(MARK_SIZE, MARK_COVERAGE)
    rng = np.random.default_rng(KEY)
    raw = []
    for _ in range(PAYLOAD_BITS):
        cells = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(MARK_SIZE // CELL,) * 2)
        u = cv2.resize(cells, (MARK_SIZE, MARK_SIZE), interpolation=cv2.INTER_NEAREST)
        u = _highpass(cv2.GaussianBlur(u, (0, 0), PATTERN_BLUR)) * weight
        raw.append(u.ravel())
    q, _ = np.linalg.qr(np.array(raw, dtype=np.float64).T)
    return np.ascontiguousarray(q.T, dtype=np.float32), weight


def _project(patterns: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Each pattern's dot product with `image` (32 x 16384: einsum's own loop, not BLAS, whose threads
    spin against the swap's own on a busy CPU and made this 100x slower there)."""
    return np.einsum("ij,j->i", patterns, image.ravel())


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _LUMA


def _projections(crop: np.ndarray) -> np.ndarray:
    """The high-passed luma of an aligned crop along each bit's pattern (32,)."""
    patterns, _ = _patterns()
    return _project(patterns, _highpass(_luma(crop)))


def mark_matrix(landmarks: np.ndarray) -> np.ndarray:
    """Frame pixels -> the mark's aligned crop, from a face's 5 landmarks."""
    return align.alignment_matrix(landmarks, MARK_SIZE, MARK_COVERAGE)


def embed(frame: np.ndarray, landmarks: np.ndarray, payload: int, *, region: tuple[np.ndarray, np.ndarray] | None = None,
          strength: float = STRENGTH) -> np.ndarray:
    """`frame` (RGB uint8, changed in place and returned) with `payload` marked on the face at `landmarks`.

    `region` (a mask and its frame -> mask
    matrix, e.g. a swap's blend mask) limits the mark to the pixels the swap replaced; None marks the
    whole face core.
    """
    patterns, _ = _patterns()
    matrix = mark_matrix(landmarks)
    alpha = None
    if region is not None:
        mask, mask_matrix = region
        alpha = cv2.warpAffine(np.asarray(mask, dtype=np.float32), _compose(matrix, align.invert(mask_matrix)),
                               (MARK_SIZE, MARK_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
    target = strength * np.where(np.array(payload_bits(payload)) > 0, 1.0, -1.0).astype(np.float32)
    for _ in range(ROUNDS):  # each round reads the frame back: resampling and rounding lose part of a round
        crop = _crop(frame, matrix)
        amounts = target - _project(patterns, _highpass(_luma(crop)))
        residual = np.einsum("i,ij->j", amounts.astype(np.float32), patterns).reshape(MARK_SIZE, MARK_SIZE)
        if alpha is not None:
            residual = residual * alpha
        _add_in_frame(frame, residual, matrix)
    return frame


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map `outer` after `inner`."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def _crop(frame: np.ndarray, matrix: np.ndarray, size: int = MARK_SIZE) -> np.ndarray:
    """`align.warp_face` of just the frame region under the crop (it shrinks what it is given first)."""
    (x0, y0), (x1, y1) = _bounds(frame, matrix, margin=8, size=size)
    shifted = np.asarray(matrix, dtype=np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return align.warp_face(frame[y0:y1, x0:x1], shifted, size)


def _bounds(frame: np.ndarray, matrix: np.ndarray, margin: int, size: int = MARK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Frame pixel box (clipped) under the aligned crop of `matrix`, `margin` px wider each way."""
    h, w = frame.shape[:2]
    corners = align.transform_points([(0, 0), (size, 0), (0, size), (size, size)], align.invert(matrix))
    low = np.maximum(np.floor(corners.min(axis=0)).astype(int) - margin, 0)
    high = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + margin, (w, h))
    return low, np.maximum(high, low)


def _add_in_frame(frame: np.ndarray, residual: np.ndarray, matrix: np.ndarray) -> None:
    """Warp a luma residual from the aligned crop onto the frame's pixels under it, added to R, G and B."""
    (x0, y0), (x1, y1) = _bounds(frame, matrix, margin=2)
    if x1 <= x0 or y1 <= y0:
        return
    inverse = align.invert(matrix)
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    delta = cv2.warpAffine(residual, shifted, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR, borderValue=0)
    patch = frame[y0:y1, x0:x1].astype(np.float32) + delta[..., None]
    frame[y0:y1, x0:x1] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)


def read_face(frame: np.ndarray, landmarks: np.ndarray, strength: float = STRENGTH) -> np.ndarray:
    """Soft bits of the face at `landmarks`: correlations over `strength`, about +1 / -1 where marked.

    A detector's landmarks on the swapped frame are off those the mark was made at (the swap's input
    face's) by a pixel or three in the mark's crop, which costs a mark of 4 px cells much of its correlation; so the crop is read at small shifts
    around the detected geometry and the shift whose correlations come closest to +-strength (a marked face's, whatever the bits
    say, so the search does not favour the signature) is the reading.
    """
    patterns, _ = _patterns()
    base = mark_matrix(landmarks)
    best, best_misfit = None, float("inf")
    for dx, dy in SEARCH_SHIFTS:
        matrix = base.copy()
        matrix[:, 2] += (dx, dy)
        soft = _project(patterns, _highpass(_luma(_crop(frame, matrix))))
        off = misfit(soft / strength)
        if off < best_misfit:
            best, best_misfit = soft, off
    return best / strength


def misfit(soft: np.ndarray) -> float:
    """How far soft bits are from a marked face's +-1 (0 for a perfect reading), whatever their signs."""
    return float(np.square(np.abs(soft) - 1.0).sum())


@dataclass
class MarkReading:
    """What the pixels say: the payload read (majority of the faces' soft bits) and how sure that is."""

    soft: np.ndarray  # (32,) summed soft bits
    faces: int  # faces read

    @property
    def bits(self) -> list[int]:
        return [int(v > 0) for v in self.soft]

    @property
    def payload(self) -> int:
        return bits_payload(self.bits)

    @property
    def signature_agreement(self) -> int:
        """How many of the 16 signature bits read as the studio's signature."""
        expected = payload_bits(SIGNATURE << 16)[:SIGNATURE_BITS]
        return sum(int(a == b) for a, b in zip(self.bits[:SIGNATURE_BITS], expected, strict=True))

    @property
    def found(self) -> bool:
        return self.faces > 0 and self.signature_agreement >= FOUND_AT

    @property
    def chance(self) -> float:
        """Probability that an unmarked face agrees with the signature this well by chance."""
        k = self.signature_agreement
        return sum(math.comb(SIGNATURE_BITS, j) for j in range(k, SIGNATURE_BITS + 1)) / 2 ** SIGNATURE_BITS

    @property
    def confidence(self) -> float:
        return 1.0 - self.chance if self.faces else 0.0

    @property
    def model_tag(self) -> str:
        """The low 16 bits: the first 4 hex digits of the marking model's id."""
        return f"{self.payload & 0xFFFF:04x}"

    def bit_accuracy(self, expected_payload: int | None = None) -> float:
        """Share of bits read right: all 32 against `expected_payload`, else the 16 signature bits."""
        if self.faces == 0:
            return 0.0
        if expected_payload is None:
            return self.signature_agreement / SIGNATURE_BITS
        expected = payload_bits(expected_payload)
        return sum(int(a == b) for a, b in zip(self.bits, expected, strict=True)) / PAYLOAD_BITS


def read_faces(frames_and_landmarks) -> MarkReading:
    """Sum the soft bits of every (frame, landmarks) pair: a video's faces vote together."""
    soft, n = np.zeros(PAYLOAD_BITS, dtype=np.float64), 0
    for frame, landmarks in frames_and_landmarks:
        soft += read_face(frame, landmarks)
        n += 1
    return MarkReading(soft, n)
