"""Hostile inputs (issue 15, item 3): model folders, videos, archives and face sets built to exhaust the
server are refused early, with a message naming the file and the limit, and good inputs still work.

`pytest -k "hostile or quota"` runs these.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import video_reader
from engine.errors import UserError
from engine.models import build_model, load_model, save_model
from engine.models import store as model_store


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rewrite_config(folder: Path, **model_changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(model_changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    folder = tmp_path / "tiny model"
    save_model(folder, build_model("lite"), {"iteration": 3})
    return folder


def test_hostile_model_config_with_2000_identities_is_refused_without_allocating(tiny_model):
    _rewrite_config(tiny_model, preset="original", identities=[f"id{i}" for i in range(2000)])
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for 2000 identities, over the "
                                        r"limit of 8") as caught:
        load_model(tiny_model)
    assert time.perf_counter() - start < 2.0
    assert _max_rss_mb() - rss < 200
    assert "tiny model" in str(caught.value)


def test_hostile_model_config_over_the_parameter_cap_is_refused_from_shapes_alone(tiny_model):
    # a handful of identities but enormous layers: only the meta-device build can tell
    _rewrite_config(tiny_model, preset="intracoder", resolution=256, width=2048, encoder_dim=4096)
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for \d+ M parameters, over the "
                                        r"limit of 600 M"):
        load_model(tiny_model)
    assert time.perf_counter() - start < 5.0
    assert _max_rss_mb() - rss < 200


def test_hostile_model_config_over_the_resolution_cap_is_refused(tiny_model):
    _rewrite_config(tiny_model, preset="intracoder", resolution=4096)
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for 4096 px faces, over the limit"):
        load_model(tiny_model)


def test_hostile_model_weights_whose_shapes_differ_are_refused_from_the_header(tiny_model, monkeypatch):
    _rewrite_config(tiny_model, preset="intracoder")  # lite's weights under intracoder's architecture
    built = []
    real_build = model_store.build_model
    monkeypatch.setattr(model_store, "build_model",
                        lambda **kw: built.append(torch.empty(0).device) or real_build(**kw))
    with pytest.raises(UserError, match=r"model\.safetensors does not match the architecture in config\.json "
                                        r"\(\d+ tensors missing"):
        load_model(tiny_model)
    assert built == [torch.device("meta")]  # never built for real

    smaller = build_model("lite", learn_mask=True)  # same names, one decoder layer of another shape
    save_model(tiny_model, smaller, {})
    _rewrite_config(tiny_model, learn_mask=False)
    with pytest.raises(UserError, match=r"of other shapes, e\.g\. decoders\..*in the file"):
        load_model(tiny_model)


def test_hostile_model_checks_let_a_real_tiny_model_load(tiny_model):
    model, meta = load_model(tiny_model)
    assert meta == {"iteration": 3} and model.config["preset"] == "lite"
    assert model_store.check_model(tiny_model)["model"] == model.config


def test_hostile_model_zip_is_refused_by_the_web_import_and_the_project_model_is_kept(tmp_path):
    import zipfile

    from engine.models.folder import summary
    from webapp.projects import Workspace, import_model

    project = Workspace(tmp_path / "ws").create("ann", "p")
    save_model(project.model_dir, build_model("lite"), {"iteration": 3})
    hostile = tmp_path / "hostile"
    save_model(hostile, build_model("lite"), {"iteration": 9})
    _rewrite_config(hostile, preset="original", identities=[f"id{i}" for i in range(2000)])
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("config.json", "model.safetensors"):
            zf.write(hostile / name, f"model/{name}")
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for 2000 identities, over the limit"):
        import_model(project, archive)
    assert time.perf_counter() - start < 5.0 and _max_rss_mb() - rss < 200
    assert summary(project.model_dir)["iteration"] == 3


# ---------------------------------------------------------------- videos


def _clip(path: Path, side: int, frames: int, codec: str = "mpeg4") -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
        for _ in range(frames):
            out.mux(stream.encode(black))
        out.mux(stream.encode())
    return path


class _CountingDetector:
    """Finds no face; counts the frames it is shown."""

    name = "counting"

    def __init__(self) -> None:
        self.frames = 0

    def detect(self, images):
        self.frames += len(images)
        return [[] for _ in images]


def test_hostile_video_with_huge_frames_is_refused_from_its_header(tmp_path):
    huge = _clip(tmp_path / "huge.mp4", 3200, 2)  # 10.2 MP a frame, a few KB of file
    rss = _max_rss_mb()
    for read in (video_reader.probe_video, lambda p: next(video_reader.read_frames(p))):
        with pytest.raises(UserError, match=r"huge\.mp4: its frames are 3200x3200 \(10\.2 MP\), over the limit "
                                            r"of 9\.4 MP for videos"):
            read(huge)
    assert _max_rss_mb() - rss < 200


def test_hostile_video_over_the_pixel_limit_is_one_skipped_line_and_the_batch_goes_on(tmp_path, monkeypatch):
    from engine.faces.extract import extract

    monkeypatch.setattr(video_reader, "MAX_VIDEO_PIXELS", 64 * 64)  # settable, read at each call
    big, small = _clip(tmp_path / "big.mp4", 96, 3), _clip(tmp_path / "small.mp4", 64, 3)
    detector = _CountingDetector()
    report = extract([big, small], tmp_path / "faces", detector=detector)
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert reasons["big.mp4"].startswith("its frames are 96x96 (0.0 MP), over the limit")
    assert reasons["small.mp4"].startswith("no face found")
    assert report.inputs_read == 1 and detector.frames == 3


def test_hostile_video_over_the_frame_limit_is_refused(tmp_path, monkeypatch):
    clip = _clip(tmp_path / "long.mp4", 64, 12)
    assert video_reader.probe_video(clip).frames == 12  # a normal clip passes
    assert len(list(video_reader.read_frames(clip))) == 12
    monkeypatch.setattr(video_reader, "MAX_VIDEO_FRAMES", 5)
    with pytest.raises(UserError, match=r"long\.mp4: its header lists 12 frames, over the limit of 5 frames"):
        video_reader.probe_video(clip)
    with pytest.raises(UserError, match=r"long\.mp4: it holds more than 5 frames, over the limit of 5"):
        list(video_reader.read_frames(clip))


def _song(path: Path, cover: bool = False) -> Path:
    """An AAC-only .mp4, with `cover` an album-art picture too (a video stream that is no video)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        if cover:
            art = out.add_stream("mjpeg", rate=1)
            art.width = art.height = 64
            art.pix_fmt = "yuvj420p"
            art.disposition = av.stream.Disposition.attached_pic
            picture = art.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24"))
            picture += art.encode()
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if cover:
            out.mux(picture)
    return path


def test_hostile_audio_only_video_says_no_video_stream(tmp_path):
    from engine.faces.extract import extract

    sound = _song(tmp_path / "sound.mp4")
    with pytest.raises(UserError, match=r"sound\.mp4: no video stream in it \(it holds only audio\)"):
        video_reader.probe_video(sound)
    song = _song(tmp_path / "song.mp4", cover=True)  # was taken for a 1-frame video at 90 000 fps
    for read in (video_reader.probe_video, lambda p: next(video_reader.read_frames(p))):
        with pytest.raises(UserError, match=r"song\.mp4: no video stream in it \(it holds only audio and a "
                                            r"cover picture\)"):
            read(song)
    report = extract([sound, _clip(tmp_path / "ok.mp4", 64, 2)], tmp_path / "faces", detector=_CountingDetector())
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert reasons["sound.mp4"].startswith("no video stream in it")
    assert report.inputs_read == 1


# ---------------------------------------------------------------- face sets


def test_hostile_face_set_over_the_training_cap_is_sampled_evenly_with_a_warning(tmp_path, monkeypatch, caplog):
    from engine.faces.faceset import FaceSet
    from engine.train import data

    faceset = FaceSet(tmp_path / "A", size=32, create=True)
    for i in range(25):
        faceset.add({"file": f"f{i}.png", "source": "synthetic", "frame": i}, np.full((32, 32, 3), i, np.uint8))
    faceset.save()
    assert len(data.load_pool(tmp_path / "A", torch.device("cpu"))) == 25  # under the cap: every face
    monkeypatch.setattr(data, "MAX_TRAINING_FACES", 10)
    with caplog.at_level("WARNING", logger="engine.train.data"):
        pool = data.load_pool(tmp_path / "A", torch.device("cpu"))
    assert "holds 25 faces of 32 px, over the 10 one training run keeps in memory" in caplog.text
    values = pool.faces[:, 0, 0, 0].tolist()
    assert len(values) == 10 and values[0] == 0 and values[-1] == 24 and values == sorted(set(values))
    ranks = [data.load_pool(tmp_path / "A", torch.device("cpu"), rank, 2).faces[:, 0, 0, 0].tolist()
             for rank in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == values  # ranks split the sample, disjoint
    assert data.training_limit(512) == 2  # bigger faces: fewer of them (a quarter at twice the side)


# ---------------------------------------------------------------- archives


def _png(value: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((48, 48, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _hostile_zip(path: Path, good: dict[str, bytes], empty: bool = True, encrypted: bool = True,
                 method: bool = True) -> Path:
    """`good` members plus (as each flag says) one with an empty name, one marked encrypted and one
    compressed with a method zipfile lacks; the bad ones are marked in the central directory, which
    is what readers list."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        for flag, name in ((empty, "empty.png"), (encrypted, "locked.png"), (method, "deflate64.png")):
            if flag:
                zf.writestr(name, _png(9))
                info = zf.filelist[-1]
                if name == "empty.png":
                    info.filename = ""
                elif name == "locked.png":
                    info.flag_bits |= 0x1
                else:
                    info.compress_type = 9  # deflate64
    return path


def test_hostile_zip_members_are_each_one_skipped_line_and_the_good_ones_are_extracted(tmp_path):
    from engine.faces.extract import extract
    from engine.faces.inputs import collect

    archive = _hostile_zip(tmp_path / "photos.zip", {"one.png": _png(50), "sub/two.png": _png(90)})
    items, skipped = collect([archive])
    assert [item.member for item in items] == ["one.png", "sub/two.png"]
    reasons = {s.source.split("::")[1]: s.reason for s in skipped}
    assert reasons[""].startswith("member has an empty name")
    assert reasons["locked.png"].startswith("member is encrypted (password-protected)")
    assert reasons["deflate64.png"].startswith("member is compressed with method 9")
    detector = _CountingDetector()
    report = extract([archive, tmp_path / "missing.png"], tmp_path / "faces", detector=detector)
    assert report.inputs_read == 2 and detector.frames == 2  # both good members read
    assert len(report.skipped) == 3 + 1 + 2  # the bad members, the missing file, two faceless photos


def test_hostile_zip_member_that_fails_while_reading_is_one_skipped_line(tmp_path):
    """Members that pass the listing and fail when read (flag bit 5, 'compressed patched data', makes
    zipfile raise NotImplementedError; a bad CRC raises BadZipFile) are each one line too."""
    import zipfile

    from engine.faces.extract import extract

    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("patched.mp4", _clip(tmp_path / "c.mp4", 64, 2).read_bytes())
        zf.filelist[-1].flag_bits |= 0x20
        zf.writestr("patched.png", _png(20))
        zf.filelist[-1].flag_bits |= 0x20
        zf.writestr("bad-crc.png", _png(40))
        zf.filelist[-1].CRC ^= 1
        zf.writestr("ok.png", _png(30))
    detector = _CountingDetector()
    report = extract([archive], tmp_path / "faces", detector=detector)
    assert report.inputs_read == 1 and detector.frames == 1  # ok.png read, the others reported
    reasons = {s.source.split("::")[1]: s.reason for s in report.skipped}
    for member in ("patched.mp4", "patched.png", "bad-crc.png"):
        assert reasons[member].startswith("cannot be read from the archive ("), reasons


@pytest.mark.parametrize("bad", ["empty", "encrypted", "method"])
def test_hostile_model_zip_member_is_a_clear_refusal(tmp_path, bad):
    import zipfile

    from engine.models.folder import summary
    from webapp.projects import Workspace, import_model

    project = Workspace(tmp_path / "ws").create("ann", "p")
    save_model(project.model_dir, build_model("lite"), {"iteration": 3})
    good = {f"model/{name}": (project.model_dir / name).read_bytes() for name in ("config.json", "model.safetensors")}
    archive = _hostile_zip(tmp_path / "up.zip", good, empty=bad == "empty", encrypted=bad == "encrypted",
                           method=bad == "method")
    match = {"empty": "a member has an empty name", "encrypted": "'locked.png' is encrypted",
             "method": "'deflate64.png' uses compression method 9"}[bad]
    with pytest.raises(UserError, match=f"up.zip: (member )?{match}"):
        import_model(project, archive)
    assert summary(project.model_dir)["iteration"] == 3
    assert zipfile.is_zipfile(archive)


# ---------------------------------------------------------------- small ones


def test_hostile_face_removal_deletes_only_faces_the_set_lists(tmp_path):
    from engine.faces.faceset import FaceSet

    faceset = FaceSet(tmp_path / "A", size=16, create=True)
    for i in range(3):
        faceset.add({"file": f"f{i}.png", "source": "synthetic", "frame": i}, np.zeros((16, 16, 3), np.uint8))
    faceset.save()
    (tmp_path / "precious.txt").write_text("keep")
    (tmp_path / "A" / "notes.txt").write_text("keep")
    asked = ["f1.png", "../precious.txt", str(tmp_path / "precious.txt"), "notes.txt", "faces.json", "", "..", "f9.png"]
    assert faceset.remove(asked) == 1
    assert (tmp_path / "precious.txt").exists() and (tmp_path / "A" / "notes.txt").exists()
    assert (tmp_path / "A" / "faces.json").exists() and not (tmp_path / "A" / "f1.png").exists()
    assert [e["file"] for e in FaceSet(tmp_path / "A").entries] == ["f0.png", "f2.png"]


def test_hostile_auth_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    from webapp.ui import read_credentials

    auth = tmp_path / "users.txt"
    auth.write_bytes("ann:s\u00e9cret\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"users\.txt is not UTF-8 text"):
        read_credentials([], auth)
    auth.write_bytes("\ufeffann:s\u00e9cret\n".encode())  # UTF-8 with a BOM, as Notepad writes it
    assert read_credentials([], auth) == {"ann": "s\u00e9cret"}
