"""Video and image I/O through ffmpeg pipes on the shared clips."""

import subprocess

import numpy as np
import pytest

from engine import media
from engine.errors import UserError
from engine.video_writer import VideoWriter


def test_probe_and_read_every_frame(data_dir):
    info = media.probe_video(data_dir / "video" / "talk1.mp4")
    assert (info.width, info.height, info.has_audio) == (700, 700, True)
    assert info.fps == pytest.approx(30.0) and info.duration == pytest.approx(6.13, abs=0.01)
    frames = list(media.read_frames(data_dir / "video" / "talk1.mp4", every=10))
    assert [i for i, _ in frames] == list(range(0, 135, 10))
    assert frames[0][1].shape == (700, 700, 3) and frames[0][1].dtype == np.uint8


def test_cut_short_video_raises_after_its_good_frames(data_dir, tmp_path):
    whole = tmp_path / "whole.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-i", str(data_dir / "video" / "talk2.mp4"),
                    "-c", "copy", "-movflags", "+faststart", str(whole)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    seen = []
    with pytest.raises(UserError, match="cut.mp4: video decoding failed after"):
        for index, _ in media.read_frames(cut):
            seen.append(index)
    assert 10 < len(seen) < 125


def test_writer_keeps_audio_and_leaves_nothing_on_failure(data_dir, tmp_path):
    source = data_dir / "video" / "talk3.mp4"
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 590, 590, 25, audio_from=source) as writer:
        for _, frame in media.read_frames(source):
            writer.write(frame)
    info = media.probe_video(out)
    assert info.has_audio and (info.width, info.height) == (590, 590)
    assert sum(1 for _ in media.read_frames(out)) == 125
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "bad.mp4", 590, 590, 25) as writer:
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert not list(tmp_path.glob("*bad*"))


def test_image_bomb_and_garbage_refused(tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (10_000, 10_000)).save(big)  # 100 MP of zeros: a tiny file
    with pytest.raises(UserError, match="decompression bomb"):
        media.read_image(big)
    with pytest.raises(UserError, match="not a readable image"):
        media.decode_image(b"GIF89a garbage", "x.gif")
