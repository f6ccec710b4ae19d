"""The identity network (SFace, converted from int8 ONNX) and the identity loss, on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.faces.align import FACESET_COVERAGE, TEMPLATE, template_points
from engine.faces.crops import center_crop_batch
from engine.identity import sface
from engine.identity.loss import IdentityLoss, jitter_thetas, own_likeness, to_sface_input

PEOPLE = ("George_W_Bush", "Colin_Powell", "Serena_Williams", "Tony_Blair")  # LFW, 3 photos each
PHOTOS = 3
UTK = 2  # and two UTKFace photos (unnamed people)
RESOLUTION, COVERAGE = 64, 0.85  # the lite preset's crops (engine.models.model.MODEL_COVERAGE)


@pytest.fixture(scope="module")
def faces(data_dir, mtcnn, tmp_path_factory, one_torch_thread):
    """(uint8 (N, 3, S, S) face-set crops, their people) of LFW and UTKFace photos, aligned by `extract`."""
    from engine.faces.extract import ExtractOptions, extract
    from engine.faces.faceset import FaceSet

    prior = data_dir / "prior"
    photos = [p for name in PEOPLE for p in sorted((prior / "lfw" / name).glob("*.jpg"))[:PHOTOS]]
    photos += sorted((prior / "utk").glob("*.jpg"))[:UTK]
    out = tmp_path_factory.mktemp("identity_faces")
    # LFW's tight crops need padding before detection (engine.faces.extract's `pad`)
    report = extract(photos, out, ExtractOptions(size=128, pad=0.5, person_from_folder=True), detector=mtcnn)
    assert report.faces_kept == len(photos), report
    faceset = FaceSet(out)
    images = faceset.load_images(np.arange(len(faceset)))
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(),
            [e["person"] for e in faceset.entries])


@pytest.fixture(scope="module")
def net(one_torch_thread):
    return sface.load()


def model_crops(faces_u8: torch.Tensor) -> torch.Tensor:
    return center_crop_batch(faces_u8, resolution=RESOLUTION, src_coverage=FACESET_COVERAGE, model_coverage=COVERAGE)


def test_converted_network_matches_onnxruntime_on_real_faces(faces, net):
    import onnx
    import onnxruntime as ort

    path = sface.onnx_path()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the file lists its initializers as inputs: one warning each
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    initializers = {t.name for t in onnx.load(str(path)).graph.initializer}
    # the 29 declared inputs no node reads (the float weights' names) still need a value: zeros
    unused = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()
              if i.name not in initializers and i.name != "data"}
    inputs = to_sface_input(center_crop_batch(faces[0], resolution=sface.SIZE, model_coverage=1.0), 1.0)
    with torch.no_grad():
        ours = net(inputs).numpy()
    theirs = np.concatenate([session.run(None, {**unused, "data": x[None].numpy()})[0] for x in inputs])
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert len(cosine) == len(PEOPLE) * PHOTOS + UTK
    assert cosine.min() >= 0.99, cosine
    assert ours.shape[1] == sface.DIMS


def test_the_converted_network_is_cached_and_frozen(net, monkeypatch):
    from engine.precision import cache_dir

    assert [p.name for p in cache_dir().glob("sface-*.safetensors")] == [sface.cache_path(sface.onnx_path()).name]

    def no_conversion(source):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(sface, "convert", no_conversion)
    again = sface.load()
    x = torch.rand(2, 3, sface.SIZE, sface.SIZE) * 255
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    assert not again.training and not any(p.requires_grad for p in again.parameters())


def test_a_damaged_cache_converts_again(net, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESWAP_STUDIO_CACHE", str(tmp_path))
    damaged = sface.cache_path(sface.onnx_path())
    damaged.write_bytes(b"not safetensors")
    fresh = sface.load()
    x = torch.rand(1, 3, sface.SIZE, sface.SIZE) * 255
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))
    assert damaged.stat().st_size > 10_000_000  # rewritten with the float weights


def test_template_points_of_a_model_crop_land_on_arcface_template():
    """Dots at the 5 template points of a face-set crop, re-cropped as the lite model's crop, then
    mapped to SFace's input: their centroids sit on ArcFace's 112 px template."""
    side = 256
    points = template_points(side, FACESET_COVERAGE)
    ys, xs = np.mgrid[0:side, 0:side]
    image = np.zeros((side, side), np.float64)
    for x, y in points:
        image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 3.0 ** 2))
    faces_u8 = torch.from_numpy(np.round(255 * image / image.max()).astype(np.uint8))[None, None].expand(1, 3, -1, -1)
    out = to_sface_input(model_crops(faces_u8.contiguous()), COVERAGE)[0, 0].numpy()
    ys, xs = np.mgrid[0:sface.SIZE, 0:sface.SIZE]
    expected = TEMPLATE * sface.SIZE
    for x, y in expected:
        near = ((xs - x) ** 2 + (ys - y) ** 2 < 7 ** 2) * out
        centroid = np.array([(near * xs).sum(), (near * ys).sum()]) / near.sum()
        assert np.abs(centroid - (x, y)).max() < 0.3, (centroid, (x, y))


def test_real_faces_mapped_to_sface_input_have_their_eyes_on_the_template(faces, mtcnn):
    """MTCNN finds the eyes of the mapped real faces where ArcFace's template puts them; a plain
    resize of the model crop to 112 px (the wrong mapping) misses by more."""
    import cv2
    import torch.nn.functional as F

    crops = model_crops(faces[0])
    template = TEMPLATE[:2] * sface.SIZE

    def eyes(rgb: torch.Tensor) -> tuple[float, float]:
        """(mean eye error in px, eye distance / the template's) over the faces."""
        pad = sface.SIZE // 2
        images = [cv2.copyMakeBorder(np.round(255 * x.permute(1, 2, 0).numpy()).astype(np.uint8),
                                     pad, pad, pad, pad, cv2.BORDER_REPLICATE) for x in rgb]
        errors, ratios = [], []
        for found in mtcnn.detect(images):
            marks = max(found, key=lambda f: f.score).landmarks[:2] - pad
            errors.append(np.linalg.norm(marks - template, axis=1).mean())
            ratios.append(np.linalg.norm(marks[1] - marks[0]) / np.linalg.norm(template[1] - template[0]))
        assert len(errors) == len(images)
        return float(np.mean(errors)), float(np.mean(ratios))

    error, ratio = eyes(to_sface_input(crops, COVERAGE).flip(1) / 255)
    resized_error, resized_ratio = eyes(F.interpolate(crops, size=(sface.SIZE,) * 2, mode="bilinear"))
    assert error < 2.0 and abs(ratio - 1) < 0.04, (error, ratio)
    assert resized_error > error + 1 and abs(resized_ratio - 1) > 0.1, (resized_error, resized_ratio)


def test_identity_loss_known_answers_on_real_faces(faces, net):
    """The same face ~0; the same person's other photos clearly lower than other people's."""
    faces_u8, people = faces
    loss = IdentityLoss(net, COVERAGE)
    crops = model_crops(faces_u8)
    same, others = [], []
    with torch.no_grad():
        embeddings = loss.embed(crops)
        # mean_embedding is the unit mean of these (each face cut as the model's crop first)
        mean = loss.mean_embedding(faces_u8[:PHOTOS], FACESET_COVERAGE, RESOLUTION)
        assert torch.allclose(mean, torch.nn.functional.normalize(embeddings[:PHOTOS].sum(0), dim=0), atol=1e-5)

        def target(person: str, leave_out: int) -> torch.Tensor:
            """The person's unit mean embedding without face `leave_out`."""
            picks = [j for j, p in enumerate(people) if p == person and j != leave_out]
            return torch.nn.functional.normalize(embeddings[picks].sum(0), dim=0)

        for i, crop in enumerate(crops[:len(PEOPLE) * PHOTOS]):
            itself = loss(crop[None], embeddings[i]).item()
            assert abs(itself) < 1e-4
            same.append(loss(crop[None], target(people[i], i)).item())
            others.append([loss(crop[None], target(p, i)).item() for p in PEOPLE if p != people[i]])
            assert same[-1] < min(others[-1]), (people[i], same[-1], others[-1])
    # measured: the same person 0.13-0.48 (mean 0.31), other people 0.55-0.84 (mean 0.66)
    assert np.min(others) > 0.45 and np.mean(others) - np.mean(same) > 0.25, (same, others)


def test_identity_loss_gradients_reach_the_input_not_the_network(faces, net):
    loss = IdentityLoss(net, COVERAGE)
    crops = model_crops(faces[0][:4]).requires_grad_(True)
    target = loss.mean_embedding(faces[0][4:8], FACESET_COVERAGE, RESOLUTION)
    value = loss(crops, target)
    value.backward()
    assert crops.grad is not None and torch.isfinite(crops.grad).all() and crops.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert abs(target.norm().item() - 1) < 1e-5


@pytest.mark.parametrize("ceiling", [True, False], ids=["robust", "jitter-alone"])
def test_training_with_the_identity_loss_runs_and_records_its_weight(faceset_a, faceset_b, tmp_path, ceiling,
                                                                     one_torch_thread, monkeypatch):
    from engine.models.folder import training_settings
    from engine.train import TrainConfig, train
    from engine.train.trainer import IdentityLoss as UsedLoss

    calls = []
    original = UsedLoss.__call__

    def counted(self, swapped, target):
        calls.append(swapped.shape)
        return original(self, swapped, target)

    monkeypatch.setattr(UsedLoss, "__call__", counted)
    made = []
    original_init = UsedLoss.__init__

    def kept(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(UsedLoss, "__init__", kept)
    result = train(TrainConfig(faces_a=str(faceset_a), faces_b=str(faceset_b), model_dir=str(tmp_path / "m"),
                               preset="lite", prior="none", device="cpu", batch_size=4, iterations=3,
                               save_every=3, preview_every=0, precision="fp32", id_weight=0.5,
                               id_ceiling=ceiling))
    assert result.status == "done" and np.isfinite([result.loss_a, result.loss_b]).all()
    assert calls == [torch.Size([4, 3, RESOLUTION, RESOLUTION])] * 3  # the A->B swap of each step
    assert training_settings(tmp_path / "m")["id_weight"] == 0.5
    # the robust default: jittered by the run's generator, capped at B's own faces' likeness (unless
    # --no-id-ceiling: jitter alone)
    (loss,) = made
    assert loss.generator is not None
    assert 0.3 < loss.ceiling < 1 if ceiling else loss.ceiling is None, loss.ceiling
    assert training_settings(tmp_path / "m")["id_robust"] is True
    assert training_settings(tmp_path / "m")["id_ceiling"] is ceiling


def test_cli_id_weight_defaults_to_the_curves_choice_and_refuses_negatives(tmp_path):
    from engine.cli import build_parser
    from engine.errors import UserError
    from engine.train.command import config_from_args
    from engine.train.config import TrainConfig

    base = ["train", "--faces-a", "a", "--faces-b", "b", "--model", str(tmp_path / "m"), "--device", "cpu"]
    assert config_from_args(build_parser().parse_args(base)).id_weight == TrainConfig.id_weight == 0.5
    assert config_from_args(build_parser().parse_args([*base, "--id-weight", "0.3"])).id_weight == 0.3
    with pytest.raises(UserError, match="--id-weight"):
        config_from_args(build_parser().parse_args([*base, "--id-weight", "-1"]))


def test_jittered_faces_keep_their_identity(faces, net):
    """The robust loss's random flips, turns, scales and shifts move a real face's embedding far less
    than a change of person does: SFace still tells the people apart through them."""
    faces_u8, people = faces
    loss = IdentityLoss(net, COVERAGE)
    crops = model_crops(faces_u8[:len(PEOPLE) * PHOTOS])
    generator = torch.Generator().manual_seed(0)
    thetas = jitter_thetas(len(crops), generator)
    assert not torch.allclose(thetas, jitter_thetas(len(crops), generator))  # fresh each call
    with torch.no_grad():
        plain, moved = loss.embed(crops), loss.embed(crops, thetas)
    itself = (plain * moved).sum(1)
    others = [float(plain[j] @ moved[i]) for i in range(len(crops)) for j in range(len(crops))
              if people[i] != people[j]]
    # measured (seed 0): the same face jittered 0.85-0.98; other people 0.09-0.46
    assert itself.min() > 0.6 and itself.min() > max(others) + 0.1, (itself, max(others))


def test_the_ceiling_stops_the_pull_at_b_own_photos_likeness(faces, net):
    """A face already as like B as B's own photos adds nothing (no gradient); one less like B is pulled."""
    faces_u8, people = faces
    crops = model_crops(faces_u8)
    bush = [i for i, p in enumerate(people) if p == PEOPLE[0]]
    loss = IdentityLoss(net, COVERAGE)
    embeddings = loss.embeddings(faces_u8[bush], FACESET_COVERAGE, RESOLUTION)
    target = loss.mean_embedding(faces_u8[bush], FACESET_COVERAGE, RESOLUTION)
    ceiling = float(own_likeness(embeddings, target))
    assert 0.5 < ceiling < 1, ceiling
    capped = IdentityLoss(net, COVERAGE, ceiling=ceiling)
    best = max(bush, key=lambda i: float(embeddings[bush.index(i)] @ target))
    like_b = crops[best:best + 1].clone().requires_grad_(True)
    value = capped(like_b, target)
    value.backward()
    assert abs(value.item() - (1 - ceiling)) < 1e-6 and like_b.grad.abs().sum() == 0
    other = crops[len(PEOPLE) * PHOTOS:len(PEOPLE) * PHOTOS + 1].clone().requires_grad_(True)  # a UTKFace stranger
    value = capped(other, target)
    value.backward()
    assert value.item() > 1 - ceiling + 0.2 and other.grad.abs().sum() > 0
