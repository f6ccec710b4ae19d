"""An invisible mark in the pixels of each swapped face, coarse and coded over a video's frames (issue 24).

How: a coarse, soft pattern in the face's own geometry, coded over a video's frames and decoded whole.
The face core of a 128 px aligned crop (the same 5-point alignment as extraction and swapping,
`engine.faces.align`, at coverage 0.8, less a hole on each eye) is cut into CELL px cells (20-30 px of
a 250-350 px face: bench/mark_scale.py measured that a re-upload at half size and CRF 28 keeps most of a
grain this coarse and a quarter of a 4 px one); each cell is dealt to one of 32 groups with a +-1 chip
(by `KEY`), and the right half's cells mirror the left's with the chip negated, so a symmetric face
reads 0 on every group. Each pixel changes by its allowance, up or down as its cell's chip and group's
symbol say: up to `JND_SHARE` of Chou and Li's JND (`engine.provenance.jnd`: luminance and texture
masking) where the face is textured, in proportion to its local std below TEXTURE_FULL, at most
FLAT_CAP (2 levels once rounded) where it is flat and AMPLITUDE_MAX anywhere, the least over SMOOTH px
and blurred, so the allowance adds no fine texture of its own: the mark goes to hair-line, brows and
edges and stays out of smooth skin.

In time: each group's sign holds for a block of CODE_BLOCK frames and flips for the next (`code`), each
pair of blocks and group its own keyed sign, so a face's own projection, the same in every frame of a
talking head, cancels pair by pair. What the symbols say (`message`): in pair 0 the payload's own 32
bits (a photo is frame 0 and reads them plainly, by its signature bits); in every later pair keyed
random parities of the payload's bits, so that a clip is an error-correcting code of its payload. A
video's reader (`combine`) sums each face's correlations pair by pair and decodes the model tag (the
payload's low 16 bits; the high 16 are the studio's signature, known to every reader) by maximum
likelihood over all 65,536 tags at once, a Walsh-Hadamard transform of the pairs' votes: all of the
clip's mark, on every group and pair, goes into one decision instead of 32 separate ones (a simulated
mark of 0.2 noise deviations a face and group decodes exactly from 130 frames). Each face's soft
symbols come from its high-passed crop with every pixel weighted by the clip's own high-pass power
there (`weigh`), which doubled the coded signal to noise of a re-uploaded clip against one face's
own. A clip whose start was cut off is read at the best of TRIM_SEARCH
code offsets; `chance` bounds the probability that an unmarked clip reads as marked with any tag at
any offset (Hoeffding over the keyed signs).

What it costs and reads: docs/benchmarks.md ("Provenance watermark", issue 24, round three). In
short: no 8x8 block of a face changes by more than the JND and the crops cannot be told apart, but
after a re-upload (CRF 28, with or without halving and cropping) no shared clip's swap reads: what the
encoder leaves of a mark this faint, against the face's own change and the encoder's own decisions,
is short of the 7 deviations the bound asks over 65,536 tags and 64 offsets. The patterns are
fixed by `KEY`, so anyone with this code can read (and, knowingly, strip) the mark: it labels honest
output, it is not a secret.
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
CELL = 8  # px (of MARK_SIZE) of one pattern cell: 20-30 px of a 250-350 px face, what a re-upload keeps
HIGHPASS_SIGMA = 6.0  # px: the reader's high-pass removes shading broader than the cells
PATTERN_BLUR = 2.5  # px: soft cell edges (no block edges to see, nothing fine for an encoder to drop)
SATURATE = 2.0  # the blurred pattern times this, clipped to +-1: flat tops, soft edges (`_soft_cells`)
JND_SHARE = 0.8  # of Chou-Li's JND a pixel may change by (0.8 x 3 + 0.5 rounding stays under the least JND, 3)
FLAT_CAP = 1.5  # grey levels a flat pixel (local std < jnd.FLAT_STD) may change by: 2 at most once rounded
TEXTURE_FULL = 4.0  # local std (grey levels) from which a pixel gets its whole JND share; less below, in proportion
AMPLITUDE_MAX = 3.0  # grey levels: the most any pixel carries, however textured (a coarse pattern flickers)
SMOOTH = 1  # px (of MARK_SIZE): the allowance is the least over this reach, then blurred (4 px left a smooth
# swapped face no allowance at all: no pixel of talk2's swap changed)
EYE_HOLE = 0.3  # radius of the hole around each eye, in eye distances: no mark on the eyes' whites
NOISE_WINDOW = 9  # px (of MARK_SIZE): the window of the reader's local high-pass power
NOISE_FLOOR = 1.0  # grey levels squared added to that power: the noise of encoding where the face is flat
MIRROR = True  # each group's cells come in mirror pairs of opposite chips: a symmetric face reads 0
KEY = 20261202  # seed of the patterns: fixed, so every copy of the studio reads every other's marks
SIGNATURE_BITS = 16
TAG_BITS = PAYLOAD_BITS - SIGNATURE_BITS  # what a video's reader decodes; the signature is known to it
FOUND_AT = 15  # signature bits (of 16) that must agree before a photo's mark counts as found: 2.6e-4 by chance
CODE_BLOCK = 8  # frames: the mark's sign holds for a block, then flips for the next (a pair of blocks: +- or -+)
EASE = (1, 2, 3, 2, 1)  # weights over frames index-2..index+2 of the marked sign: a flip fades over four frames
CODE_PAIRS = 4096  # keyed pair signs before the code repeats (8.7 minutes at 30 fps, blocks of 8)
CODE_KEY = KEY + 1  # seed of the pair signs
MASK_KEY = KEY + 2  # seed of the symbols' parity masks (pair 0's are the payload's own bits)
MIN_PAIRS = 2  # pair blocks a reading must span to be decoded as a video (below: read as a photo)
TRIM_SEARCH = 64  # frames trimmed off a clip's start that a reader still finds: code offsets 0..63 are tried
FOUND_CHANCE = 1e-4  # a coded reading counts as found when an unmarked clip's chance (all offsets, tags) is below this
_STEPS = (-2.0, 0.0, 2.0)  # px of MARK_SIZE
SEARCH_SHIFTS = [(dx, dy) for dy in _STEPS for dx in _STEPS]  # where a reader looks around the detected face


@functools.cache
def _pair_signs() -> np.ndarray:
    """(CODE_PAIRS, 32) keyed +-1: each group's sign for each pair of blocks."""
    return np.random.default_rng(CODE_KEY).choice(np.array([-1.0, 1.0]), size=(CODE_PAIRS, PAYLOAD_BITS))


@functools.cache
def _masks() -> np.ndarray:
    """(CODE_PAIRS, 32) int64: which payload bits each group's symbol carries in each pair of blocks (its
    sign: the parity of payload & mask). Pair 0's are the payload's own bits, most significant first, so
    a photo carries its 32 bits plainly; every later pair's are keyed and random."""
    masks = np.random.default_rng(MASK_KEY).integers(1, 2 ** PAYLOAD_BITS, size=(CODE_PAIRS, PAYLOAD_BITS))
    masks[0] = [1 << (PAYLOAD_BITS - 1 - k) for k in range(PAYLOAD_BITS)]
    return masks


def _parity(values: np.ndarray) -> np.ndarray:
    """0/1 parity of the set bits of each non-negative integer (below 2**32)."""
    values = np.asarray(values, dtype=np.int64)
    for shift in (16, 8, 4, 2, 1):
        values = values ^ (values >> shift)
    return values & 1


def code(index: int) -> np.ndarray:
    """(32,) each group's sign (+1 or -1) in frame `index` of a video (0 for a photo), the payload aside:
    blocks of CODE_BLOCK frames in pairs of opposite signs (+- or -+, by each group's keyed pair sign), so
    that any whole pair of blocks sums a face's constant projection on each group to zero while the mark,
    multiplied by the code, adds up; and keyed per group and pair, so that an unmarked clip's coded sums
    are sums of independent random signs (`MarkReading.chance`)."""
    pair, within = divmod(int(index), 2 * CODE_BLOCK)
    return _pair_signs()[pair % CODE_PAIRS] * (1.0 if within < CODE_BLOCK else -1.0)


def message(index: int, payload: int) -> np.ndarray:
    """(32,) +-1: what each group says of `payload` in frame `index`'s pair of blocks: +1 where the parity
    of payload & the group's mask is 1 (in pair 0, the payload's own bits: +1 for a 1)."""
    pair = (int(index) // (2 * CODE_BLOCK)) % CODE_PAIRS
    return 2.0 * _parity(int(payload) & _masks()[pair]) - 1.0


def symbols(index: int, payload: int) -> np.ndarray:
    """(32,) each group's sign in frame `index` of a video marked with `payload`: `code` times `message`."""
    return code(index) * message(index, payload)


def eased_symbols(index: int, payload: int) -> np.ndarray:
    """(32,) in [-1, 1]: `symbols` averaged over the frames around `index` with the weights `EASE` (frames
    before 0 count as frame 0), what `embed` marks. Inside a block it is the sign itself (a photo, frame 0,
    gets the whole mark); where a group's sign flips, the mark fades through it over a few frames instead of
    jumping by twice its amplitude from one frame to the next, a pulse that `evaluate`'s flicker counted
    (docs/benchmarks.md, "The face steadied where it shimmers, and the mark eased across its flips"). The
    reader is unchanged: the frames next to a flip carry less of the mark."""
    reach = len(EASE) // 2
    total = sum(w * symbols(max(index + d, 0), payload) for w, d in zip(EASE, range(-reach, reach + 1), strict=True))
    return total / float(sum(EASE))


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
    cells: np.ndarray  # (S, S) float32: each cell's +-1 chip (before the groups' signs)
    owner: np.ndarray  # (S, S) int: the group each pixel's cell belongs to
    filters: np.ndarray  # (32, S*S) unit-norm reading filters: the high-passed chips of each group's cells
    weight: np.ndarray  # (S, S) float32: where the mark lives (face ellipse, no eyes)


@functools.cache
def _layout() -> _Layout:
    """Each cell of the face belongs to one group: cells are dealt to the 32 groups at random (by KEY), each
    with a random +-1 chip, so every group gets its share of textured and flat places."""
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
        f = _highpass(_soft_cells(grow(np.where(owners == bit, chips, 0)))) * weight
        filters.append((f / np.linalg.norm(f)).ravel())
    return _Layout(grow(chips), owner, np.array(filters, dtype=np.float32), weight)


def _soft_cells(cells: np.ndarray) -> np.ndarray:
    """+-1 cells (0 for none) as the mark draws them: blurred by PATTERN_BLUR, then scaled by SATURATE and
    clipped, so each cell's middle carries the whole allowance and only its edge ramps (a blur alone left
    the median pixel at 0.6 of it)."""
    return np.clip(SATURATE * cv2.GaussianBlur(cells.astype(np.float32), (0, 0), PATTERN_BLUR), -1.0, 1.0)


def _patterns() -> tuple[np.ndarray, np.ndarray]:
    """(32, MARK_SIZE**2) unit-norm reading filters, and the weight the mark lives under."""
    layout = _layout()
    return layout.filters, layout.weight


def _luma(rgb: np.ndarray) -> np.ndarray:
    return jnd.luma(rgb)


def mark_matrix(landmarks: np.ndarray) -> np.ndarray:
    """Frame pixels -> the mark's aligned crop, from a face's 5 landmarks."""
    return align.alignment_matrix(landmarks, MARK_SIZE, MARK_COVERAGE)


def allowance(frame: np.ndarray, matrix: np.ndarray, share: float = JND_SHARE) -> np.ndarray:
    """(MARK_SIZE, MARK_SIZE) float32: how far (grey levels) the mark may change each pixel of the crop at
    `matrix`, from Chou-Li's JND of the frame's own pixels under it: `share` of the JND where the face is
    textured (local std >= TEXTURE_FULL), less where it is smoother, in proportion, at most FLAT_CAP where
    it is flat (std < 2) and AMPLITUDE_MAX anywhere; a crop pixel gets the least of the frame pixels its
    residual reaches and of its neighbours within SMOOTH px, then the map is blurred as much, so it
    carries no fine texture of its own (that stays under every pixel's own bound).

    A coarse pattern at the flat cap on every pixel (2 levels, on smooth skin too) was tried for round
    three: four times the signal on real faces, still not read after a re-upload of a swap, and a 4-level
    step over 20-30 px patches of skin at every flip of the code, which is what the eye sees best in
    motion (docs/benchmarks.md, "Issue 24, round three"): the mark stays out of flat skin."""
    scale = 1.0 / np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2])))  # frame px per crop px
    reach = 2 * int(np.ceil(scale)) + 1
    (x0, y0), (x1, y1) = _bounds(frame, matrix, margin=reach + 2)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((MARK_SIZE, MARK_SIZE), dtype=np.float32)
    gray = _luma(frame[y0:y1, x0:x1])
    std = jnd.local_std(gray)
    allowed = np.minimum(share * jnd.chou_li(gray) * np.clip(std / TEXTURE_FULL, 0.0, 1.0), AMPLITUDE_MAX)
    allowed = np.where(std < jnd.FLAT_STD, np.minimum(allowed, FLAT_CAP), allowed)
    allowed = cv2.erode(allowed, np.ones((reach, reach), np.uint8), borderType=cv2.BORDER_REPLICATE)
    shifted = np.asarray(matrix, dtype=np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], dtype=np.float64)
    crop = cv2.warpAffine(allowed, shifted, (MARK_SIZE, MARK_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
    crop = cv2.erode(crop, np.ones((2 * SMOOTH + 1, 2 * SMOOTH + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return cv2.GaussianBlur(crop, (0, 0), SMOOTH / 3)


def embed(frame: np.ndarray, landmarks: np.ndarray, payload: int, *, index: int = 0,
          region: tuple[np.ndarray, np.ndarray] | None = None, share: float = JND_SHARE) -> np.ndarray:
    """`frame` (RGB uint8, changed in place and returned) with `payload` marked on the face at `landmarks`,
    each group's sign that of `symbols(index, payload)` (eased across flips, `eased_symbols`): `index` is the
    frame's place in its video (0 for a photo).

    Each pixel of the face changes by its whole allowance (`allowance`), up or down as its cell's chip
    and group's symbol say: under a per-pixel limit, that gives every group the largest correlation.
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
    signs = eased_symbols(index, payload).astype(np.float32)
    chips = _soft_cells(layout.cells * signs[layout.owner])
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


def face_crop(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(MARK_SIZE**2,) float32: the high-passed luma of the face at `landmarks` in the mark's crop, what a
    reader keeps of each face (`weigh` turns a clip's crops into soft symbols).

    A detector's landmarks on the swapped frame are off those the mark was made at (the swap's input
    face's) by a pixel or three in the mark's crop; the cells are coarse enough that a small search
    (SEARCH_SHIFTS) around the detected geometry covers it: the shift whose crop alone correlates with
    the most energy (`signal`, blind to the groups' signs, so the search favours no payload) is kept.
    """
    return scored_face_crop(frame, landmarks)[0]


def scored_face_crop(frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """`face_crop` and the `signal` its search kept it by: a reader picking a frame's strongest face
    compares these instead of weighing every crop again."""
    base = mark_matrix(landmarks)
    best, best_signal = None, -1.0
    for dx, dy in SEARCH_SHIFTS:
        matrix = base.copy()
        matrix[:, 2] += (dx, dy)
        hp = _highpass(_luma(_crop(frame, matrix))).ravel()
        power = signal(weigh([hp])[0])
        if power > best_signal:
            best, best_signal = hp, power
    return best, best_signal


def read_face(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Soft symbols (32,) of one face alone: each group's weighted correlation in noise deviations."""
    return weigh([face_crop(frame, landmarks)])[0]


def weigh(crops) -> np.ndarray:
    """(faces, 32) soft symbols of one clip's face crops (`face_crop`): each group's correlation, each
    pixel weighted by the inverse of the clip's own high-pass power around it (the mean over its faces,
    over NOISE_WINDOW px, plus NOISE_FLOOR), over the noise's deviation. Where the face is smooth its
    texture and motion hide the mark least, so it counts most; the whole clip estimates that power far
    better than one face does (bench: twice the coded signal to noise after a re-upload; one face's own
    power holds its mark too). An unmarked face reads about N(0, 1) a group; a marked one adds its
    mark's signal to noise ratio."""
    crops = np.asarray(crops, dtype=np.float32).reshape(-1, MARK_SIZE * MARK_SIZE)
    if not len(crops):
        return np.zeros((0, PAYLOAD_BITS))
    filters = _layout().filters
    power = (np.einsum("ij,ij->j", crops, crops) / len(crops)).reshape(MARK_SIZE, MARK_SIZE)
    inverse = 1.0 / (cv2.blur(power, (NOISE_WINDOW, NOISE_WINDOW)).ravel() + NOISE_FLOOR)
    weighted = filters * inverse[None]
    weighted /= np.sqrt(np.einsum("ij,ij->i", weighted, filters))[:, None]
    return np.einsum("ij,kj->ki", weighted, crops).astype(np.float64)


def signal(soft: np.ndarray) -> float:
    """Correlation energy of soft bits, whatever their signs: a marked face's is large."""
    return float(np.square(soft).sum())


@dataclass
class MarkReading:
    """What the pixels say: the payload read from the faces' soft symbols, and how sure that is.

    A video (faces over MIN_PAIRS pairs of code blocks or more) is decoded whole (`combine`): its
    `model_tag` is the tag of largest likelihood over all 65,536, `statistic` the coded correlation of the
    clip's pair terms with that tag's symbols (the studio's signature included) over their norm, and
    `chance` bounds the probability that an unmarked clip reaches it with any tag at any of the
    `offsets` tried (Hoeffding: the keyed signs, one per group and pair, are independent random signs
    that the host's own pixels cannot know, so for any faces and any one tag an unmarked clip's
    statistic exceeds x with chance at most exp(-x^2 / 2)). `soft` is then each payload bit's margin in
    deviations: the signature's bits stand at the statistic, each tag bit at how much the best tag
    beats the best tag that differs in that bit. A photo (or a clip too short to decode) sums its soft
    bits by `code` and is tested by how many of its 16 signature bits agree (binomial chance)."""

    soft: np.ndarray  # (32,) a photo's summed soft bits, or a video's per-bit margins (sign: the bit read)
    faces: int  # faces read
    offset: int = 0  # frames the reading's indices were shifted by (the clip's start trimmed off by as many)
    offsets: int = 1  # offsets tried
    statistic: float | None = None  # the decoded tag's coded statistic (None: a photo's reading)
    tags: int = 1  # tags tried (65,536 for a video's reading)

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
        """How many of the 16 signature bits read as the studio's signature (a video's reading decodes the
        tag under the signature, so its 16 always do: `found` says whether the mark is there)."""
        return sum(int(a == b) for a, b in zip(self.bits[:SIGNATURE_BITS], _signature_bits(), strict=True))

    @property
    def found(self) -> bool:
        if self.faces == 0:
            return False
        return self.chance < FOUND_CHANCE if self.coded else self.signature_agreement >= FOUND_AT

    @property
    def chance(self) -> float:
        """Probability that unmarked faces read this much like a mark by chance."""
        if self.coded:
            x = max(self.statistic, 0.0)
            return min(1.0, self.tags * self.offsets * math.exp(-0.5 * x * x))
        k = self.signature_agreement
        return sum(math.comb(SIGNATURE_BITS, j) for j in range(k, SIGNATURE_BITS + 1)) / 2 ** SIGNATURE_BITS

    @property
    def confidence(self) -> float:
        return 1.0 - self.chance if self.faces else 0.0

    @property
    def margin(self) -> np.ndarray | None:
        """(32,) each bit's margin in deviations, signed by the bit read (None for a photo)."""
        return self.soft if self.coded else None

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


def walsh(values: np.ndarray) -> np.ndarray:
    """The Walsh-Hadamard transform of a vector of 2**k values: out[t] = sum_m values[m] (-1)^popcount(t & m)."""
    out = np.asarray(values, dtype=np.float64).copy()
    n, h = len(out), 1
    while h < n:
        out = out.reshape(-1, 2, h)
        out = np.stack([out[:, 0] + out[:, 1], out[:, 0] - out[:, 1]], axis=1).reshape(-1)
        h *= 2
    return out


def _decode(index: np.ndarray, soft: np.ndarray, offset: int) -> tuple[np.ndarray, float]:
    """Every tag's coded correlation (65,536,) and the norm it is measured against, for faces at `index`
    + `offset`: each pair of blocks' (first block - second block) per group, times the keyed signs and
    the signature's part of each symbol, summed onto the symbols' tag masks and transformed, so that each
    tag's score is its symbols' correlation with the clip. (Weighting each group by the inverse of its
    spread over the clip lost a third of the statistic on a re-uploaded clip: the spread holds the mark.)"""
    pair, within = np.divmod(index + offset, 2 * CODE_BLOCK)
    signed = soft * np.where(within < CODE_BLOCK, 1.0, -1.0)[:, None]
    pairs, group = np.unique(pair, return_inverse=True)
    terms = np.zeros((len(pairs), PAYLOAD_BITS))
    np.add.at(terms, group, signed)
    norm = float(np.linalg.norm(terms))
    masks = _masks()[pairs % CODE_PAIRS]
    signature = 1.0 - 2.0 * _parity((SIGNATURE << TAG_BITS) & masks)  # (-1)^(parity of the signature's part)
    votes = np.zeros(2 ** TAG_BITS)
    # a symbol is +1 where parity(payload & mask) is 1: -(-1)^(signature part) (-1)^(tag part)
    np.add.at(votes, masks & (2 ** TAG_BITS - 1), -(terms * _pair_signs()[pairs % CODE_PAIRS] * signature))
    return walsh(votes), norm


def _margins(scores: np.ndarray, tag: int, statistic: float, norm: float) -> np.ndarray:
    """(32,) per-bit margins of the decoded payload: the signature's bits at `statistic`, each tag bit at
    (the best tag's score - the best score of the tags that differ in that bit) / norm; signed by the bit."""
    tags = np.arange(len(scores))
    out = []
    for k in range(TAG_BITS - 1, -1, -1):  # most significant first, as payload_bits
        other = (tags >> k & 1) != (tag >> k & 1)
        out.append((scores[tag] - scores[other].max()) / max(norm, 1e-12))
    bits = payload_bits((SIGNATURE << TAG_BITS) | tag)
    margins = np.array([statistic] * SIGNATURE_BITS + out)
    return margins * (2.0 * np.array(bits) - 1.0)


def combine(readings, trim_search: int = TRIM_SEARCH) -> MarkReading:
    """One reading from (frame index, soft symbols) pairs of one video's faces (or one photo's, index 0).

    A video's faces are decoded whole (`_decode`) at code offsets 0..`trim_search`-1 (a clip whose first
    frames were cut off), the tag and offset of the largest score being the reading; `chance` counts every
    tag and offset tried. A photo, or faces within fewer than MIN_PAIRS pairs of blocks, is read as a photo:
    each face's soft bits times its frame's code, summed, and each bit read by its sign."""
    readings = [(int(i), np.asarray(r, dtype=np.float64)) for i, r in readings]
    if not readings:
        return MarkReading(np.zeros(PAYLOAD_BITS), 0)
    index = np.array([i for i, _ in readings])
    soft = np.stack([r for _, r in readings])
    if len(np.unique(index // (2 * CODE_BLOCK))) < MIN_PAIRS:  # a photo, or too few frames for the code
        return MarkReading((soft * np.array([code(i) for i in index])).sum(axis=0), len(readings))
    best = None
    offsets = range(max(1, trim_search))
    for offset in offsets:
        scores, norm = _decode(index, soft, offset)
        tag = int(np.argmax(scores))
        statistic = float(scores[tag] / max(norm, 1e-12))
        if best is None or statistic > best[0]:
            best = (statistic, offset, scores, tag, norm)
    statistic, offset, scores, tag, norm = best
    return MarkReading(_margins(scores, tag, statistic, norm), len(readings), offset, len(offsets), statistic,
                       2 ** TAG_BITS)


def read_faces(faces, trim_search: int = TRIM_SEARCH) -> MarkReading:
    """Read every (frame, landmarks) or (frame, landmarks, frame index) of one photo or video and `combine`
    them: a video's faces vote together, each by its frame's code (index 0 when none is given: a photo)."""
    indices, crops = [], []
    for item in faces:
        frame, landmarks, index = item if len(item) == 3 else (*item, 0)
        indices.append(index)
        crops.append(face_crop(frame, landmarks))
    return combine(zip(indices, weigh(crops), strict=True), trim_search)
