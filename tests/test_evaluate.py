"""Swap-quality evaluation: each metric on a case with a known answer, dlib's judges on real faces,
and the `evaluate` command end to end on a tiny model and a short clip."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from engine.errors import UserError
from engine.evaluate import metrics as M

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames(data_dir):
    """The first 6 frames of talk2.mp4 (identity A), as the destination video."""
    from engine.video_reader import read_frames

    out = []
    for index, frame in read_frames(data_dir / "video" / "talk2.mp4"):
        out.append(frame.copy())
        if index == 5:
            break
    return out


@pytest.fixture(scope="module")
def placed(frames, mtcnn):
    """Where a swap would paste in each frame: MTCNN landmarks, the swap's matrix and blend mask."""
    from engine.faces import align
    from engine.models import MODEL_COVERAGE
    from engine.swap.masks import blend_mask
    from engine.swap.pipeline import SwappedFace
    from engine.swap.settings import BLEND_SIZE

    mask = blend_mask(BLEND_SIZE, MODEL_COVERAGE, blur=6)
    out = []
    for faces in mtcnn.detect(frames):
        face = max(faces, key=lambda f: f.area)
        out.append([SwappedFace(face.landmarks, align.alignment_matrix(face.landmarks, BLEND_SIZE, MODEL_COVERAGE),
                                mask)])
    return out


@pytest.fixture(scope="module")
def analyzer():
    from engine.evaluate.identity import FaceAnalyzer

    return FaceAnalyzer()


def _face_crop(frames, placed):
    from engine.faces import align

    face = placed[0][0]
    return align.warp_face(frames[0], face.matrix, face.mask.shape[0]), face.mask


# --- pure metrics on known answers ---------------------------------------------------------------

def test_ssim_and_psnr_of_identical_images_and_of_a_known_offset(frames, placed):
    crop, _ = _face_crop(frames, placed)
    assert M.ssim(crop, crop) == pytest.approx(1.0)
    assert M.psnr(crop, crop) == math.inf
    shifted = np.clip(crop.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((shifted.astype(float) - crop) ** 2)
    assert M.psnr(shifted, crop) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-6)
    blurred = [M.ssim(cv2.GaussianBlur(crop, (0, 0), sigma), crop) for sigma in (1, 3, 6)]
    assert 1 > blurred[0] > blurred[1] > blurred[2]


def test_sharpness_ratio_is_one_on_identical_faces_and_below_one_on_blurred(frames, placed):
    crop, mask = _face_crop(frames, placed)
    assert M.sharpness_ratio(crop, crop, mask) == pytest.approx(1.0)
    assert M.sharpness_ratio(cv2.GaussianBlur(crop, (0, 0), 1.0), crop, mask) < 0.6
    assert M.sharpness_ratio(cv2.GaussianBlur(crop, (0, 0), 3.0), crop, mask) < 0.1


def test_seam_score_is_one_without_a_seam_and_rises_with_a_brightness_step_at_the_mask_edge(frames, placed):
    crop, mask = _face_crop(frames, placed)
    assert M.seam_score(crop, crop, mask) == pytest.approx(1.0)
    pasted = np.where((mask > 0.5)[..., None], np.clip(crop.astype(int) + 40, 0, 255), crop).astype(np.uint8)
    assert M.seam_score(pasted, crop, mask) > 2.0
    feathered = (crop + 40 * mask[..., None]).clip(0, 255).astype(np.uint8)  # the same step, feathered
    assert 1.0 < M.seam_score(feathered, crop, mask) < M.seam_score(pasted, crop, mask)


def _projected(yaw=0.0, pitch=0.0, roll=0.0, size=(720, 1280)) -> np.ndarray:
    """The generic 3D head rotated by known angles and projected by the same camera solvePnP assumes."""
    rotation = (cv2.Rodrigues(np.array([0.0, 0.0, np.radians(roll)]))[0]
                @ cv2.Rodrigues(np.array([np.radians(pitch), 0.0, 0.0]))[0]
                @ cv2.Rodrigues(np.array([0.0, np.radians(yaw), 0.0]))[0])
    points, _ = cv2.projectPoints(M.face_model_3d(), cv2.Rodrigues(rotation)[0], np.array([30.0, -20.0, 900.0]),
                                  M.camera_matrix(size), None)
    return points.reshape(68, 2)


def test_pose_error_is_zero_for_identical_landmarks_and_theta_for_a_rotated_head():
    size = (720, 1280)
    base = _projected(size=size)
    assert M.pose_difference(base, base, size) == pytest.approx(np.zeros(4), abs=1e-6)
    for axis, theta in (("yaw", 20.0), ("pitch", 12.0), ("roll", 8.0)):
        diff = M.pose_difference(_projected(**{axis: theta}, size=size), base, size)
        expected = {"yaw": [theta, 0, 0], "pitch": [0, theta, 0], "roll": [0, 0, theta]}[axis]
        assert diff[:3] == pytest.approx(expected, abs=0.5), axis
        assert diff[3] == pytest.approx(theta, abs=0.5)
    noisy = base + np.random.default_rng(0).normal(0, 1.0, base.shape)  # 1 px of landmark noise
    assert M.pose_difference(noisy, base, size)[3] < 3.0


def test_real_faces_get_near_frontal_poses_not_the_mirrored_solution(frames, placed, analyzer):
    """talk2's speaker faces the camera: solvePnP must not land on the 180-degree-turned head."""
    for frame, faces in zip(frames, placed, strict=True):
        points = analyzer.landmarks(frame, analyzer.box_from_landmarks(faces[0].landmarks))
        assert np.abs(M.euler_degrees(M.head_rotation(points, frame.shape[:2]))).max() < 25


def test_landmark_nme_is_zero_for_identical_points_and_the_shift_over_the_eye_distance():
    points = _projected()
    interocular = np.linalg.norm(points[36] - points[45])
    assert M.landmark_nme(points, points) == 0.0
    assert M.landmark_nme(points + [0.1 * interocular, 0.0], points) == pytest.approx(0.1)


def test_identity_figures_on_constructed_embeddings():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=128), rng.normal(size=128)
    near_b = b + 0.1 * rng.normal(size=(20, 128))
    assert M.identity_retrieval(near_b, b, a).all()
    assert not M.identity_retrieval(near_b, a, b).any()
    assert M.cosine_similarity(near_b, b).min() > 0.9
    same = np.tile(b, (5, 1))
    assert M.leave_one_out_similarity(same) == pytest.approx(np.ones(5))
    assert M.jitter([0.5, 0.5, 0.5]) == 0.0 and M.jitter([0.4, 0.6]) == pytest.approx(0.1)


def test_flicker_is_one_for_an_identity_swap_and_above_one_for_a_shimmering_one(frames, placed):
    region = placed[1][0].region(frames[1].shape)
    swapped, dest = [], []
    rng = np.random.default_rng(2)
    for frame, faces in zip(frames, placed, strict=True):
        r = faces[0].region(frame.shape)
        noise = np.where(r[..., None], rng.normal(0, 6, frame.shape), 0)
        swapped.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
        dest.append(frame)
    same = [M.flicker_pair(frames[i - 1], frames[i], frames[i - 1], frames[i], region) for i in range(1, len(frames))]
    s, d = np.array(same).T
    assert np.array_equal(s, d) and M.flicker_ratio(s, d) == 1.0
    shimmer = [M.flicker_pair(dest[i - 1], dest[i], swapped[i - 1], swapped[i], region) for i in range(1, len(frames))]
    s, d = np.array(shimmer).T
    assert M.flicker_ratio(s, d) > 1.5


def test_sample_clips_are_runs_of_consecutive_frames_spread_over_the_video():
    from engine.evaluate.inputs import sample_clips

    assert sample_clips(10, None) == [list(range(10))]
    assert sample_clips(10, 50) == [list(range(10))]
    clips = sample_clips(125, 20)
    assert len(clips) == 4 and all(c == list(range(c[0], c[0] + 5)) for c in clips)
    assert clips[0][0] == 0 and clips[-1][-1] == 124
    with pytest.raises(UserError, match="--frames 1"):
        sample_clips(125, 1)


# --- dlib's judges on real faces -----------------------------------------------------------------

def test_box_from_landmarks_lands_where_dlibs_own_detector_puts_the_face(data_dir, mtcnn, analyzer):
    import dlib

    from engine.faces.detection import box_iou
    from engine.media import read_image

    hog = dlib.get_frontal_face_detector()
    ious = []
    for path in sorted((data_dir / "people" / "hader").glob("*.jpg"))[:12]:
        image = read_image(path)
        faces, rects = mtcnn.detect([image])[0], hog(image, 1)
        if len(faces) != 1 or len(rects) != 1:
            continue
        ours = analyzer.box_from_landmarks(faces[0].landmarks)
        to_array = lambda r: np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=float)  # noqa: E731
        ious.append(box_iou(to_array(ours), to_array(rects[0])))
    assert len(ious) >= 5 and np.median(ious) > 0.75, ious


def test_real_b_faces_are_retrieved_as_b_against_a(faceset_a, faceset_b, analyzer):
    """Carell photos (B) against talk2 faces (A): each B face sits nearer the mean of the other B faces
    than A's mean (a web photo set has a stray profile or two, hence 'near 1', not 1)."""
    from engine.faces.faceset import FaceSet

    sets = {name: FaceSet(path) for name, path in (("a", faceset_a), ("b", faceset_b))}
    emb = {name: analyzer.embed_crops(s.load_images(), s.coverage) for name, s in sets.items()}
    mean_a = emb["a"].mean(axis=0)
    b = emb["b"]
    others = (b.sum(axis=0) - b) / (len(b) - 1)  # leave-one-out means of B
    hits = np.array([M.identity_retrieval(q, m, mean_a)[0] for q, m in zip(b, others, strict=True)])
    assert hits.mean() >= 0.9, [e["file"] for e, hit in zip(sets["b"].entries, hits, strict=True) if not hit]
    assert M.identity_retrieval(emb["a"], b.mean(axis=0), mean_a).mean() <= 0.05
    assert M.leave_one_out_similarity(b).mean() > M.cosine_similarity(b, mean_a).mean() + 0.05


def test_verification_passes_unseen_real_b_faces_and_fails_a_and_a_blurred_b(faceset_a, faceset_b, analyzer):
    """The threshold calibrated on half of B's photos verifies most of the other half as B, no A face,
    and no B face blurred to a blob (which retrieval, nearer-B-than-A, can still count as B)."""
    import cv2

    from engine.faces.faceset import FaceSet

    sets = {name: FaceSet(path) for name, path in (("a", faceset_a), ("b", faceset_b))}
    images = {name: s.load_images() for name, s in sets.items()}
    emb = {name: analyzer.embed_crops(images[name], s.coverage) for name, s in sets.items()}
    calibrate, unseen = emb["b"][0::2], emb["b"][1::2]
    threshold = M.verification_threshold(calibrate)
    mean_b = calibrate.mean(axis=0)
    assert 0.2 < threshold < 0.6  # inside dlib's same-person distance between two single faces
    assert M.verified(unseen, mean_b, threshold).mean() >= 0.8
    assert M.verified(emb["a"], mean_b, threshold).mean() == 0
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 6) for im in images["b"][1::2]])
    assert M.verified(analyzer.embed_crops(blurred, sets["b"].coverage), mean_b, threshold).mean() <= 0.2


def test_an_identity_swap_keeps_landmarks_pose_sharpness_seams_and_flicker(frames, placed, analyzer, faceset_a,
                                                                         faceset_b):
    """'Swapping' with the identity function: NME 0, pose 0, sharpness 1, seam 1, flicker 1, still A."""
    from engine.evaluate.meter import FrameMeter
    from engine.faces.faceset import FaceSet

    emb = {}
    for name, path in (("a", faceset_a), ("b", faceset_b)):
        s = FaceSet(path)
        emb[name] = analyzer.embed_crops(s.load_images()[::4], s.coverage)
    meter = FrameMeter(analyzer, mean_target=emb["b"].mean(axis=0), mean_source=emb["a"].mean(axis=0),
                       threshold=M.verification_threshold(emb["b"]))
    records = [meter.add(i, f, f, faces, i == 0) for i, (f, faces) in enumerate(zip(frames, placed, strict=True))]
    assert all(r.face for r in records)
    assert max(r.nme for r in records) == 0.0
    assert max(r.pose[3] for r in records) == pytest.approx(0.0, abs=1e-6)
    assert all(r.sharpness == pytest.approx(1.0) and r.seam == pytest.approx(1.0) for r in records)
    ws, wd = np.array([r.warp_swapped for r in records]), np.array([r.warp_destination for r in records])
    assert math.isnan(ws[0]) and M.flicker_ratio(ws, wd) == pytest.approx(1.0)
    assert all(r.retrieved == 0.0 and r.verified == 0.0 for r in records)  # the frames still show A
    assert all(r.sim_source > r.sim_target for r in records)


# --- the command end to end ----------------------------------------------------------------------

def _subset(source, out, keep):
    """A face set holding only the entries of `source` for which keep(i) is true (same files, same sha1)."""
    from engine.faces.faceset import FaceSet

    src = FaceSet(source)
    dst = FaceSet(out, size=src.size, coverage=src.coverage, create=True)
    images = src.load_images()
    for i, entry in enumerate(src.entries):
        if keep(i):
            dst.add(dict(entry), images[i])
    dst.detector = src.detector
    dst.save()
    return out


@pytest.fixture(scope="module")
def held_out_model(faceset_a, faceset_b, tmp_path_factory):
    """A lite model trained 30 iterations on A minus its last 8 faces and B minus every 4th face."""
    from engine.faces.faceset import FaceSet
    from engine.train import TrainConfig, train

    root = tmp_path_factory.mktemp("evaluate_model")
    n_a = len(FaceSet(faceset_a))
    train_a = _subset(faceset_a, root / "train_a", lambda i: i < n_a - 8)
    train_b = _subset(faceset_b, root / "train_b", lambda i: i % 4 != 3)
    result = train(TrainConfig(faces_a=str(train_a), faces_b=str(train_b), model_dir=str(root / "lite"),
                               preset="lite", device="cpu", batch_size=4, iterations=30, save_every=30,
                               preview_every=0))
    assert result.status == "done"
    return root / "lite"


@pytest.fixture(scope="module")
def clip(data_dir, tmp_path_factory):
    """The first 10 frames of talk2.mp4 at half size (422 px), at its frame times: a short destination."""
    from engine.video_reader import probe_video, read_frames
    from engine.video_writer import TimedVideoWriter

    path = tmp_path_factory.mktemp("clip") / "talk2_10.mp4"
    source = probe_video(data_dir / "video" / "talk2.mp4")
    writer = TimedVideoWriter(path, 422, 422, time_base=source.times.time_base)
    for index, frame in read_frames(source):
        writer.write(cv2.resize(frame, (422, 422), interpolation=cv2.INTER_AREA), source.times.time_of(index))
        if index == 9:
            break
    writer.close(source.times.duration_of(9))
    return path


def test_evaluate_command_writes_report_with_every_figure(held_out_model, clip, faceset_a, faceset_b, tmp_path):
    from engine.cli import main as cli_main

    def args(out, *extra):
        return ["evaluate", "-m", str(held_out_model), "--video", str(clip), "--faces-a", str(faceset_a),
                "--faces-b", str(faceset_b), "--out", str(out), "--detector", "mtcnn", "--device", "cpu",
                "--reference-faces", "10", *extra]

    out = tmp_path / "report"
    assert cli_main(args(out, "--strip", "3")) == 0
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert report["frames"] == {"measured": 10, "with_face": 10, "sampled": False, "clips": [[0, 9]]}
    for key in ("id_retrieval", "id_verified", "id_similarity_target", "id_similarity_source", "id_similarity_target_real",
                "id_jitter", "landmark_nme", "pose_error_deg", "ssim_a", "psnr_a", "ssim_b", "psnr_b",
                "sharpness_ratio", "seam_score", "flicker", "seconds", "fps"):
        assert isinstance(s[key], float), key
    assert 0 <= s["id_retrieval"] <= 1 and 0 < s["ssim_a"] < 1 and s["psnr_b"] > 5
    assert s["fps"] == pytest.approx(10 / s["seconds"])
    # the hold-out: faces of the given sets that the model's training sets lack
    recon = report["reconstruction"]
    assert recon["a"]["held_out"] and recon["a"]["faces"] == 8
    assert recon["b"]["held_out"] and recon["b"]["faces"] == len(json.loads((faceset_b / "faces.json").read_text())["faces"]) // 4
    assert len(report["per_frame"]["index"]) == 10 and report["temporal"]["pairs"] == 9
    assert (out / "swapped.mp4").is_file()
    page = (out / "report.html").read_text()
    for name in ("identity.png", "geometry.png", "pose.png", "quality.png", "temporal.png", "reconstruction_a.png"):
        assert name in page and cv2.imread(str(out / name)) is not None, name
    pairs = sorted((out / "frames").glob("pair_*.png"))
    assert len(pairs) == 3 and all(n.name in page for n in pairs)

    sample = tmp_path / "sample"
    assert cli_main(args(sample, "--frames", "4")) == 0
    sampled = json.loads((sample / "report.json").read_text())
    assert sampled["frames"]["sampled"] and sampled["frames"]["measured"] == 4
    assert sampled["temporal"]["pairs"] == 3 and not (sample / "swapped.mp4").exists()


def test_held_out_faces_are_those_missing_from_the_recorded_training_set(faceset_a, tmp_path):
    from engine.evaluate.inputs import held_out
    from engine.faces.faceset import FaceSet

    full = FaceSet(faceset_a)
    picks, unseen, note = held_out(full, str(_subset(faceset_a, tmp_path / "train", lambda i: i % 3 != 0)))
    assert unseen and picks.tolist() == list(range(0, len(full), 3))
    picks, unseen, note = held_out(full, str(faceset_a))  # trained on all of it: nothing held out
    assert not unseen and len(picks) == len(full) and "training-set reconstructions" in note
    picks, unseen, note = held_out(full, str(tmp_path / "gone"))
    assert not unseen and "unknown or gone" in note


def test_evaluate_refuses_what_is_not_a_model_or_face_set(held_out_model, clip, tmp_path, capsys):
    from engine.cli import main as cli_main

    assert cli_main(["evaluate", "-m", str(tmp_path), "--video", str(clip), "--out", str(tmp_path / "r")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert cli_main(["evaluate", "-m", str(held_out_model), "--video", str(clip), "--faces-b", str(tmp_path),
                     "--out", str(tmp_path / "r")]) == 2
    assert "not a face set" in capsys.readouterr().err
