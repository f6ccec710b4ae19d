"""`export-dataset` on the shared clips, read back the way a detector's data loader would: the manifest's
files decode with their frame counts, labels are balanced, masks sit where the swap changed pixels, no
identity crosses splits, fakes say they are synthetic, crops match their boxes; and the error paths
(faceless clip skipped, not a model folder, full disk, Stop) leave nothing half-written."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import shutil
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.errors import UserError
from engine.export.options import ExportOptions, ModelInput, VideoInput
from engine.export.split import Clip, Target, plan_split
from engine.progress import StopFlag
from engine.provenance.metadata import read_record
from engine.provenance.record import model_id
from engine.video_reader import read_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FRAMES = 10


@pytest.fixture(scope="module")
def detector():
    from engine.faces.mtcnn import MTCNNDetector
    from engine.swap.settings import DETECT_SIZE

    return MTCNNDetector(max_side=DETECT_SIZE)


@pytest.fixture(scope="module")
def second_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model's weights under another identity's name: a second target identity to split."""
    folder = tmp_path_factory.mktemp("models") / "standin"
    shutil.copytree(tiny_model, folder)
    return folder


@pytest.fixture(scope="module")
def noise_clip(tmp_path_factory) -> Path:
    from engine.video_writer import TimedVideoWriter

    path = tmp_path_factory.mktemp("noise") / "noise.mp4"
    rng = np.random.default_rng(0)
    writer = TimedVideoWriter(path, 96, 96)
    for i in range(6):
        writer.write(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), i / 25)
    writer.close(1 / 25)
    return path


@pytest.fixture(scope="module")
def exported(tiny_model, second_model, noise_clip, data_dir, tmp_path_factory):
    """Three shared clips and a clip of noise, two models, c0 and c23, crops; (rc, stderr, folder)."""
    out = tmp_path_factory.mktemp("export") / "dataset"
    videos = [str(data_dir / "video" / f"talk{i}.mp4") for i in (1, 2, 3)] + [str(noise_clip)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli_main(["export-dataset", "--videos", *videos, "-m", str(tiny_model), "-m", str(second_model),
                       "--out", str(out), "--compression", "c0,c23", "--crops", "--max-frames", str(FRAMES),
                       "--detector", "mtcnn", "--device", "cpu", "--threads", "1"])
    return rc, err.getvalue(), out


def manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def frames_of(path: Path) -> list[np.ndarray]:
    return [rgb for _, rgb in read_frames(path)]


def test_faceless_clip_is_skipped_with_a_message_and_the_rest_exported(exported, noise_clip):
    rc, err, out = exported
    assert rc == 1, err
    assert f"skipped {noise_clip}: no face found" in err
    assert "val: empty" in err  # two target identities for three splits: said, not hidden
    rows = manifest(out)
    assert {r["video_id"] for r in rows} == {"talk1", "talk2", "talk3"}
    assert not list(out.parent.glob(".*partial*"))  # the temporary folder became the export


def test_every_listed_file_decodes_with_its_frame_count(exported):
    out = exported[2]
    rows = manifest(out)
    assert {r["compression"] for r in rows} == {"c0", "c23"}
    for row in rows:
        path = out / row["file"]
        assert path.is_file(), row
        assert len(frames_of(path)) == int(row["frames"]) == FRAMES, row
        if row["label"] == "fake":
            assert row["file"] == (f"manipulated_sequences/{row['method']}/{row['compression']}/videos/"
                                   f"{row['video_id']}_{row['target_identity']}.mp4")
            assert row["method"] == "FaceSwapStudio-lite" and row["preset"] == "lite"
            assert (out / row["original"]).is_file()
        else:
            assert row["file"] == f"original_sequences/youtube/{row['compression']}/videos/{row['video_id']}.mp4"
            assert row["model_id"] == row["mask_dir"] == ""


def test_labels_are_balanced_per_split_and_no_identity_crosses_splits(exported):
    rows = manifest(exported[2])
    frames = defaultdict(int)
    for r in rows:
        frames[r["split"], r["compression"], r["label"]] += int(r["frames"])
    for split, comp, _ in list(frames):
        assert frames[split, comp, "real"] == frames[split, comp, "fake"] > 0
    splits_of = defaultdict(set)
    for r in rows:
        splits_of["person:" + r["person"]].add(r["split"])
        if r["label"] == "fake":
            splits_of["identity:" + r["target_identity"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values()), dict(splits_of)
    assert {r["split"] for r in rows} == {"train", "test"}  # two target identities: two splits can hold fakes


def test_masks_mark_the_swapped_pixels(exported):
    out = exported[2]
    fakes = [r for r in manifest(out) if r["label"] == "fake" and r["compression"] == "c0"]
    assert fakes
    for row in fakes:
        fake, real = frames_of(out / row["file"]), frames_of(out / row["original"])
        masks = sorted((out / row["mask_dir"]).glob("*.png"))
        assert [p.name for p in masks] == [f"{i:04d}.png" for i in range(int(row["frames"]))]
        inside, outside = [], []
        for a, b, path in zip(fake, real, masks, strict=True):
            mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert mask.shape == a.shape[:2] and set(np.unique(mask)) <= {0, 255}
            assert mask.any()  # a face in every frame of these clips
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2)
            inside.append(diff[mask > 0].mean())
            outside.append(diff[mask == 0].mean())
        assert np.mean(outside) < 0.5, row  # lossless: nothing outside the mask changed
        assert np.mean(inside) > 20 * max(np.mean(outside), 0.1), (row, np.mean(inside), np.mean(outside))


def test_fakes_say_they_are_synthetic_and_originals_do_not(exported, tiny_model):
    rows = manifest(exported[2])
    for row in rows:
        record = read_record(exported[2] / row["file"])
        if row["label"] == "real":
            assert record is None
        else:
            assert record is not None and record.synthetic and record.watermark
            assert record.model_id == row["model_id"] == model_id(tiny_model)
            assert record.source_name == row["source_video"]


def test_crops_match_their_boxes_and_pair_real_with_fake(exported):
    out = exported[2]
    with open(out / "crops.csv", newline="") as f:
        crops = list(csv.DictReader(f))
    videos = {r["file"]: r for r in manifest(out)}
    counts = defaultdict(int)
    for c in crops[:: max(1, len(crops) // 40)]:  # a sample: every file is PNG of its box's size
        x1, y1, x2, y2 = (int(c[k]) for k in ("x1", "y1", "x2", "y2"))
        img = cv2.imread(str(out / c["file"]))
        assert img.shape[:2] == (y2 - y1, x2 - x1), c
        assert c["label"] == videos[c["video"]]["label"] and c["split"] == videos[c["video"]]["split"]
    for c in crops:
        counts[c["split"], c["compression"], c["label"]] += 1
    assert counts and all(counts[s, comp, "real"] == counts[s, comp, "fake"] == n
                          for (s, comp, _), n in counts.items())
    boxes = {(c["video"], c["frame"]): c for c in crops}
    for c in crops:  # the fake's crop and its original's share the box
        if c["label"] == "fake":
            twin = boxes[videos[c["video"]]["original"], c["frame"]]
            assert [twin[k] for k in ("x1", "y1", "x2", "y2")] == [c[k] for k in ("x1", "y1", "x2", "y2")]


def test_the_export_describes_itself(exported):
    out = exported[2]
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"]["train"]["real_frames"] == info["splits"]["train"]["fake_frames"]
    assert info["compressions"] == ["c0", "c23"] and info["crops"]["kind"] == "box"
    assert any("noise.mp4" in s for s in info["skipped"])
    readme = (out / "README.txt").read_text()
    assert "DEEPFAKE DETECTORS ONLY" in readme and "synthetic" in readme
    rows = json.loads((out / "manifest.json").read_text())["rows"]
    assert len(rows) == len(manifest(out))


def test_not_a_model_folder_is_refused_before_any_work(tmp_path, data_dir):
    (tmp_path / "notes").mkdir()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli_main(["export-dataset", "--videos", str(data_dir / "video" / "talk1.mp4"),
                       "-m", str(tmp_path / "notes"), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert f"--model {tmp_path / 'notes'} is not a model folder" in err.getvalue()
    assert not (tmp_path / "out").exists()


def _options(tiny_model, data_dir, out, **changes) -> ExportOptions:
    changes.setdefault("max_frames", 2)
    return ExportOptions(videos=[VideoInput(data_dir / "video" / "talk3.mp4")], models=[ModelInput(tiny_model)],
                         out=out, device="cpu", **changes)


def test_a_full_disk_leaves_nothing_behind(tiny_model, data_dir, tmp_path, detector, monkeypatch):
    from engine.export import run

    def full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run, "write_png", full)
    with pytest.raises(UserError, match="disk is full"):
        run.export_dataset(_options(tiny_model, data_dir, tmp_path / "out"), detector=detector)
    assert list(tmp_path.iterdir()) == []


def test_stop_leaves_nothing_behind_and_progress_was_reported(tiny_model, data_dir, tmp_path, detector):
    from engine.export.run import export_dataset

    stop, events = StopFlag(), []

    def listen(event):
        events.append(event)
        stop.set()

    report = export_dataset(_options(tiny_model, data_dir, tmp_path / "out", max_frames=12), [listen], stop,
                            detector=detector)
    assert report.status == "stopped" and report.out is None
    assert events and events[0].job == "export" and events[0].total == 12 and events[0].step == 8
    assert list(tmp_path.iterdir()) == []


def test_split_plans_keep_identities_apart():
    clips = [Clip(f"c{i}", f"c{i}", 10 + i) for i in range(6)]
    one = plan_split(clips, [Target("m", "m")], (0.7, 0.15, 0.15))
    assert set(one.split_of.values()) == {"train"} and len(one.notes) == 2  # one identity put in: one split
    three = plan_split(clips, [Target(n, n) for n in "xyz"], (0.7, 0.15, 0.15), seed=3)
    assert set(three.split_of.values()) == {"train", "val", "test"} and not three.notes
    for clip, model in three.fakes:
        assert model in three.models_of[three.split_of[clip]]
    assert len(three.fakes) == len(clips)  # balanced: one fake per original
    assert three.split_of == plan_split(clips, [Target(n, n) for n in "xyz"], (0.7, 0.15, 0.15), seed=3).split_of
    loose = plan_split(clips, [Target(n, n) for n in "xyz"], (0.7, 0.15, 0.15), balance=False)
    assert len(loose.fakes) == len(clips)  # each split has one model of its own
    by_source = plan_split(clips, [Target("m", "m")], (0.7, 0.15, 0.15), by="source", balance=False)
    assert set(by_source.split_of.values()) == {"train", "val", "test"} and "several splits" in by_source.notes[0]
    # a model that puts in a clip's own person lives with that person
    same = plan_split(clips, [Target("m", "c2"), Target("n", "n")], (0.5, 0, 0.5))
    assert same.models_of[same.split_of["c2"]] == ["m"]
    # clips of one person stay together
    twins = plan_split([Clip("a", "p", 5), Clip("b", "p", 5), Clip("c", "q", 5)], [Target("m", "m")],
                       (0.5, 0.25, 0.25), by="source")
    assert twins.split_of["a"] == twins.split_of["b"]


def test_web_export_job_offers_one_zip(tiny_model, data_dir, tmp_path):
    """The Export tab's job (no browser): the project's model and an uploaded clip -> one zip, nothing else."""
    from webapp.jobs import DONE, JobManager
    from webapp.projects import Workspace
    from webapp.tabs.export import pick_videos
    from webapp.tasks import export_task, exports, exports_dir

    proj = Workspace(tmp_path / "ws").create(None, "carell")
    shutil.copytree(tiny_model, proj.model_dir, dirs_exist_ok=True)
    with pytest.raises(UserError, match="no video 'uploads/x.mp4'"):
        pick_videos(proj, ["uploads/x.mp4"], [])
    videos = pick_videos(proj, [], [str(data_dir / "video" / "talk3.mp4")])
    settings = ExportOptions(videos=[], models=[], out=Path(), max_frames=3, device="cpu", detector="mtcnn")
    jobs = JobManager()
    try:
        job = jobs.submit(proj.owner, proj.name, "export", export_task(proj, videos, settings))
        deadline = time.monotonic() + 120
        while job.active and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        jobs.shutdown(timeout=10)
    assert job.state == DONE, job.message
    assert exports(proj) == [Path(job.result["zip"])] and list(exports_dir(proj).iterdir()) == exports(proj)
    root = Path(job.result["zip"]).stem
    with zipfile.ZipFile(job.result["zip"]) as zf:
        names = set(zf.namelist())
    assert {f"{root}/manifest.csv", f"{root}/README.txt",
            f"{root}/manipulated_sequences/FaceSwapStudio-lite/c23/videos/talk3_carell.mp4",
            f"{root}/original_sequences/youtube/c23/videos/talk3.mp4"} <= names
    assert job.result["real"] == job.result["fake"] == 1
