"""Video and image reading on the shared clips: probe, frame times, frames, and the errors that name the file."""

import subprocess

import numpy as np
import pytest

from engine import media
from engine.errors import UserError
from engine.video_reader import probe_video, read_frame, read_frames
from engine.video_writer import TimedVideoWriter


def test_probe_and_read_every_frame(data_dir):
    info = probe_video(data_dir / "video" / "talk1.mp4")
    assert (info.width, info.height, info.has_audio, info.rotation) == (700, 700, True, 0)
    assert info.fps == pytest.approx(30.0) and info.duration == pytest.approx(6.13, abs=0.01)
    assert info.frames == 135 and len(info.times.times) == 135  # one packet read gives both
    frames = list(read_frames(info, every=10))
    assert [i for i, _ in frames] == list(range(0, 135, 10))
    assert frames[0][1].shape == (700, 700, 3) and frames[0][1].dtype == np.uint8


def test_one_frame_is_read_by_seeking_and_is_the_frame_read_frames_yields(data_dir, monkeypatch):
    import engine.video_reader

    info = probe_video(data_dir / "video" / "talk1.mp4")
    wanted = {0, 1, 67, 100, info.frames - 1}
    every = {i: rgb for i, rgb in read_frames(info) if i in wanted}
    monkeypatch.setattr(engine.video_reader, "read_frames", None)  # found by seeking, not read from the start
    for index in sorted(wanted):
        assert np.array_equal(read_frame(info, index), every[index]), index
    with pytest.raises(UserError, match=f"no frame {info.frames} \\(it holds {info.frames} frames"):
        read_frame(info, info.frames)


def test_rotated_video_is_read_upright(data_dir, tmp_path):
    """A phone clip stored landscape with a 90 degree display matrix: probed and decoded as shown."""
    wide = tmp_path / "wide.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-i", str(data_dir / "video" / "talk3.mp4"),
                    "-frames:v", "3", "-vf", "scale=320:240,setsar=1", "-an", str(wide)], check=True)
    turned = tmp_path / "turned.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i", str(wide),
                    "-c", "copy", str(turned)], check=True)
    info = probe_video(turned)
    assert (info.width, info.height, info.rotation) == (240, 320, 90)
    [(_, stored)] = list(read_frames(wide, every=5))
    [(_, shown)] = list(read_frames(turned, every=5))
    assert shown.shape == (320, 240, 3) and np.array_equal(shown, np.rot90(stored))  # a quarter turn to the left


def test_cut_short_video_raises_after_its_good_frames(data_dir, tmp_path):
    whole = tmp_path / "whole.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-i", str(data_dir / "video" / "talk2.mp4"),
                    "-c", "copy", "-movflags", "+faststart", str(whole)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "ends after" in probe_video(cut).times.damage
    seen = []
    with pytest.raises(UserError, match="cut.mp4: video decoding failed after"):
        for index, _ in read_frames(cut):
            seen.append(index)
    assert 10 < len(seen) < 125


def test_unreadable_files_and_audio_only_files_are_refused_by_name(data_dir, tmp_path):
    audio = tmp_path / "audio.m4a"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-i", str(data_dir / "video" / "talk3.mp4"), "-vn",
                    "-c:a", "copy", str(audio)], check=True)
    with pytest.raises(UserError, match="audio.m4a: no video stream"):
        probe_video(audio)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(UserError, match="garbage.mp4: ffmpeg cannot read"):
        probe_video(garbage)
    with pytest.raises(UserError, match="missing.mp4: no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_writer_keeps_audio_and_leaves_nothing_on_failure(data_dir, tmp_path):
    source = probe_video(data_dir / "video" / "talk3.mp4")
    out = tmp_path / "out.mp4"
    writer = TimedVideoWriter(out, 590, 590, audio_from=source.path, time_base=source.times.time_base)
    for index, frame in read_frames(source):
        writer.write(frame, source.times.time_of(index))
    writer.close(source.times.last_duration)
    info = probe_video(out)
    assert info.has_audio and (info.width, info.height) == (590, 590)
    assert info.frames == 125 and np.allclose(info.times.times, source.times.times)
    bad = TimedVideoWriter(tmp_path / "bad.mp4", 590, 590)
    with pytest.raises(ValueError):
        bad.write(np.zeros((10, 10, 3), np.uint8), 0.0)
    bad.abort()
    assert not list(tmp_path.glob("*bad*"))


def test_image_bomb_and_garbage_refused(tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (10_000, 10_000)).save(big)  # 100 MP of zeros: a tiny file
    with pytest.raises(UserError, match="decompression bomb"):
        media.read_image(big)
    with pytest.raises(UserError, match="not a readable image"):
        media.decode_image(b"GIF89a garbage", "x.gif")
