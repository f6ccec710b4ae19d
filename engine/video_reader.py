"""Read videos through PyAV (FFmpeg's libraries in-process): what a video holds, when its frames show, its frames.

One module answers every question about a source video, so its size, rate, frame count and frame
times are worked out once (`probe_video`) and handed on, never asked of a second ffmpeg process.
Frames come out as RGB uint8 (BGR only at OpenCV file edges elsewhere), turned upright as the
file's display matrix says, one per stored frame: no duplication or dropping to a constant rate,
so indices match the frame count and `VideoInfo.times` gives each frame's own time (variable-rate
phone clips keep their timing through a swap; `engine.video_writer` writes at these times).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import numpy as np

from engine.errors import UserError

# containers whose index lists every frame (MP4's sample table): fewer packets than it lists means a cut
INDEXED_FORMATS = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}


@dataclass(frozen=True)
class FrameTimes:
    """Presentation times (s) of a video's frames, the last frame's duration, and the stream time base."""

    times: np.ndarray
    last_duration: float
    time_base: Fraction
    damage: str | None = None  # why the stream looks cut short or broken, if it does

    def time_of(self, index: int) -> float:
        """Time of frame `index`; frames past the known list continue at the last frame's pace."""
        if index < len(self.times):
            return float(self.times[index])
        return float(self.times[-1] + (index - len(self.times) + 1) * self.last_duration)

    def duration_of(self, index: int) -> float:
        if index + 1 < len(self.times):
            return float(self.times[index + 1] - self.times[index])
        return self.last_duration


@dataclass(frozen=True)
class VideoInfo:
    """What a video stream holds. `fps` is the nominal frame rate (ffmpeg's tbr), `avg_fps` the mean;
    `width` and `height` are as shown, after `rotation` (degrees counterclockwise, a multiple of 90)."""

    path: str
    width: int
    height: int
    fps: float
    avg_fps: float
    duration: float
    has_audio: bool
    rotation: int = 0

    @cached_property
    def times(self) -> FrameTimes:
        """Every frame's time, read from the packets on first use (demuxing only, no decoding)."""
        return _frame_times(self)

    @property
    def frames(self) -> int:
        """How many frames the video holds: one per packet of its video stream."""
        return len(self.times.times)


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's stream properties; UserError naming the file if it has no readable video stream."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise UserError(f"{path}: ffmpeg cannot decode its video stream ({err}); "
                            "check that it is a whole video file") from err
        rotation = _quarter_turns(first) * 90
        shape = first if first is not None else stream.codec_context
        width, height = shape.width, shape.height
        if rotation in (90, 270):
            width, height = height, width
        avg = float(stream.average_rate or 0)
        fps = float(stream.base_rate or 0) or avg or 25.0
        duration = container.duration / av.time_base if container.duration else 0.0
        if not duration and stream.duration:
            duration = float(stream.duration * stream.time_base)
        return VideoInfo(path=str(path), width=int(width), height=int(height), fps=fps, avg_fps=avg or fps,
                         duration=duration, has_audio=bool(container.streams.audio), rotation=rotation)


def read_frames(video: str | Path | VideoInfo, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 frame) for every `every`-th stored frame, upright.

    A video that breaks off mid-stream raises UserError after its good frames.
    """
    path = Path(video.path if isinstance(video, VideoInfo) else video)
    index = packets = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads, as the ffmpeg command line decodes
        try:
            for packet in container.demux(stream):
                packets += not _is_flush(packet)
                for frame in packet.decode():
                    if index % every == 0:
                        yield index, _upright(frame)
                    index += 1
        except av.FFmpegError as err:
            raise UserError(f"{path}: video decoding failed after {index} frames ({err})") from err
        missing = _missing_packets(container, packets)
        if missing or index == 0:
            raise UserError(f"{path}: video decoding failed after {index} frames "
                            f"({missing or 'no frames decoded'})")


def _open(path: Path) -> av.container.InputContainer:
    """The file opened for reading, with a video stream; UserError naming the file otherwise."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise UserError(f"{path}: ffmpeg cannot read a video stream from it ({err}); "
                        "check that it is a video file") from err
    if not container.streams.video:
        audio = " (it holds only audio)" if container.streams.audio else ""
        container.close()
        raise UserError(f"{path}: no video stream in it{audio}; pass a video file")
    return container


def _frame_times(info: VideoInfo) -> FrameTimes:
    """Frame times from the packets of the first video stream, counted from the file's start as ffmpeg does.

    Falls back to the mean rate when the stream carries no usable timestamps, e.g. a raw elementary
    stream. Reading every packet also finds files cut short, which the decoder would end
    early without an error.
    """
    packets, count, damage, usable = [], 0, None, True
    with _open(Path(info.path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 90_000)
        start = round(Fraction(container.start_time or 0, av.time_base) / time_base)
        try:
            for packet in container.demux(stream):
                if _is_flush(packet):
                    continue
                count += 1
                if packet.is_discard:  # hidden by an edit list: never shown as a frame
                    continue
                if packet.pts is None:
                    usable = False
                packets.append((packet.pts, packet.duration or 0))
        except av.FFmpegError as err:
            damage = str(err)
        damage = damage or _missing_packets(container, count)
    fps = info.fps if info.fps > 0 else 25.0
    if not usable or not packets:  # no timing to follow: frames at the mean rate
        fps = info.avg_fps if info.avg_fps > 0 else fps
        return FrameTimes(np.arange(max(1, len(packets))) / fps, 1.0 / fps, Fraction(1, 90_000), damage)
    packets.sort()
    pts = np.array([p for p, _ in packets], dtype=np.int64) - start
    steps = np.arange(len(pts))
    pts = np.maximum.accumulate(pts - steps) + steps  # strictly increasing: equal times break the muxer
    last = packets[-1][1] or (int(pts[-1] - pts[-2]) if len(pts) > 1 else 0)
    last_duration = float(last * time_base) if last > 0 else 1.0 / fps
    times = pts.astype(np.float64) * float(time_base)
    # a few files start below zero (edit lists hiding encoder delay); the writer counts from 0
    return FrameTimes(times - min(0.0, times[0]), last_duration, time_base, damage)


def _missing_packets(container: av.container.InputContainer, packets: int) -> str | None:
    """Why the video stream ended early, when the container's index lists more frames than it held.

    Only MP4's index is trusted: AVI's header, say, counts the frames of a constant rate, dropped
    ones too.
    """
    listed = container.streams.video[0].frames
    if INDEXED_FORMATS & set(container.format.name.split(",")) and packets < listed:
        return f"the file ends after {packets} of the {listed} frames its index lists"
    return None


def _is_flush(packet: av.Packet) -> bool:
    """The demuxer's closing empty packet (it flushes the decoder; it is no frame)."""
    return packet.size == 0 and packet.dts is None


def _quarter_turns(frame: av.VideoFrame | None) -> int:
    """Counterclockwise quarter turns that show `frame` upright (its display matrix), 0 to 3."""
    return round((frame.rotation if frame is not None else 0) / 90) % 4


def _upright(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
