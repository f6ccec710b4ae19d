"""Alignment geometry on real photos: eyes land on the template, crops paste back exactly."""

import numpy as np
import pytest

from engine.faces import align
from engine.media import read_image
from engine.swap.blend import blend


@pytest.fixture(scope="module")
def obama(data_dir, mtcnn):
    image = read_image(data_dir / "photos" / "obama-720p.jpg")
    face = max(mtcnn.detect([image])[0], key=lambda f: f.score)
    return image, face


def test_detected_landmarks_on_aligned_crop_match_template(obama, mtcnn):
    image, face = obama
    size, coverage = 256, 0.8
    matrix = align.alignment_matrix(face.landmarks, size, coverage)
    crop = align.warp_face(image, matrix, size)
    # the transformed landmarks sit on the template up to the similarity fit's residual
    mapped = align.transform_points(face.landmarks, matrix)
    template = align.template_points(size, coverage)
    assert np.abs(mapped[:2] - template[:2]).max() < 4.0  # eyes
    # an independent detection on the crop finds the eyes where the template puts them
    again = max(mtcnn.detect([crop])[0], key=lambda f: f.score)
    assert np.linalg.norm(again.landmarks[:2] - template[:2], axis=1).max() < 6.0  # of 256 px


def test_crop_pastes_back_where_it_came_from(obama):
    """The swap's paste (blend, through align.invert) puts a warp_face crop back where it was cut."""
    image, face = obama
    matrix = align.alignment_matrix(face.landmarks, 512, 0.6)
    crop = align.warp_face(image, matrix, 512)
    restored = blend(np.zeros_like(image), crop, matrix, np.ones((512, 512), np.float32), "alpha")
    x1, y1, x2, y2 = face.box.astype(int)
    region = (slice(y1 + 10, y2 - 10), slice(x1 + 10, x2 - 10))
    err = np.abs(restored[region].astype(float) - image[region].astype(float)).mean()
    assert err < 4.0, err
    # outside the pasted square nothing was written
    assert restored[:5, :5].max() == 0


def test_recrop_equals_realigning(obama):
    image, face = obama
    big = align.alignment_matrix(face.landmarks, 256, align.FACESET_COVERAGE)
    small = align.alignment_matrix(face.landmarks, 64, 0.9)
    recrop = align.recrop_matrix(256, align.FACESET_COVERAGE, 64, 0.9)
    via_recrop = (np.vstack([recrop, [0, 0, 1]]) @ np.vstack([big, [0, 0, 1]]))[:2]  # big first, then recrop
    np.testing.assert_allclose(via_recrop, small, atol=1e-9)


def test_shrinking_large_faces_is_less_aliased_than_plain_warp(obama):
    import cv2

    image, face = obama
    matrix = align.alignment_matrix(face.landmarks, 32, 0.6)  # scale well below 0.5: area path
    crop = align.warp_face(image, matrix, 32)
    naive = cv2.warpAffine(image, matrix, (32, 32), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    reference = align.warp_face(image, align.alignment_matrix(face.landmarks, 256, 0.6), 256)
    down = cv2.resize(reference, (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    err_area = np.abs(crop.astype(float) - down).mean()
    err_naive = np.abs(naive.astype(float) - down).mean()
    assert err_area < 0.8 * err_naive, (err_area, err_naive)


def test_degenerate_landmarks_rejected():
    with pytest.raises(ValueError):
        align.alignment_matrix(np.zeros((5, 2)), 256)
