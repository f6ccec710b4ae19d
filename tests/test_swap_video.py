"""Swapping videos with a tiny model trained on real faces: frame count, size, timing and audio survive,
only the face changes, faceless frames pass through, smoothing steadies the face, tracking between
detections follows it, and failures leave nothing behind."""

from __future__ import annotations

import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.errors import UserError
from engine.faces.mtcnn import MTCNNDetector
from engine.media import ffmpeg_exe
from engine.progress import StopFlag
from engine.swap.pipeline import Swapper
from engine.swap.settings import DETECT_SIZE, SwapSettings
from engine.swap.smoothing import smoothing_params
from engine.swap.video import swap_frames, swap_video
from engine.video_reader import probe_video, read_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CachedDetector:
    """MTCNN that remembers its answers per frame, so runs that differ only in smoothing or tracking
    detect each frame once."""

    name = "mtcnn"

    def __init__(self) -> None:
        self.inner = MTCNNDetector(max_side=DETECT_SIZE)
        self.cache: dict[bytes, list] = {}
        self.calls = 0

    def detect(self, images):
        keys = [cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA).tobytes() + str(im.shape).encode()
                for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            for i, faces in zip(todo, self.inner.detect([images[i] for i in todo]), strict=True):
                self.cache[keys[i]] = faces
        self.calls += len(images)
        return [self.cache[k] for k in keys]


@pytest.fixture(scope="module")
def swapper(tiny_model):
    return Swapper(tiny_model, SwapSettings(), device="cpu", detector=CachedDetector())


@pytest.fixture(scope="module")
def short_clip(data_dir, tmp_path_factory):
    """The first 40 frames of talk1.mp4 (1.9 s, keeping its variable frame timing and its audio)."""
    out = tmp_path_factory.mktemp("clips") / "talk1_short.mp4"
    _ffmpeg("-i", str(data_dir / "video" / "talk1.mp4"), "-frames:v", "40", "-fps_mode", "passthrough",
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-c:a", "copy", "-shortest",
            "-movflags", "+faststart", str(out))
    return out


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _stream_lines(path) -> list[str]:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return [line for line in proc.stderr.splitlines() if "Stream #" in line]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_full_talk1_keeps_frames_size_timing_and_audio_and_changes_only_the_face(swapper, data_dir, tmp_path):
    source = data_dir / "video" / "talk1.mp4"
    out = tmp_path / "talk1_swapped.mp4"
    events = []
    report = swap_video(swapper, source, out, detect_every=3, keep_faces=True, listeners=[events.append])

    assert report.out == out and report.frames == 135 and report.frames_with_faces == 135
    assert report.detections == 45  # every 3rd frame detected, the rest tracked
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert frames == 135 and abs(seconds - imageio_ffmpeg.count_frames_and_secs(str(source))[1]) <= 0.1
    info, src_info = probe_video(out), probe_video(source)
    assert (info.width, info.height) == (700, 700) and info.has_audio
    assert abs(info.duration - src_info.duration) <= 0.1
    # variable frame rate kept: nominal 30 fps (tbr) and the 22.13 fps average, frame by frame
    assert info.fps == pytest.approx(30.0) and info.avg_fps == pytest.approx(src_info.avg_fps, abs=0.05)
    assert np.abs(info.times.times - src_info.times.times).max() < 1e-3
    assert sum("Audio: aac" in line for line in _stream_lines(out)) == 1
    assert events[-1].done and events[-1].step == 135 and events[-1].metrics["fps"] > 0
    assert events[0].preview is not None and events[0].unit == "frame"

    inside_diffs = []
    for (i, swapped), (_, original) in zip(read_frames(out, every=9), read_frames(source, every=9), strict=True):
        region = np.zeros(original.shape[:2], bool)
        for face in report.faces[i]:
            region |= face.region(original.shape)
        grown = cv2.dilate(region.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        assert _psnr(swapped[~grown], original[~grown]) >= 35.0, i
        inside_diffs.append(np.abs(swapped[region].astype(int) - original[region]).mean())
    assert min(inside_diffs) > 8.0, inside_diffs


def test_frames_without_faces_pass_through_and_no_audio_gives_no_audio(swapper, data_dir, tmp_path):
    clip = tmp_path / "blank_then_face.mp4"
    # 10 grey frames, then 15 frames of talk3 (a woman speaking); no audio track
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=590x590:r=25:d=0.4", "-i", str(data_dir / "video" / "talk3.mp4"),
            "-filter_complex", "[0:v]format=yuv420p,setsar=1[a];[1:v]trim=end_frame=15,setpts=PTS-STARTPTS,"
            "setsar=1[b];[a][b]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
            "-crf", "10", str(clip))
    out = tmp_path / "out.mp4"
    report = swap_video(swapper, clip, out, keep_faces=True)

    assert report.frames == 25
    assert [bool(f) for f in report.faces] == [False] * 10 + [True] * 15
    assert not probe_video(out).has_audio and not any("Audio" in line for line in _stream_lines(out))
    for (i, swapped), (_, original) in zip(read_frames(out), read_frames(clip), strict=True):
        if i < 10:
            assert _psnr(swapped, original) >= 45.0, i  # untouched, up to re-encoding


def _centres(report) -> np.ndarray:
    return np.array([faces[0].center for faces in report.faces])


def test_smoothing_steadies_the_face_and_tracking_between_detections_follows_it(swapper, short_clip, tmp_path):
    runs = {}
    for name, smooth, every in (("raw", 0.0, 1), ("smooth", 0.6, 1), ("tracked", 0.0, 4)):
        runs[name] = swap_video(swapper, short_clip, tmp_path / f"{name}.mp4", smooth=smooth, detect_every=every,
                                keep_faces=True)
        assert runs[name].frames == 40 and runs[name].frames_with_faces == 40
    raw, smooth, tracked = (_centres(runs[n]) for n in ("raw", "smooth", "tracked"))
    face_size = np.ptp(runs["raw"].faces[0][0].landmarks[:, 0])

    def jitter(c):  # frame-to-frame wobble: second differences cancel steady motion
        return np.linalg.norm(np.diff(c, n=2, axis=0), axis=1).mean()

    assert jitter(smooth) < 0.7 * jitter(raw), (jitter(smooth), jitter(raw))
    assert np.linalg.norm(smooth - raw, axis=1).max() < 0.1 * face_size  # steadier, not lagging away
    # flow tracking between detections stays within a few per cent of a face of where detection puts it
    assert runs["tracked"].detections == 10
    assert np.linalg.norm(tracked - raw, axis=1).mean() < 0.05 * face_size


def test_stop_and_broken_videos_leave_nothing_at_out_and_the_batch_goes_on(swapper, tiny_model, short_clip,
                                                                           data_dir, tmp_path, capsys):
    stop = StopFlag()
    out = tmp_path / "stopped" / "out.mp4"
    report = swap_video(swapper, short_clip, out, stop=stop, listeners=[lambda e: stop.set()])
    assert report.out is None and 0 < report.frames < 40
    assert list(out.parent.iterdir()) == []

    broken = tmp_path / "broken.mp4"
    data = short_clip.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="broken.mp4: the file is cut short"):
        swap_video(swapper, broken, tmp_path / "b" / "out.mp4")
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []

    outdir = tmp_path / "batch"
    code = cli_main(["swap", str(broken), str(short_clip), "-m", str(tiny_model), "--out", str(outdir),
                     "--device", "cpu", "--detector", "mtcnn", "--detect-every", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "skipped" in err and "broken.mp4" in err
    assert sorted(p.name for p in outdir.iterdir()) == ["talk1_short.mp4"]
    assert imageio_ffmpeg.count_frames_and_secs(str(outdir / "talk1_short.mp4"))[0] == 40


def test_sampled_runs_go_through_the_videos_own_tracking_and_smoothing(swapper, short_clip, tmp_path):
    """`swap_frames` on runs (what `evaluate --frames` measures): each run starts its tracking afresh at its
    first frame and is smoothed at the frames' own times, like the whole video from frame 0."""
    info = probe_video(short_clip)
    whole = swap_video(swapper, short_clip, tmp_path / "whole.mp4", smooth=0.6, keep_faces=True, probe=info)
    runs = [list(range(0, 5)), list(range(5, 10)), list(range(30, 35))]
    frames = [f for batch in swap_frames(swapper, info, runs=runs, smooth=0.6, batch_size=3) for f in batch]
    assert [f.index for f in frames] == [i for run in runs for i in run]
    assert [f.index for f in frames if f.first] == [0, 5, 30] and all(f.detected for f in frames)
    for f in frames[:5]:  # the first run is the video's own start: the same faces, where they went
        assert np.allclose(f.faces[0].landmarks, whole.faces[f.index][0].landmarks)
    # a run starting later has no smoothing history: its first frame is the raw detection
    raw = swap_video(swapper, short_clip, tmp_path / "raw.mp4", smooth=0.0, keep_faces=True, probe=info)
    assert np.allclose(frames[10].faces[0].landmarks, raw.faces[30][0].landmarks)
    assert not np.allclose(frames[10].faces[0].landmarks, whole.faces[30][0].landmarks)


def test_frame_times_follow_the_source_packets(data_dir):
    times = probe_video(data_dir / "video" / "talk1.mp4").times
    assert len(times.times) == 135 and np.all(np.diff(times.times) > 0)
    assert times.times[0] == pytest.approx(0.033, abs=1e-3)
    assert times.times[-1] + times.last_duration == pytest.approx(6.133, abs=1e-3)
    assert set(np.round(np.diff(times.times) * 30).astype(int)) == {1, 2}  # 30 fps with dropped frames
    cfr = probe_video(data_dir / "video" / "talk2.mp4").times
    assert len(cfr.times) == 125 and np.allclose(np.diff(cfr.times), 0.04)


def test_the_membrane_and_the_face_are_steadied_along_the_face_track(swapper, short_clip, monkeypatch):
    """Each frame's Poisson membrane and new face go through their face track's low-pass at the frame's
    time: one track through the clip, its first frame unchanged, the frame-to-frame change of what is pasted
    well below that of what was computed."""
    from engine.swap import steady

    calls: dict[float, list] = {}
    plain = steady.TrackLowPass.__call__

    def recorded(self, track, value, t):
        out = plain(self, track, value, t)
        calls.setdefault(self.cutoff_hz, []).append((track, t, value, out))
        return out

    monkeypatch.setattr(steady.TrackLowPass, "__call__", recorded)
    info = probe_video(short_clip)
    frames = [f for batch in swap_frames(swapper, info, smooth=0.85, batch_size=8) for f in batch]
    rest = smoothing_params(0.85).min_cutoff
    assert sorted(calls) == [rest, steady.FACE_SPEEDUP * rest]  # the membrane's and the face's
    for kind in calls.values():
        assert len(kind) == len(frames) == 40 and {track for track, *_ in kind} == {0}
        times = [t for _, t, *_ in kind]
        assert times == sorted(times) and times[-1] == pytest.approx(info.times.time_of(39), abs=1 / info.fps)
        assert np.array_equal(kind[0][2], kind[0][3])

        def change(key: int, kind=kind) -> float:
            return float(np.mean([np.abs(b[key] - a[key]).mean() for a, b in zip(kind[:-1], kind[1:], strict=True)]))

        assert change(3) < 0.7 * change(2), (change(3), change(2))
