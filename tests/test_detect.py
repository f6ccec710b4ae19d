"""Detectors on real photos: MTCNN recall against ground truth, RetinaFace's own code path."""

import csv

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.faces import detectors
from engine.faces.detection import box_iou
from engine.media import read_image
from engine.weights import RETINAFACE_RESNET50, weights_path


def test_mtcnn_recall_on_people(data_dir, mtcnn):
    rows = list(csv.DictReader(open(data_dir / "people" / "boxes.csv")))
    assert len(rows) >= 280
    hits = 0
    for row in rows:
        image = read_image(data_dir / "people" / row["file"])
        truth = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
        faces = mtcnn.detect([image])[0]
        if any(box_iou(f.box, truth) >= 0.4 for f in faces):
            hits += 1
    recall = hits / len(rows)
    assert recall >= 0.95, f"MTCNN recall {recall:.3f} on {len(rows)} photos"


def test_mtcnn_batches_mixed_sizes(data_dir, mtcnn):
    a = read_image(data_dir / "photos" / "obama-240p.jpg")
    b = read_image(data_dir / "photos" / "two_people.jpg")
    batched = mtcnn.detect([a, b, a])
    assert [len(r) >= 1 for r in batched] == [True, True, True]
    np.testing.assert_allclose(batched[0][0].box, batched[2][0].box)
    assert len(batched[1]) == 2


@pytest.fixture()
def fake_weights(tmp_path, monkeypatch):
    """A RetinaFace state dict made here, so loading and decoding run without a download: random
    init, except that the class heads call every prior a face (softmax score 0.98), so the
    detector has faces to decode and NMS, whatever the random boxes."""
    from engine.faces.retinaface import build_network

    monkeypatch.setenv("FACESTUDIO_WEIGHTS", str(tmp_path))
    torch.manual_seed(0)
    state = build_network().state_dict()
    for key, value in state.items():
        if key.startswith("ClassHead."):
            value.zero_()
            if key.endswith(".bias"):
                value[1::2] = 4.0  # (background, face) logits per anchor
    torch.save(state, weights_path(RETINAFACE_RESNET50))
    return weights_path(RETINAFACE_RESNET50)


def test_auto_prefers_retinaface_only_when_weights_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESTUDIO_WEIGHTS", str(tmp_path))
    name, why = detectors.choose_detector("auto")
    assert name == "mtcnn" and "python -m engine weights" in why
    weights_path(RETINAFACE_RESNET50).write_bytes(b"x")
    assert detectors.choose_detector("auto")[0] == "retinaface"


def test_retinaface_missing_or_broken_weights_give_clear_errors(tmp_path, monkeypatch):
    from engine.faces.retinaface import RetinaFaceDetector

    monkeypatch.setenv("FACESTUDIO_WEIGHTS", str(tmp_path))
    with pytest.raises(UserError, match="python -m engine weights"):
        RetinaFaceDetector()
    weights_path(RETINAFACE_RESNET50).write_bytes(b"not a state dict")
    with pytest.raises(UserError, match="not a RetinaFace"):
        RetinaFaceDetector()


def test_retinaface_decodes_boxes_and_landmarks_in_source_pixels(fake_weights, data_dir):
    """Drive the network's outputs so one prior fires: the face must come back where that prior is,
    in the original image's pixels, whatever the resizing and padding of the batch."""
    from engine.faces.retinaface import RetinaFaceDetector, _priors

    det = RetinaFaceDetector(max_side=320, threshold=0.5)
    image = read_image(data_dir / "photos" / "two_people.jpg")     # 1126x661 -> scaled to 320 wide
    small = read_image(data_dir / "photos" / "obama-240p.jpg")     # 426x240 -> 320 wide
    scale = 320 / 1126
    h = int(np.ceil(max(661 * scale, 240 * 320 / 426) / 32) * 32)
    priors = _priors(h, 320)
    k = len(priors) // 2
    n = len(priors)

    class Fixed(torch.nn.Module):
        def forward(self, x):
            b = x.shape[0]
            assert tuple(x.shape[2:]) == (h, 320)
            conf = torch.zeros(b, n, 2)
            conf[:, :, 0] = 10.0
            conf[0, k] = torch.tensor([0.0, 10.0])
            return torch.zeros(b, n, 4), conf, torch.zeros(b, n, 10)

    det.net = Fixed()
    faces = det.detect([image, small])
    assert len(faces[0]) == 1 and faces[1] == []
    cx, cy, pw, ph = priors[k].tolist()
    expect = np.array([(cx - pw / 2) * 320, (cy - ph / 2) * h, (cx + pw / 2) * 320, (cy + ph / 2) * h]) / scale
    np.testing.assert_allclose(faces[0][0].box, expect, rtol=1e-4)
    np.testing.assert_allclose(faces[0][0].landmarks, np.tile([cx * 320 / scale, cy * h / scale], (5, 1)),
                               rtol=1e-4)
    assert faces[0][0].score > 0.99


def test_retinaface_runs_end_to_end_on_a_batch(fake_weights, data_dir):
    from engine.faces.retinaface import RetinaFaceDetector

    det = detectors.build_detector("auto", max_side=320)
    assert isinstance(det, RetinaFaceDetector)
    images = [read_image(data_dir / "photos" / f) for f in ("obama-240p.jpg", "biden.jpg")]
    results = det.detect(images)
    assert len(results) == 2
    for image, faces in zip(images, results, strict=True):
        assert faces, "no face decoded although every prior scores as a face"
        for f in faces:
            assert f.score == pytest.approx(float(torch.sigmoid(torch.tensor(4.0))), abs=1e-5)
            assert f.landmarks.shape == (5, 2) and 0 <= f.score <= 1
            assert 0 <= f.box[0] < f.box[2] <= image.shape[1] and 0 <= f.box[1] < f.box[3] <= image.shape[0]


@pytest.mark.skipif(not weights_path(RETINAFACE_RESNET50).exists(),
                    reason="real RetinaFace weights absent: run `python -m engine weights` to test them")
def test_retinaface_real_weights_recall(data_dir):
    from engine.faces.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector()
    rows = list(csv.DictReader(open(data_dir / "people" / "boxes.csv")))[::4]
    hits = sum(
        any(box_iou(f.box, np.array([float(r[k]) for k in ("x1", "y1", "x2", "y2")])) >= 0.4
            for f in det.detect([read_image(data_dir / "people" / r["file"])])[0])
        for r in rows)
    assert hits / len(rows) >= 0.95
