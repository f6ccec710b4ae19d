"""Known answers of the face watermark on real photos: it reads back, survives JPEG, is absent where it
was never put, stays faint and stays on the face. bench/watermark.py measures it on swapped videos."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest

from engine.faces import align
from engine.provenance import watermark
from engine.provenance.record import PAYLOAD_BITS, payload_for

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


def test_reads_back_at_the_same_landmarks(photos, marked):
    for (name, _, points), out in zip(photos, marked, strict=True):
        reading = watermark.read_faces([(out, points)])
        assert reading.bit_accuracy(PAYLOAD) == 1.0, name
        assert reading.found and reading.payload == PAYLOAD and reading.model_tag == "1a2b", name
        assert reading.confidence > 0.999, name


def test_found_after_jpeg_75_and_redetection(photos, marked, mtcnn):
    found, accuracies = 0, []
    for (name, _, _), out in zip(photos, marked, strict=True):
        attacked = _jpeg(out, 75)
        face = _largest(mtcnn, attacked)
        assert face is not None, name
        reading = watermark.read_faces([(attacked, face.landmarks)])
        found += reading.found
        accuracies.append(reading.bit_accuracy(PAYLOAD))
    assert found >= max(1, len(photos) - 1), (found, accuracies)  # most: all but one
    assert np.mean(accuracies) >= 0.85, accuracies


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


def _psnr_in_face(rgb: np.ndarray, out: np.ndarray, points: np.ndarray) -> float:
    diff = out.astype(np.float64) - rgb.astype(np.float64)
    return float(10 * np.log10(255.0 ** 2 / np.square(diff[_face_area(rgb, points)]).mean()))


def test_mark_is_not_loud(photos, marked):
    """A floor that holds today: a change that made the mark much louder fails here."""
    for (name, rgb, points), out in zip(photos, marked, strict=True):
        assert _psnr_in_face(rgb, out, points) >= 30.0, name


@pytest.mark.xfail(strict=False, reason="known miss (issue 14, docs/benchmarks.md): ISS cancels the host face's "
                   "own projection in full, which on textured photos is larger than the mark itself "
                   "(RMS 23-49 against strength 25): 32.9-37.4 dB on real photos")
def test_mark_psnr_within_the_face_is_at_least_38_db(photos, marked):
    psnrs = {name: round(_psnr_in_face(rgb, out, points), 1)
             for (name, rgb, points), out in zip(photos, marked, strict=True)}
    assert min(psnrs.values()) >= 38.0, psnrs


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
