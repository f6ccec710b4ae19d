"""`python -m engine extract` on real photos, videos and zips, and on every kind of bad input."""

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.faces.extract import ExtractOptions, extract
from engine.faces.faceset import FaceSet
from engine.media import ffmpeg_exe, read_image


def _faces(out: Path) -> list[dict]:
    return json.loads((out / "faces.json").read_text())["faces"]


def test_video_gives_one_face_per_kept_frame(data_dir, mtcnn, tmp_path):
    out = tmp_path / "set"
    report = extract([data_dir / "video" / "talk1.mp4"], out, ExtractOptions(every=5), detector=mtcnn)
    faces = _faces(out)
    assert report.ok and len(faces) == 27  # frames 0, 5, ..., 130 of 135
    assert [f["frame"] for f in faces] == list(range(0, 135, 5))
    entry = faces[0]
    assert set(entry) >= {"file", "source", "frame", "box", "score", "landmarks", "matrix", "blur"}
    assert np.array(entry["matrix"]).shape == (2, 3) and np.array(entry["landmarks"]).shape == (5, 2)
    crop = read_image(out / entry["file"])
    assert crop.shape == (256, 256, 3)


def test_select_all_and_largest(data_dir, mtcnn, tmp_path):
    photo = data_dir / "photos" / "two_people.jpg"
    extract([photo], tmp_path / "all", ExtractOptions(select="all"), detector=mtcnn)
    extract([photo], tmp_path / "largest", ExtractOptions(select="largest"), detector=mtcnn)
    both, one = _faces(tmp_path / "all"), _faces(tmp_path / "largest")
    assert len(both) == 2 and len(one) == 1

    def area(f):
        return (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])

    assert area(one[0]) == pytest.approx(max(area(f) for f in both))


def test_a_stop_requested_during_the_run_ends_it_after_the_current_batch(data_dir, mtcnn, tmp_path):
    """Photos go through the detector in batches (--batch-size): a stop ends the run after the batch
    in hand, every photo of which is complete and counts as done."""
    from engine.progress import StopFlag

    photos = sorted((data_dir / "people" / "carell").glob("*.jpg"))[:7]
    stop = StopFlag()  # unset when the run starts, as a web app job's flag is
    report = extract(photos, tmp_path / "set", ExtractOptions(batch_size=3),
                     listeners=[lambda event: event.step and stop.set()], stop=stop, detector=mtcnn)
    assert report.inputs_read == 3 and len(_faces(tmp_path / "set")) == 3
    rerun = extract(photos, tmp_path / "set", detector=mtcnn)  # what was kept counts as done
    assert rerun.inputs_already_done == 3 and rerun.inputs_read == 4


def test_rerun_adds_new_inputs_and_skips_done_ones(data_dir, mtcnn, tmp_path):
    out = tmp_path / "set"
    photos = data_dir / "photos"
    first = extract([photos / "biden.jpg"], out, detector=mtcnn)
    assert first.inputs_read == 1 and first.faces_kept == 1
    second = extract([photos / "biden.jpg", photos / "obama-480p.jpg"], out, detector=mtcnn)
    assert second.inputs_already_done == 1 and second.inputs_read == 1
    assert len(FaceSet(out)) == 2
    # the same face from a copy of the file is an exact duplicate and is dropped
    shutil.copy(photos / "biden.jpg", tmp_path / "biden_copy.jpg")
    third = extract([tmp_path / "biden_copy.jpg"], out, detector=mtcnn)
    assert third.filtered["exact duplicates"] == 1 and len(FaceSet(out)) == 2


def test_filters(data_dir, mtcnn, tmp_path):
    photo = data_dir / "photos" / "friends.jpg"
    loose = extract([photo], tmp_path / "a", ExtractOptions(select="all"), detector=mtcnn)
    strict = extract([photo], tmp_path / "b", ExtractOptions(select="all", min_face=10_000), detector=mtcnn)
    assert loose.faces_kept >= 5 and strict.faces_kept == 0
    assert strict.filtered["smaller than --min-face"] == loose.faces_kept
    assert "no face kept" in strict.skipped[0].reason
    blurs = [f["blur"] for f in _faces(tmp_path / "a")]
    sharp = extract([photo], tmp_path / "c", ExtractOptions(select="all", min_blur=float(np.median(blurs))),
                    detector=mtcnn)
    assert 0 < sharp.faces_kept < loose.faces_kept


def test_zip_input(data_dir, mtcnn, tmp_path):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(data_dir / "photos" / "biden.jpg", "people/biden.jpg")
        zf.write(data_dir / "video" / "talk3.mp4", "clips/talk3.mp4")
        zf.writestr("notes.txt", "hello")
    out = tmp_path / "set"
    report = extract([archive], out, ExtractOptions(every=25), detector=mtcnn)
    sources = {f["source"] for f in _faces(out)}
    assert sources == {f"{archive}::people/biden.jpg", f"{archive}::clips/talk3.mp4"}
    assert len(_faces(out)) == 1 + 5
    assert [s.source for s in report.skipped] == [f"{archive}::notes.txt"]
    assert not (out / ".tmp").exists()


@pytest.fixture()
def bad_inputs(data_dir, tmp_path):
    """One file of each kind of bad input, made from real media."""
    bad = tmp_path / "bad"
    bad.mkdir()
    jpg = (data_dir / "photos" / "biden.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (bad / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (bad / "notes.txt").write_text("not media")
    import cv2
    from skimage import data as skdata

    cv2.imwrite(str(bad / "no_face.png"), cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR))
    video = (data_dir / "video" / "talk3.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(video[: len(video) // 4])
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(data_dir / "video" / "talk3.mp4"), "-vn",
                    "-c:a", "copy", str(bad / "audio_only.mp4")], check=True)
    with zipfile.ZipFile(bad / "evil.zip", "w") as zf:
        zf.writestr("../../escaped.jpg", jpg)
        zf.writestr("/abs/escaped.jpg", jpg)
    with zipfile.ZipFile(bad / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge.png", b"\x00" * (64 << 20))
    return bad


def test_bad_inputs_each_get_a_reason_and_the_batch_goes_on(bad_inputs, data_dir, tmp_path, capsys):
    out = tmp_path / "out" / "set"
    good = data_dir / "photos" / "biden.jpg"
    before = set(tmp_path.rglob("*"))
    code = main(["extract", str(bad_inputs), str(good), "--out", str(out), "--detector", "mtcnn"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(_faces(out)) == 1  # the good photo still made it
    expected = {
        "truncated.jpg": "not a readable image",
        "garbage.png": "not a readable image",
        "notes.txt": "not an image, video or zip",
        "no_face.png": "no face found",
        "truncated.mp4": "ffmpeg cannot read",
        "audio_only.mp4": "video stream",
        "evil.zip::../../escaped.jpg": "path traversal",
        "evil.zip::/abs/escaped.jpg": "path traversal",
        "bomb.zip::huge.png": "zip bomb",
    }
    lines = [ln for ln in err.splitlines() if ln.startswith("skipped ")]
    for name, reason in expected.items():
        hits = [ln for ln in lines if f"{name}:" in ln]
        assert len(hits) == 1, (name, lines)
        assert reason in hits[0], hits[0]
    assert len(lines) == len(expected)
    # nothing written anywhere but the face set
    created = set(tmp_path.rglob("*")) - before
    assert all(out in p.parents or p == out or p == out.parent for p in created), created
    assert not list(tmp_path.rglob("escaped*"))


def test_clean_run_exits_zero_and_no_inputs_is_clear(data_dir, tmp_path, capsys):
    assert main(["extract", str(data_dir / "photos" / "biden.jpg"), "--out", str(tmp_path / "s"),
                 "--detector", "mtcnn"]) == 0
    assert "1 inputs read, 1 faces kept" in capsys.readouterr().out
    assert main(["extract", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "t")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_faceset_remove_and_load(data_dir, mtcnn, tmp_path):
    out = tmp_path / "set"
    extract([data_dir / "photos" / "two_people.jpg"], out, ExtractOptions(select="all"), detector=mtcnn)
    fs = FaceSet(out)
    images = fs.load_images()
    assert images.shape == (2, 256, 256, 3) and images.dtype == np.uint8
    assert fs.remove([fs.entries[0]["file"]]) == 1
    assert len(FaceSet(out)) == 1 and len(list(out.glob("*.png"))) == 1


def test_tight_crops_are_padded_before_detection_and_keep_their_person(data_dir, mtcnn, tmp_path):
    """LFW's 90 px crops: the face fills the frame. Padded first, MTCNN finds each face with its eyes
    where they are; landmarks are recorded in the photo's own pixels and the folder names the person."""
    people = data_dir / "prior" / "lfw"
    if not people.is_dir():
        pytest.skip("no prior/ data")
    photos = sorted((people / "Aaron_Peirsol").glob("*.jpg"))[:3] + sorted((people / "AJ_Cook").glob("*.jpg"))[:1]
    report = extract(photos, tmp_path / "set", ExtractOptions(pad=0.5, person_from_folder=True, size=128),
                     detector=mtcnn)
    assert report.faces_kept == 4, report
    faces = _faces(tmp_path / "set")
    assert sorted(f["person"] for f in faces) == ["AJ_Cook", "Aaron_Peirsol", "Aaron_Peirsol", "Aaron_Peirsol"]
    for face in faces:
        eyes = np.asarray(face["landmarks"])[:2]
        assert (eyes > 10).all() and (eyes < 80).all(), eyes  # inside the 90 px photo, not the padding
        assert 25 < eyes[1, 0] - eyes[0, 0] < 55  # an adult's eye distance in a 90 px tight crop
