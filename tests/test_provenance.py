"""Provenance on real swaps: the record in PNG/JPEG/MP4 metadata, the face mark, and `verify`'s known answers.

Originals say "no mark"; swaps say "synthetic" with the model's id; a swapped clip re-encoded at
CRF 28 and half size (which strips the metadata) should still be found by its pixel mark (a known miss
since issue 24 made the mark invisible: xfail); `--no-watermark`
leaves the pixels unmarked while the metadata still says synthetic.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.provenance.metadata import read_record
from engine.provenance.record import model_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(data_dir, tmp_path_factory) -> Path:
    """The first 24 frames of talk2 with its audio: a short real video of A."""
    from engine.video_reader import probe_video, read_frames
    from engine.video_writer import TimedVideoWriter

    info = probe_video(data_dir / "video" / "talk2.mp4")
    out = tmp_path_factory.mktemp("clip") / "talk2-24.mp4"
    writer = TimedVideoWriter(out, info.width, info.height, time_base=info.times.time_base)
    for index, rgb in read_frames(info):
        if index >= 24:
            break
        writer.write(rgb, info.times.time_of(index))
    writer.close(info.times.duration_of(23))
    return out


@pytest.fixture(scope="module")
def model(faceset_a, faceset_b, tmp_path_factory, one_torch_thread) -> Path:
    """A lite model trained long enough (250 iterations) that its faces keep A's pose: the mark is made at
    the landmarks the swap used and read at those a detector finds on the swapped face, which a
    30-iteration blob moves too far (see engine/provenance/watermark.py)."""
    from conftest import train_lite

    return train_lite(faceset_a, faceset_b, tmp_path_factory.mktemp("provenance_model") / "lite", 250)


@pytest.fixture(scope="module")
def swapped(clip, model, tmp_path_factory, one_torch_thread) -> Path:
    out = tmp_path_factory.mktemp("swapped") / "talk2-swapped.mp4"
    assert cli_main(["swap", str(clip), "-m", str(model), "--out", str(out), "--detector", "mtcnn",
                     "--threads", "1"]) == 0
    return out


MARK_MISS = pytest.mark.xfail(strict=False, reason="known miss (issue 24, docs/benchmarks.md): the mark under the JND "
                              "carries a few tenths of a noise deviation a face and group, and a video is decoded "
                              "whole over its pairs of 8-frame blocks: 24 frames are a pair and a half, far short of "
                              "the 100+ frames it needs; the metadata says synthetic")


def _verify(capsys, *files: Path, extra=(), frames: int = 12) -> tuple[int, list[dict]]:
    code = cli_main(["verify", *map(str, files), "--json", "--frames", str(frames), *extra])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_swapped_video_says_synthetic_and_original_says_no_mark(swapped, clip, model, capsys):
    record = read_record(swapped)
    assert record is not None and record.synthetic and record.watermark
    assert record.model_id == model_id(model) and record.source_name == clip.name
    code, (fake, real) = _verify(capsys, swapped, clip)
    assert code == 1  # the original is not synthetic
    assert fake["synthetic"]
    assert not real["synthetic"] and not real["marked"] and real["faces_read"] >= 10
    assert "no mark found" in real["message"]


def test_unswapped_clip_reads_no_mark_by_the_code(data_dir, capsys):
    """The whole of talk2 (125 frames, 7 pairs of code blocks): `verify` reads every frame by the code at 64
    offsets and finds no mark in a clip that was never marked."""
    code, (real,) = _verify(capsys, data_dir / "video" / "talk2.mp4", frames=240)
    assert code == 1 and not real["marked"] and not real["synthetic"], real
    assert real["faces_read"] >= 120 and real["code_offset"] is not None, real
    assert real["confidence"] < 0.999, real


@MARK_MISS
def test_swapped_video_is_found_by_its_mark(swapped, capsys):
    record = read_record(swapped)
    code, (fake,) = _verify(capsys, swapped)
    assert fake["marked"] and fake["bit_accuracy"] >= 0.95 and fake["confidence"] > 0.999
    assert fake["model_tag"] == record.model_id[:4]
    assert code == 0 and "synthetic, made by faceswap-studio" in fake["message"]


@MARK_MISS
def test_reencoded_half_size_swap_is_still_found_by_its_mark(swapped, tmp_path, capsys):
    """H.264 CRF 28 at half size through PyAV: the tags are gone, the mark stays."""
    out = tmp_path / "reupload.mp4"
    with av.open(str(swapped)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=25, options={"crf": "28"})
        first = True
        for frame in src.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            small = cv2.resize(rgb, (rgb.shape[1] // 2 // 2 * 2, rgb.shape[0] // 2 // 2 * 2),
                               interpolation=cv2.INTER_AREA)
            if first:
                stream.width, stream.height, stream.pix_fmt, first = small.shape[1], small.shape[0], "yuv420p", False
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")))
        dst.mux(stream.encode(None))
    assert read_record(out) is None
    code, (verdict,) = _verify(capsys, out)
    assert code == 0 and verdict["marked"] and verdict["model_tag"] == read_record(swapped).model_id[:4]
    assert "no provenance metadata" in verdict["message"]


def test_photo_swaps_carry_the_record_in_png_and_jpeg(model, data_dir, tmp_path, capsys, one_torch_thread):
    photo = data_dir / "photos" / "obama-480p.jpg"
    for suffix in (".png", ".jpg"):
        out = tmp_path / f"swapped{suffix}"
        assert cli_main(["swap", str(photo), "-m", str(model), "--out", str(out), "--detector", "mtcnn"]) == 0
        record = read_record(out)
        assert record is not None and record.synthetic and record.source_name == photo.name
        code, (verdict,) = _verify(capsys, out)
        assert code == 0 and verdict["synthetic"], verdict
    code, (original,) = _verify(capsys, photo)
    assert code == 1 and not original["synthetic"]


def test_no_watermark_leaves_pixels_unmarked_but_metadata_says_synthetic(model, data_dir, tmp_path, capsys,
                                                                          one_torch_thread):
    photo = data_dir / "photos" / "obama-480p.jpg"
    marked, plain = tmp_path / "marked.png", tmp_path / "plain.png"
    for out, extra in ((marked, []), (plain, ["--no-watermark"])):
        assert cli_main(["swap", str(photo), "-m", str(model), "--out", str(out), "--detector", "mtcnn",
                         *extra]) == 0
    assert read_record(plain).watermark is False
    code, (verdict,) = _verify(capsys, plain)
    assert code == 0 and verdict["synthetic"] and not verdict["marked"]
    assert "watermark turned off" in verdict["message"]
    a, b = (cv2.imread(str(p)).astype(int) for p in (marked, plain))
    changed = np.abs(a - b).max(axis=2) > 0
    assert 0 < changed.mean() < 0.2  # the mark touches the face, not the frame


def test_verify_says_why_it_cannot_read_a_file(tmp_path, capsys):
    bogus = tmp_path / "not-a-video.mp4"
    bogus.write_bytes(b"not a video at all")
    code, (verdict,) = _verify(capsys, bogus)
    assert code == 1 and verdict["error"] and "unreadable" in verdict["message"]


def test_metadata_round_trip_keeps_foreign_files_out(tmp_path):
    from engine.provenance.metadata import image_bytes
    from engine.provenance.record import Provenance

    record = Provenance(model_id="ab" * 32, source_name="x.jpg")
    rgb = np.zeros((8, 8, 3), np.uint8)
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        path = tmp_path / f"r{suffix}"
        path.write_bytes(image_bytes(rgb, suffix, record))
        assert read_record(path) == record, suffix
    other = tmp_path / "other.png"
    other.write_bytes(image_bytes(rgb, ".png", None))
    assert read_record(other) is None
    assert Provenance.from_json(json.dumps({"studio": "someone-else", "model_id": "x"})) is None
