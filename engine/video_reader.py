"""Read videos through PyAV (FFmpeg's libraries in-process): what a video holds, when its frames show, its frames.

One module answers every question about a source video, so its size, rate, frame count and frame
times are worked out once (`probe_video`) and handed on, never asked of a second ffmpeg process.
Frames come out as RGB uint8 (BGR only at OpenCV file edges elsewhere), turned upright as the
file's display matrix says, one per stored frame: no duplication or dropping to a constant rate,
so indices match the frame count and `VideoInfo.times` gives each frame's own time (variable-rate
phone clips keep their timing through a swap; `engine.video_writer` writes at these times).

Limits: a video is refused (UserError naming the file, its size and the limit) when its frame is over
MAX_VIDEO_PIXELS or it holds over MAX_VIDEO_FRAMES frames, checked from the container's header
before anything is decoded and again while reading. Module constants, read at each call, so a host
(the web app's flags) can change them.
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

# The demuxers a source video is read with (the containers of media.VIDEO_EXTENSIONS and raw streams).
# FFmpeg would otherwise pick a demuxer from the bytes: a text file named .mp4 holding an ffconcat or HLS
# playlist would open further files (or URLs) that it names; these are refused before anything is read.
DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,asf,mpeg,mpegts,mpegvideo,gif,h264,hevc,m4v,ivf"

# Frame area: DCI 4K (4096x2160) and UHD (3840x2160) fit either way up, with headroom to 4096x2304.
# A frame decodes to 3 bytes a pixel (28 MB here) and swapping keeps dozens in flight, so an 8000x8000
# clip of a few KB a frame would take gigabytes; images have their own limit (media.MAX_IMAGE_PIXELS).
MAX_VIDEO_PIXELS = 4096 * 2304
# Frames: 20 minutes at 60 fps. Frame times, face tracks and the swap's per-frame records grow with it.
MAX_VIDEO_FRAMES = 20 * 60 * 60


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
        stream = _video_stream(container)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise UserError(f"{path}: ffmpeg cannot decode its video stream ({err}); "
                            "check that it is a whole video file") from err
        rotation = _quarter_turns(first) * 90
        shape = first if first is not None else stream.codec_context
        width, height = shape.width, shape.height
        _check_pixels(path, width, height)
        if rotation in (90, 270):
            width, height = height, width
        avg = float(stream.average_rate or 0)
        fps = float(stream.base_rate or 0) or avg or 25.0
        duration = container.duration / av.time_base if container.duration else 0.0
        if not duration and stream.duration:
            duration = float(stream.duration * stream.time_base)
        _check_frames(path, stream.frames or round(duration * (avg or fps)), listed=True)
        return VideoInfo(path=str(path), width=int(width), height=int(height), fps=fps, avg_fps=avg or fps,
                         duration=duration, has_audio=bool(container.streams.audio), rotation=rotation)


def read_frames(video: str | Path | VideoInfo, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 frame) for every `every`-th stored frame, upright.

    A video that breaks off mid-stream raises UserError after its good frames.
    """
    path = Path(video.path if isinstance(video, VideoInfo) else video)
    index = packets = 0
    with _open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"  # frame threads, as the ffmpeg command line decodes
        try:
            for packet in container.demux(stream):
                packets += not _is_flush(packet)
                for frame in packet.decode():
                    _check_pixels(path, frame.width, frame.height)
                    _check_frames(path, index + 1)
                    if index % every == 0:
                        yield index, _upright(frame)
                    index += 1
        except av.FFmpegError as err:
            raise UserError(f"{path}: video decoding failed after {index} frames ({err})") from err
        missing = _missing_packets(container, packets)
        if missing or index == 0:
            raise UserError(f"{path}: video decoding failed after {index} frames "
                            f"({missing or 'no frames decoded'})")


def read_frame(video: str | Path | VideoInfo, index: int) -> np.ndarray:
    """Frame `index` (as `read_frames` counts them), upright, decoded from the keyframe before it rather than
    from the start, so a preview near the end of a long video comes as fast as one near its start.

    The frame is found by its presentation time; a stream without timestamps is read from the start.
    """
    info = video if isinstance(video, VideoInfo) else probe_video(video)
    path = Path(info.path)
    if not 0 <= index < info.frames:
        raise UserError(f"{path}: it has no frame {index} (it holds {info.frames} frames, from 0)")
    target = info.times.time_of(index) - info.times.duration_of(index) / 2  # the frame shown at its time
    with _open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        start = Fraction(container.start_time or 0, av.time_base)
        shown = None
        try:
            container.seek(int((start + Fraction(max(0.0, target))) * av.time_base), backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    break
                _check_pixels(path, frame.width, frame.height)
                shown = frame
                if frame.pts * stream.time_base - start >= target:
                    return _upright(frame)
        except av.FFmpegError:
            pass
    if shown is not None and index == info.frames - 1:
        return _upright(shown)
    for at, rgb in read_frames(info):  # no timestamps to seek by: count from the start
        if at == index:
            return rgb
    raise UserError(f"{path}: frame {index} could not be decoded")


def open_input(path: str | Path) -> av.container.InputContainer:
    """av.open for reading, through the DEMUXERS only (raises av.FFmpegError or OSError like av.open)."""
    return av.open(str(path), options={"format_whitelist": DEMUXERS})


def _open(path: Path) -> av.container.InputContainer:
    """The file opened for reading, with a video stream; UserError naming the file otherwise."""
    try:
        container = open_input(path)
    except av.ArgumentError as err:  # what FFmpeg answers when only a demuxer off the list would read it
        raise UserError(f"{path}: not a video container read here (MP4/MOV, MKV/WebM, AVI, FLV, WMV, MPEG, "
                        "GIF; playlists are refused)") from err
    except (av.FFmpegError, OSError) as err:
        raise UserError(f"{path}: ffmpeg cannot read a video stream from it ({err}); "
                        "check that it is a video file") from err
    stream = _video_stream(container)
    if stream is None:
        held = [what for what, there in (("audio", container.streams.audio), ("a cover picture", container.streams.video))
                if there]
        audio = f" (it holds only {' and '.join(held)})" if held else ""
        container.close()
        raise UserError(f"{path}: no video stream in it{audio}; pass a video file")
    try:  # from the header, before a frame is decoded (0 where the container does not say)
        codec = stream.codec_context
        _check_pixels(path, codec.width, codec.height)
    except UserError:
        container.close()
        raise
    return container


def _video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first video stream that is moving pictures: a song's cover art (an attached picture) is not one."""
    return next((s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic),
                None)


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_VIDEO_PIXELS:
        raise UserError(f"{path}: its frames are {width}x{height} ({width * height / 1e6:.1f} MP), over the "
                        f"limit of {MAX_VIDEO_PIXELS / 1e6:.1f} MP for videos; scale it down first "
                        "(e.g. to 1920x1080)")


def _check_frames(path: Path, frames: int, listed: bool = False) -> None:
    """`frames`: as many as the header lists (`listed`), or the count read so far."""
    if frames > MAX_VIDEO_FRAMES:
        held = f"its header lists {frames} frames" if listed else f"it holds more than {MAX_VIDEO_FRAMES} frames"
        raise UserError(f"{path}: {held}, over the limit of {MAX_VIDEO_FRAMES} frames per video; "
                        "cut it into shorter parts first")


def _frame_times(info: VideoInfo) -> FrameTimes:
    """Frame times from the packets of the first video stream, counted from the file's start as ffmpeg does.

    Falls back to the mean rate when the stream carries no usable timestamps, e.g. a raw elementary
    stream. Reading every packet also finds files cut short, which the decoder would end
    early without an error.
    """
    packets, count, damage, usable = [], 0, None, True
    with _open(Path(info.path)) as container:
        stream = _video_stream(container)
        time_base = stream.time_base or Fraction(1, 90_000)
        start = round(Fraction(container.start_time or 0, av.time_base) / time_base)
        try:
            for packet in container.demux(stream):
                if _is_flush(packet):
                    continue
                count += 1
                _check_frames(Path(info.path), count)
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
    listed = _video_stream(container).frames
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
