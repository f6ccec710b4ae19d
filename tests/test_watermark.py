"""Known answers of the face watermark on real photos: it stays under Chou-Li's just-noticeable difference
(issue 24), moves every bit's correlation its payload's way, is absent where it was never put and stays on
the face. bench/watermark.py measures it on swapped videos, after re-encoding, scaling and cropping."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest

from engine.faces import align
from engine.provenance import jnd, watermark
from engine.provenance.record import PAYLOAD_BITS, payload_bits, payload_for

PAYLOAD = payload_for("1a2b" + "0" * 60)
CARELL_PHOTOS = ("carell0.jpg", "carell1.jpg", "carell10.jpg")


def _largest(detector, rgb: np.ndarray):
    faces = detector.detect([rgb])[0]
    return max(faces, key=lambda f: f.area) if faces else None


@pytest.fixture(scope="module")
def photos(request, mtcnn, one_torch_thread) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB photo, landmarks of its largest face): skimage's astronaut, and a few of Carell's photos
    when ../shared/data is there."""
    from skimage import data

    from engine.media import read_image

    images = [("astronaut", data.astronaut())]
    try:
        folder = request.getfixturevalue("data_dir") / "people" / "carell"
    except pytest.skip.Exception:
        folder = None
    if folder is not None:
        images += [(name, read_image(folder / name)) for name in CARELL_PHOTOS]
    out = []
    for name, rgb in images:
        face = _largest(mtcnn, rgb)
        assert face is not None, name
        out.append((name, np.ascontiguousarray(rgb), face.landmarks))
    return out


@pytest.fixture(scope="module")
def marked(photos) -> list[np.ndarray]:
    return [watermark.embed(rgb.copy(), points, PAYLOAD) for _, rgb, points in photos]


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _face_area(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool (H, W): frame pixels under the mark's face-core weight."""
    _, weight = watermark._patterns()
    warped = cv2.warpAffine(weight, align.invert(watermark.mark_matrix(points)), (rgb.shape[1], rgb.shape[0]),
                            flags=cv2.INTER_LINEAR, borderValue=0)
    return warped > 0


def test_chou_li_known_answers():
    """The paper's luminance masking on flat patches: 3 levels at mid-grey, 17 + 3 on black, 3 + 3 on white;
    an edge raises the threshold by texture masking."""
    for level, expected in ((127.0, 3.0), (0.0, 20.0), (255.0, 6.0)):
        assert jnd.chou_li(np.full((16, 16), level, np.float32)) == pytest.approx(np.full((16, 16), expected),
                                                                                 abs=1e-4), level
    edge = np.full((16, 16), 60.0, np.float32)
    edge[:, 8:] = 200.0
    assert jnd.chou_li(edge)[8, 8] > 10.0


def test_mark_stays_under_the_jnd(photos, marked):
    """Issue 24's visibility figures on real faces: no 8x8 block of the face changes by more than Chou-Li's
    JND anywhere, and flat pixels (local std < 2) change by 2 levels at most."""
    for (name, rgb, points), out in zip(photos, marked, strict=True):
        figures = jnd.visibility(rgb, out, _face_area(rgb, points))
        assert figures["blocks"] > 50 and figures["max_change"] > 0, (name, figures)
        assert figures["share_blocks_over_jnd"] < 0.01, (name, figures)
        assert figures["max_change_flat"] <= 2.0, (name, figures)


def test_mark_moves_each_bit_its_payloads_way(photos, marked):
    """At the geometry it was made at, the mark adds to the groups' correlations (in noise deviations) on
    the payload's side, 0.22-0.54 a group on average on these photos, where an unmarked face reads about 0. A photo is frame 0: each group's sign is
    its payload bit's times `watermark.code(0)` (`watermark.symbols`)."""
    signs = watermark.symbols(0, PAYLOAD)
    assert np.array_equal(signs, (2 * np.array(payload_bits(PAYLOAD)) - 1) * watermark.code(0))
    for (name, rgb, points), out in zip(photos, marked, strict=True):
        matrix = watermark.mark_matrix(points)
        crops = [watermark._highpass(watermark._luma(watermark._crop(image, matrix))).ravel() for image in (out, rgb)]
        read = watermark.weigh(crops)
        gain = (read[0] - read[1]) * signs
        assert gain.mean() > 0.15, (name, gain.round(2))  # measured 0.22-0.54 (astronaut the most textured)


@pytest.mark.xfail(strict=False, reason="known miss (issue 24, docs/benchmarks.md): under the JND one photo's face "
                   "carries about 0.5-1 noise deviation a bit against its own texture's 1-2, and a photo has no "
                   "other frames for the code to cancel that texture with: too little for 32 bits")
def test_one_photo_reads_back_after_jpeg_75(photos, marked, mtcnn):
    for (name, _, _), out in zip(photos, marked, strict=True):
        attacked = _jpeg(out, 75)
        face = _largest(mtcnn, attacked)
        assert face is not None, name
        assert watermark.read_faces([(attacked, face.landmarks)]).payload == PAYLOAD, name


def test_unmarked_faces_are_not_found(photos):
    for name, rgb, points in photos:
        reading = watermark.read_faces([(rgb, points)])
        assert not reading.found, name
        assert reading.signature_agreement < watermark.FOUND_AT, name
        assert 0.2 <= reading.bit_accuracy(PAYLOAD) <= 0.8, name  # chance: 0.5 +- 0.09 for 32 bits


def test_no_faces_read_nothing():
    reading = watermark.read_faces([])
    assert reading.faces == 0 and not reading.found and reading.bit_accuracy(PAYLOAD) == 0.0
    assert len(reading.soft) == PAYLOAD_BITS


def test_mark_is_on_the_face_only(photos, marked):
    for (name, rgb, points), out in zip(photos, marked, strict=True):
        changed = np.abs(out.astype(np.int16) - rgb.astype(np.int16)).max(axis=2) > 0
        assert changed.any(), name
        # the residual is warped back with bilinear interpolation: allow a 2 px rim around the face core
        rim = cv2.dilate(_face_area(rgb, points).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert not (changed & ~rim).any(), name


def test_zero_alpha_leaves_the_image_unchanged(photos):
    name, rgb, points = photos[0]
    zero = np.zeros((watermark.MARK_SIZE, watermark.MARK_SIZE), dtype=np.float32)
    parameters = inspect.signature(watermark.embed).parameters
    if "alpha" in parameters:
        out = watermark.embed(rgb.copy(), points, PAYLOAD, alpha=zero)
    else:  # the mask given in its own geometry (a swap's blend mask and its frame -> mask matrix)
        out = watermark.embed(rgb.copy(), points, PAYLOAD, region=(zero, watermark.mark_matrix(points)))
    assert np.array_equal(out, rgb), name


def test_embed_marks_in_place_and_is_deterministic(photos, marked):
    _, rgb, points = photos[0]
    frame = rgb.copy()
    assert watermark.embed(frame, points, PAYLOAD) is frame
    assert np.array_equal(frame, marked[0])


# ---------------------------------------------------------------- the code over a video's frames (issue 24)


def _clip_readings(frames: int, gain: float, *, start: int = 0, bias: float = 1.0, noise: float = 1.0,
                   seed: int = 0, marked=watermark.symbols) -> list[tuple[int, np.ndarray]]:
    """(index in the attacked clip, soft bits) of a talking head as the reader sees it (the figures measured on
    talk1, docs/benchmarks.md): the face's own projection on each bit, the same in every frame (`bias` noise
    deviations RMS), the mark's `gain` a face times its frame's code, and frame-to-frame noise. `start`
    frames were cut off the clip's start, so its frame `start` is the reader's index 0. `marked`: the symbols
    the frames carry (`watermark.eased_symbols`: what `embed` puts)."""
    rng = np.random.default_rng(seed)
    own = rng.normal(0.0, bias, PAYLOAD_BITS)
    return [(t - start, own + gain * marked(t, PAYLOAD) + rng.normal(0.0, noise, PAYLOAD_BITS))
            for t in range(start, frames)]


def test_code_is_balanced_and_keyed():
    """+-1 per frame and bit, every whole pair of blocks sums to 0 on every bit, and the signs vary by bit
    and by pair (about half each way)."""
    values = np.array([watermark.code(t) for t in range(40 * watermark.CODE_BLOCK)])
    assert values.shape == (40 * watermark.CODE_BLOCK, PAYLOAD_BITS) and set(np.unique(values)) == {-1.0, 1.0}
    pair = 2 * watermark.CODE_BLOCK
    assert not values.reshape(-1, pair, PAYLOAD_BITS).sum(axis=1).any()
    firsts = values[::pair]
    assert 0.35 < (firsts > 0).mean() < 0.65 and len({tuple(row) for row in firsts}) == len(firsts)


def test_walsh_transform_and_parity_known_answers():
    values = np.random.default_rng(0).normal(size=16)
    hadamard = np.array([[(-1) ** bin(t & m).count("1") for m in range(16)] for t in range(16)])
    assert np.allclose(watermark.walsh(values), hadamard @ values)
    numbers = np.array([0, 1, 3, 0xFFFFFFFF, 0x80000001, 0x5A3C36B8])
    assert watermark._parity(numbers).tolist() == [bin(int(n)).count("1") % 2 for n in numbers]


def test_symbols_carry_the_payload_plainly_in_pair_0_and_coded_after():
    """Pair 0 (frames 0-15, a photo's) says the payload's bits; later pairs say keyed parities of them, so two
    payloads that differ in one bit differ in about half of each later pair's symbols."""
    bits = 2.0 * np.array(payload_bits(PAYLOAD)) - 1.0
    for t in (0, 7, 8, 15):
        assert np.array_equal(watermark.message(t, PAYLOAD), bits)
    other = PAYLOAD ^ 1
    differ = [np.mean(watermark.message(16 * j, PAYLOAD) != watermark.message(16 * j, other)) for j in range(1, 65)]
    assert 0.35 < np.mean(differ) < 0.65
    assert np.array_equal(watermark.symbols(40, PAYLOAD), watermark.code(40) * watermark.message(40, PAYLOAD))


def test_decoding_the_clip_whole_reads_a_faint_mark():
    """A mark of 0.2 noise deviations a face and group, read bit by bit, reads a third of its bits wrong; the
    clip decoded whole (130 frames, all 65,536 tags) reads the exact payload and finds it."""
    readings = _clip_readings(130, gain=0.2, bias=1.5, seed=5)
    reading = watermark.combine(readings)
    assert reading.payload == PAYLOAD and reading.found and reading.offset == 0, reading.statistic
    assert reading.tags == 2 ** 16 and (reading.margin * (2 * np.array(payload_bits(PAYLOAD)) - 1) > 0).all()
    per_face = np.mean([np.mean(np.sign(s) == watermark.symbols(t, PAYLOAD)) for t, s in readings])
    assert per_face < 0.6


def test_eased_mark_fades_through_its_flips_and_still_decodes():
    """What `embed` marks: each group's sign, the whole of it inside a block and in a photo (frame 0), faded
    over four frames where it flips (no step larger than a third of a hard flip's); a clip marked so, with the
    hard sign's gain, still decodes exactly and is found by the unchanged reader."""
    hard = np.array([watermark.symbols(t, PAYLOAD) for t in range(300)])
    eased = np.array([watermark.eased_symbols(t, PAYLOAD) for t in range(300)])
    assert np.array_equal(eased[0], hard[0]) and np.array_equal(eased[3:5], hard[3:5])
    assert np.array_equal(np.sign(eased), hard)
    assert np.abs(np.diff(hard, axis=0)).max() == 2.0
    assert np.abs(np.diff(eased, axis=0)).max() <= 2.0 / 3.0 + 1e-9
    assert 0.75 < np.abs(eased).mean() < 0.9  # the mark the fades cost
    reading = watermark.combine(_clip_readings(160, gain=0.2, bias=1.5, seed=5, marked=watermark.eased_symbols))
    assert reading.payload == PAYLOAD and reading.found and reading.offset == 0, reading.statistic


def test_code_cancels_the_faces_own_projection():
    """A face's own projection larger than the mark's gain, the same in every frame: summed by the code the
    clip reads its exact payload and is found; summed plainly (a mark without the code) it is not exact."""
    readings = _clip_readings(240, gain=0.5, bias=1.5)
    reading = watermark.combine(readings)
    assert reading.coded and reading.offset == 0
    assert reading.payload == PAYLOAD and reading.found and reading.chance < 1e-6, reading
    biased = watermark.MarkReading(np.sum([s for _, s in _clip_readings(240, gain=0.5, bias=1.5)], axis=0), 240)
    assert biased.payload != PAYLOAD  # without the code the projection decides bits: the old miss


def test_unmarked_clips_are_not_found():
    """No mark, faces with their own projections: the code's test finds none in 50 clips (its bound: 1e-4
    over every tag and offset)."""
    for seed in range(50):
        reading = watermark.combine(_clip_readings(135, gain=0.0, bias=1.5, seed=seed))
        assert reading.coded and not reading.found, (seed, reading.statistic)


def test_a_trimmed_clip_is_read_at_its_offset():
    """The first 13 frames cut off: the reader tries the code's offsets and reads the payload at 13."""
    reading = watermark.combine(_clip_readings(253, gain=0.5, start=13, seed=3))
    assert reading.offset == 13 and reading.payload == PAYLOAD and reading.found
    assert reading.offsets == watermark.TRIM_SEARCH


def test_a_photo_is_read_as_is():
    """One face at index 0: no code to cancel its projection; read by its signature bits (binomial chance)."""
    signs = 2.0 * np.array(payload_bits(PAYLOAD)) - 1.0
    reading = watermark.combine([(0, 3.0 * signs * watermark.code(0))])
    assert not reading.coded and reading.payload == PAYLOAD and reading.found
    assert reading.chance == pytest.approx(1 / 2 ** 16)


def test_marked_face_changes_little_from_frame_to_frame_at_a_flip(photos):
    """On a real face, the mark's change from frame 7 to 8 (where every group's sign flips) is a fraction of
    the whole flip between the blocks' middles (frames 3 and 11): no pulse of twice the mark in one frame."""
    _, rgb, landmarks = photos[0]

    def marked(index: int) -> np.ndarray:
        return watermark.embed(rgb.copy(), landmarks, PAYLOAD, index=index).astype(np.float32)

    whole = np.abs(marked(3) - marked(11)).mean()
    assert whole > 0
    assert np.abs(marked(7) - marked(8)).mean() < 0.5 * whole
