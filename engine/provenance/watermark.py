"""An invisible mark in the pixels of each swapped face, shaped by what the eye cannot see (issue 24).

How: spread spectrum in the face's own geometry, bounded pixel by pixel by a just-noticeable
difference. The face core of a 128 px aligned crop (the same 5-point alignment as extraction and
swapping, `engine.faces.align`, at coverage 0.8, less a hole on each eye) is cut into 4 px cells;
each cell is dealt to one of the 32 payload bits with a +-1 chip (by `KEY`), and the right half's
cells mirror the left's with the chip negated, so a symmetric face (eyes, brows, mouth, contour) reads
0 on every bit. Marking changes each frame pixel of the face by its whole allowance, up or down as its
cell's chip and bit say: `JND_SHARE` of Chou and Li's JND (`engine.provenance.jnd`: luminance and
texture masking) where the face is textured, in proportion to its local std below `TEXTURE_FULL`
grey levels, and at most `FLAT_CAP` (2 levels once rounded) where it is flat, so the mark goes to
hair-line, brows and edges and stays out of smooth skin. Each bit's sign in a video's frame follows a keyed
code of the frame's index (`code`): blocks of CODE_BLOCK frames in pairs of opposite signs, each bit and
pair its own keyed sign (a photo is frame 0). Reading detects the face, aligns it the same way,
high-passes its luma and correlates it with each bit's cells, each pixel weighted by the inverse of the
face's own local high-pass power (where the face is smooth its texture hides the mark least); a video's
faces vote by summing those correlations each times its frame's code (`combine`), so the face's own
projection on each bit, the same in every frame of a talking head, cancels pair by pair while the mark
adds up; a clip whose start was cut off is read at the best of TRIM_SEARCH code offsets.

What it costs and reads: docs/benchmarks.md ("Provenance watermark"). In short, no 8x8 block of the
face changes by more than the JND and the code does cancel the face's own projection (an unmarked
clip's coded sums behave like noise), but what is left does not read back exactly after a re-upload:
the mark's change from one block of frames to the next is small and an H.264 encoder drops most of it
(the studio's own CRF 18 output already about halves it, CRF 28 leaves too little), and a short model's
smooth faces carry almost nothing under the JND. The container metadata and the clip-level record
still say the file is synthetic.

The patterns are fixed by `KEY`, so anyone with this code can read (and, knowingly, strip) the mark:
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
from engine.provenance import jnd
from engine.provenance.record import PAYLOAD_BITS, SIGNATURE, bits_payload, payload_bits

MARK_SIZE = 128  # px of the aligned crop the mark lives in
MARK_COVERAGE = 0.8  # that crop's coverage: the face square at 0.8 of its side
CELL = 4  # px (of MARK_SIZE) of one pattern cell: small enough to stay clear of the face's own shading
HIGHPASS_SIGMA = 2.0  # px: the reader's high-pass removes shading below this scale
PATTERN_BLUR = 1.0  # px: softens the cells' edges
JND_SHARE = 0.8  # of Chou-Li's JND a pixel may change by (0.8 x 3 + 0.5 rounding stays under the least JND, 3)
FLAT_CAP = 1.5  # grey levels a flat pixel (local std < jnd.FLAT_STD) may change by: 2 at most once rounded
TEXTURE_FULL = 4.0  # local std (grey levels) from which a pixel gets its whole JND share; less below, in proportion
EYE_HOLE = 0.3  # radius of the hole around each eye, in eye distances: no mark on the eyes' whites
NOISE_WINDOW = 5  # px (of MARK_SIZE): the reader's window of the face's own local high-pass power
NOISE_FLOOR = 1.0  # grey levels squared added to that power: the noise of encoding where the face is flat
MIRROR = True  # each bit's cells come in mirror pairs of opposite chips: a symmetric face reads 0
KEY = 20261202  # seed of the patterns: fixed, so every copy of the studio reads every other's marks
SIGNATURE_BITS = 16
FOUND_AT = 15  # signature bits (of 16) that must agree before a photo's mark counts as found: 2.6e-4 by chance
CODE_BLOCK = 8  # frames: the mark's sign holds for a block, then flips for the next (a pair of blocks: +- or -+)
CODE_PAIRS = 4096  # keyed pair signs before the code repeats (8.7 minutes at 30 fps, blocks of 8)
CODE_KEY = KEY + 1  # seed of the pair signs
MIN_PAIRS = 4  # pair blocks a reading must span for the code's test (below: a photo's, by signature bits)
TRIM_SEARCH = 64  # frames trimmed off a clip's start that a reader still finds: code offsets 0..63 are tried
FOUND_CHANCE = 1e-4  # a coded reading counts as found when an unmarked clip's chance (all offsets) is below this
_STEPS = (-3.0, -2.25, -1.5, -0.75, 0.0, 0.75, 1.5, 2.25, 3.0)  # px of MARK_SIZE
SEARCH_SHIFTS = [(dx, dy) for dy in _STEPS for dx in _STEPS]  # where a reader looks around the detected face


@functools.cache
def _pair_signs() -> np.ndarray:
    """(CODE_PAIRS, 32) keyed +-1: each bit's sign for each pair of blocks."""
    return np.random.default_rng(CODE_KEY).choice(np.array([-1.0, 1.0]), size=(CODE_PAIRS, PAYLOAD_BITS))


def code(index: int) -> np.ndarray:
    """(32,) each bit's sign (+1 or -1) in frame `index` of a video (0 for a photo): blocks of CODE_BLOCK
    frames in pairs of opposite signs (+- or -+, by each bit's keyed pair sign), so that any whole pair of
    blocks sums a face's constant projection on each bit to zero while the mark, multiplied by the code,
    adds up; and keyed per bit and pair, so that an unmarked clip's coded sums are sums of independent
    random signs (`MarkReading.chance`)."""
    pair, within = divmod(int(index), 2 * CODE_BLOCK)
    return _pair_signs()[pair % CODE_PAIRS] * (1.0 if within < CODE_BLOCK else -1.0)


def _highpass(luma: np.ndarray) -> np.ndarray:
    return luma - cv2.GaussianBlur(luma, (0, 0), HIGHPASS_SIGMA)


def _eye_hole(size: int = MARK_SIZE) -> np.ndarray:
    """float32 (size, size): 0 on the template's eyes (a disc of EYE_HOLE eye distances), 1 away from them."""
    points = align.template_points(size, MARK_COVERAGE)
    radius = EYE_HOLE * np.linalg.norm(points[1] - points[0])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    hole = np.ones((size, size), dtype=np.float32)
    for x, y in points[:2]:
        t = np.clip((np.hypot(xs - x, ys - y) - radius) / (0.5 * radius), 0, 1)
        hole = np.minimum(hole, t * t * (3 - 2 * t))
    return hole


@dataclass(frozen=True)
class _Layout:
    cells: np.ndarray  # (S, S) float32: each cell's +-1 chip, blurred (before the bits' signs)
    owner: np.ndarray  # (S, S) int: the bit each pixel's cell carries
    filters: np.ndarray  # (32, S*S) unit-norm reading filters: the high-passed chips of each bit's cells
    weight: np.ndarray  # (S, S) float32: where the mark lives (face ellipse, no eyes)


@functools.cache
def _layout() -> _Layout:
    """Each cell of the face carries one bit: cells are dealt to the 32 bits at random (by KEY), each
    with a random +-1 chip, so every bit gets its share of textured and flat places."""
    weight = face_region_mask(MARK_SIZE, MARK_COVERAGE) * _eye_hole()
    rng = np.random.default_rng(KEY)
    n = MARK_SIZE // CELL
    chips = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, n // 2))
    owners = rng.permutation(np.arange(n * n // 2) % PAYLOAD_BITS).reshape(n, n // 2)
    if MIRROR:  # the right half's cells are the left's, mirrored, chips negated
        chips, owners = np.hstack([chips, -chips[:, ::-1]]), np.hstack([owners, owners[:, ::-1]])
    else:
        chips = np.hstack([chips, rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, n // 2))])
        owners = np.hstack([owners, rng.permutation(np.arange(n * n // 2) % PAYLOAD_BITS).reshape(n, n // 2)])
    grow = functools.partial(cv2.resize, dsize=(MARK_SIZE, MARK_SIZE), interpolation=cv2.INTER_NEAREST)
    owner = grow(owners.astype(np.int32))
    filters = []
    for bit in range(PAYLOAD_BITS):
        own = cv2.GaussianBlur(grow(np.where(owners == bit, chips, 0).astype(np.float32)), (0, 0), PATTERN_BLUR)
        f = _highpass(own) * weight
        filters.append((f / np.linalg.norm(f)).ravel())
    return _Layout(grow(chips), owner, np.array(filters, dtype=np.float32), weight)


def _patterns() -> tuple[np.ndarray, np.ndarray]:
    """(32, MARK_SIZE**2) unit-norm reading filters, and the weight the mark lives under."""
    layout = _layout()
    return layout.filters, layout.weight


def _project(patterns: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Each pattern's dot product with `image` (32 x 16384: einsum's own loop, not BLAS, whose threads
    spin against the swap's own on a busy CPU and made this 100x slower there)."""
    return np.einsum("ij,j->i", patterns, image.ravel())


def _luma(rgb: np.ndarray) -> np.ndarray:
    return jnd.luma(rgb)


def _projections(crop: np.ndarray) -> np.ndarray:
    """The high-passed luma of an aligned crop along each bit's filter (32,)."""
    return _project(_layout().filters, _highpass(_luma(crop)))


def mark_matrix(landmarks: np.ndarray) -> np.ndarray:
    """Frame pixels -> the mark's aligned crop, from a face's 5 landmarks."""
    return align.alignment_matrix(landmarks, MARK_SIZE, MARK_COVERAGE)


def allowance(frame: np.ndarray, matrix: np.ndarray, share: float = JND_SHARE) -> np.ndarray:
    """(MARK_SIZE, MARK_SIZE) float32: how far (grey levels) the mark may change each pixel of the crop
    at `matrix`, from Chou-Li's JND of the frame's own pixels under it: `share` of the JND where the
    face is textured (local std >= TEXTURE_FULL), less where it is smoother, at most FLAT_CAP where it
    is flat (std < 2); a crop pixel gets the least of the frame pixels its residual reaches."""
    scale = 1.0 / np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2])))  # frame px per crop px
    reach = 2 * int(np.ceil(scale)) + 1
    (x0, y0), (x1, y1) = _bounds(frame, matrix, margin=reach + 2)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((MARK_SIZE, MARK_SIZE), dtype=np.float32)
    gray = _luma(frame[y0:y1, x0:x1])
    std = jnd.local_std(gray)
    allowed = share * jnd.chou_li(gray) * np.clip(std / TEXTURE_FULL, 0.0, 1.0)
    allowed = np.where(std < jnd.FLAT_STD, np.minimum(allowed, FLAT_CAP), allowed)
    allowed = cv2.erode(allowed, np.ones((reach, reach), np.uint8), borderType=cv2.BORDER_REPLICATE)
    shifted = np.asarray(matrix, dtype=np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return cv2.warpAffine(allowed, shifted, (MARK_SIZE, MARK_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)


def embed(frame: np.ndarray, landmarks: np.ndarray, payload: int, *, index: int = 0,
          region: tuple[np.ndarray, np.ndarray] | None = None, share: float = JND_SHARE) -> np.ndarray:
    """`frame` (RGB uint8, changed in place and returned) with `payload` marked on the face at `landmarks`,
    its sign that of `code(index)`: `index` is the frame's place in its video (0 for a photo).

    Each pixel of the face changes by its whole allowance (`allowance`), up or down as its cell's chip
    and bit say: under a per-pixel limit, that is what gives every bit the largest correlation.
    `region` (a mask and its frame -> mask matrix, e.g. a swap's blend mask) limits the mark to the
    pixels the swap replaced; None marks the whole face core.
    """
    layout = _layout()
    matrix = mark_matrix(landmarks)
    amplitude = allowance(frame, matrix, share) * layout.weight
    if region is not None:
        mask, mask_matrix = region
        amplitude *= cv2.warpAffine(np.asarray(mask, dtype=np.float32), _compose(matrix, align.invert(mask_matrix)),
                                    (MARK_SIZE, MARK_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
    signs = (code(index) * np.where(np.array(payload_bits(payload)) > 0, 1.0, -1.0)).astype(np.float32)
    chips = cv2.GaussianBlur(layout.cells * signs[layout.owner], (0, 0), PATTERN_BLUR)
    _add_in_frame(frame, amplitude * chips, matrix)
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


def read_face(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Soft bits of the face at `landmarks`: each bit's weighted correlation in noise deviations (`_correlate`).

    A detector's landmarks on the swapped frame are off those the mark was made at (the swap's input
    face's) by a pixel or three in the mark's crop, which costs a mark of 4 px cells much of its
    correlation; so the crop is read at small shifts around the detected geometry and the shift with
    the most correlation energy (`signal`, blind to the bits' signs, so the search does not favour the
    signature) is the reading.
    """
    filters = _layout().filters
    base = mark_matrix(landmarks)
    best, best_signal = None, -1.0
    for dx, dy in SEARCH_SHIFTS:
        matrix = base.copy()
        matrix[:, 2] += (dx, dy)
        soft = _correlate(filters, _crop(frame, matrix))
        power = signal(soft)
        if power > best_signal:
            best, best_signal = soft, power
    return best


def _correlate(filters: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Each bit's correlation with the crop's high-passed luma, each pixel weighted by the inverse of the
    face's own local high-pass power there (plus NOISE_FLOOR), over the noise's deviation: where the face is
    smooth its own texture hides the mark least, so it counts most. An unmarked face reads about N(0, 1) a
    bit; a marked one adds its mark's signal to noise ratio."""
    hp = _highpass(_luma(crop))
    inverse = (1.0 / (cv2.blur(hp * hp, (NOISE_WINDOW, NOISE_WINDOW)) + NOISE_FLOOR)).ravel()
    scale = np.einsum("ij,ij,j->i", filters, filters, inverse)
    return np.einsum("ij,j->i", filters, inverse * hp.ravel()) / np.sqrt(scale)


def signal(soft: np.ndarray) -> float:
    """Correlation energy of soft bits, whatever their signs: a marked face's is large."""
    return float(np.square(soft).sum())


@dataclass
class MarkReading:
    """What the pixels say: the payload read from the faces' soft bits, each multiplied by its frame's code
    and summed, and how sure that is.

    A video spanning MIN_PAIRS pairs of code blocks or more is tested by the code: its `statistic` is the
    signature bits' coded sum (each bit's sign by the signature) over the norm of their per-pair terms, and
    `chance` bounds the probability that an unmarked clip reaches it at any of the `offsets` tried
    (Hoeffding: the keyed signs, one per bit and pair, are independent random signs that the host's own
    pixels cannot know, so for any faces an unmarked clip's statistic exceeds x with chance at most
    exp(-x^2 / 2) at one offset; 16 bits x P pairs of terms, so a clip of P pairs can reach sqrt(16 P)). A photo (or a clip too short for the code) is tested by how
    many of its 16 signature bits agree, as before (binomial chance)."""

    soft: np.ndarray  # (32,) summed soft bits, each frame's times its code
    faces: int  # faces read
    offset: int = 0  # frames the reading's indices were shifted by (the clip's start trimmed off by as many)
    offsets: int = 1  # offsets tried
    statistic: float | None = None  # the signature's coded statistic (None: a photo's reading)
    norm: np.ndarray | None = None  # (32,) each bit's norm of its per-pair terms (the coded sum's scale)

    @property
    def coded(self) -> bool:
        return self.statistic is not None

    @property
    def bits(self) -> list[int]:
        return [int(v > 0) for v in self.soft]

    @property
    def payload(self) -> int:
        return bits_payload(self.bits)

    @property
    def signature_agreement(self) -> int:
        """How many of the 16 signature bits read as the studio's signature."""
        return sum(int(a == b) for a, b in zip(self.bits[:SIGNATURE_BITS], _signature_bits(), strict=True))

    @property
    def found(self) -> bool:
        if self.faces == 0:
            return False
        return self.chance < FOUND_CHANCE if self.coded else self.signature_agreement >= FOUND_AT

    @property
    def chance(self) -> float:
        """Probability that unmarked faces read this much like the signature by chance."""
        if self.coded:
            x = max(self.statistic, 0.0)
            return min(1.0, self.offsets * math.exp(-0.5 * x * x))
        k = self.signature_agreement
        return sum(math.comb(SIGNATURE_BITS, j) for j in range(k, SIGNATURE_BITS + 1)) / 2 ** SIGNATURE_BITS

    @property
    def confidence(self) -> float:
        return 1.0 - self.chance if self.faces else 0.0

    @property
    def margin(self) -> np.ndarray | None:
        """(32,) each bit's coded sum over its norm: how many deviations it stands from 0 (None for a photo)."""
        return None if self.norm is None else self.soft / np.maximum(self.norm, 1e-12)

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


def _signature_bits() -> list[int]:
    """The studio's 16 signature bits, as every mark carries them first."""
    return payload_bits(SIGNATURE << 16)[:SIGNATURE_BITS]


def _signature_signs() -> np.ndarray:
    return 2.0 * np.array(_signature_bits()) - 1.0


def combine(readings, trim_search: int = TRIM_SEARCH) -> MarkReading:
    """One reading from (frame index, soft bits) pairs of one video's faces (or one photo's, index 0).

    Each face's soft bits are multiplied by its frame's code and summed. A clip whose start may have been
    trimmed is read at code offsets 0..`trim_search`-1 (index + offset), and the offset whose signature
    statistic is largest is the reading; `chance` counts every offset tried."""
    readings = [(int(i), np.asarray(r, dtype=np.float64)) for i, r in readings]
    if not readings:
        return MarkReading(np.zeros(PAYLOAD_BITS), 0)
    index = np.array([i for i, _ in readings])
    soft = np.stack([r for _, r in readings])
    sig = _signature_signs()
    if len(np.unique(index // (2 * CODE_BLOCK))) < MIN_PAIRS:  # a photo, or too few frames for the code
        return MarkReading((soft * np.array([code(i) for i in index])).sum(axis=0), len(readings))
    best = None
    offsets = range(max(1, trim_search))
    for offset in offsets:
        pair, within = np.divmod(index + offset, 2 * CODE_BLOCK)
        signed = soft * np.where(within < CODE_BLOCK, 1.0, -1.0)[:, None]
        pairs, group = np.unique(pair, return_inverse=True)
        terms = np.zeros((len(pairs), PAYLOAD_BITS))
        np.add.at(terms, group, signed)  # each pair's (first block - second block)
        norm = np.linalg.norm(terms, axis=0)  # each bit's, before the keyed signs: what the host alone decides
        terms *= _pair_signs()[pairs % CODE_PAIRS]
        total = terms.sum(axis=0)
        statistic = float(total[:SIGNATURE_BITS] @ sig / max(np.linalg.norm(norm[:SIGNATURE_BITS]), 1e-12))
        if best is None or statistic > best.statistic:
            best = MarkReading(total, len(readings), offset, len(offsets), statistic, norm)
    return best


def read_faces(faces, trim_search: int = TRIM_SEARCH) -> MarkReading:
    """Read every (frame, landmarks) or (frame, landmarks, frame index) and `combine` them: a video's faces
    vote together, each by its frame's code (index 0 when none is given: a photo)."""
    readings = []
    for item in faces:
        frame, landmarks, index = item if len(item) == 3 else (*item, 0)
        readings.append((index, read_face(frame, landmarks)))
    return combine(readings, trim_search)
