"""Encode frames to H.264 MP4 at the source's own frame times, with its audio copied.

Writing at one constant rate is right for constant-rate video but not for variable-rate phone
clips: 135 frames of a 6.13 s clip written at its nominal 30 fps last 4.5 s and drift off the
audio. So each frame goes to libx264 with its source timestamp, in the source's time base, through
PyAV (FFmpeg's libraries in-process): the frame count, frame times and duration match the source's,
and the output reports the same nominal rate (tbr). The timestamps come from the source's packets
(`engine.video_reader`'s `VideoInfo.times`, read without decoding): this module only writes.

The same PyAV container also muxes the audio, interleaved as the video advances: packets copied
when MP4 holds their codec, else decoded and re-encoded to AAC. One muxer for both writes the file
in one pass, with no second ffmpeg process, no video-only temporary file and one kind of error
(`av.FFmpegError`) to turn into a `UserError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.errors import UserError
from engine.video_reader import open_input

# audio codecs the MP4 muxer takes as they are; anything else is re-encoded to AAC
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}


class TimedVideoWriter:
    """H.264 MP4 writer taking (frame, time) pairs; writes beside `path` and renames on `close()`.

    The first audio stream of `audio_from` is copied (re-encoded to AAC if MP4 cannot hold its codec).
    `metadata` becomes the container's tags (the provenance record, `engine.provenance.metadata.video_tags`).
    `time_base` is the encoder's time base: pass the source's so its timestamps survive exactly.
    """

    def __init__(self, path: str | Path, width: int, height: int, *, audio_from: str | Path | None = None,
                 time_base: Fraction = Fraction(1, 90_000), crf: int = 18, preset: str = "veryfast",
                 metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self.size = (width, height)
        self.time_base = Fraction(time_base)
        self.frames = 0
        self._pending: av.VideoFrame | None = None  # held back: the last frame needs a duration
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}  # ticks each frame lasts, by pts, until its packet comes out
        self._delay: int | None = None
        self._out: av.container.OutputContainer | None = None
        self._source: av.container.InputContainer | None = None
        self._audio: Iterator[av.Packet] = iter(())
        self._next_audio: av.Packet | None = None
        with self._failing():
            # use_metadata_tags: MP4 keeps tags under any key (the provenance record's own), not just iTunes ones
            self._out = av.open(str(self.tmp), "w", format="mp4",
                                container_options={"movflags": "+faststart+use_metadata_tags"})
            self._out.metadata.update(metadata or {})
            self._video = self._out.add_stream("libx264", options={"crf": str(crf), "preset": preset})
            self._video.width, self._video.height = width + width % 2, height + height % 2  # yuv420p: even sizes
            self._video.pix_fmt = "yuv420p"
            self._video.time_base = self._video.codec_context.time_base = self.time_base
            self._video.thread_type = "AUTO"  # x264's frame threads, as ffmpeg uses (PyAV defaults to slices)
            if audio_from is not None:
                self._source = open_input(audio_from)
                if self._source.streams.audio:
                    self._audio = _audio_packets(self._source, self._source.streams.audio[0], self._out)
                    self._next_audio = next(self._audio, None)  # also adds the stream, before the header

    def write(self, frame: np.ndarray, time: float) -> None:
        """Queue `frame` to be shown at `time` seconds (times must increase).

        The array is read at the next `write()` or `close()`: leave it unchanged until then.
        """
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"frame is {frame.shape}, writer expects {self.size[1]}x{self.size[0]}x3")
        pts = round(time / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"frame times must increase: {time} after {float(self._last_pts * self.time_base)}"
                             f" (time base {self.time_base})")
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self.size[0] % 2 or self.size[1] % 2:
            frame = np.pad(frame, ((0, self.size[1] % 2), (0, self.size[0] % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_numpy_buffer(frame)  # wraps the array: no copy
        video_frame.pts, video_frame.time_base = pts, self.time_base
        with self._failing():
            if self._pending is not None:
                self._out.mux(self._encode(self._pending, pts - self._last_pts))
            self._mux_audio(time)
        self._pending, self._last_pts = video_frame, pts
        self.frames += 1

    def close(self, last_duration: float) -> Path:
        """Finish with the last frame lasting `last_duration` s; rename into place."""
        if self._pending is None:
            self.abort()
            raise UserError(f"{self.path}: video encoding failed (no frames)")
        with self._failing():
            end = self._last_pts + max(1, round(last_duration / self.time_base))
            packets = self._encode(self._pending, end - self._last_pts) + self._encode(None)
            self._pending = None
            last = packets[-1]
            if last.pts != self._last_pts:  # MP4's decode times end with the last packet (in decode order):
                # end them where the frames end, less the encoder's delay, so the average rate is the source's
                last.duration = max(1, min(end - last.pts, end - self._delay - last.dts))
            self._out.mux(packets)
            self._mux_audio(float("inf"))
            self._out.close()  # writes the index, then moves it to the front (+faststart)
            self.tmp.replace(self.path)
        self._close()
        return self.path

    def abort(self) -> None:
        """Stop encoding and delete the partial file: nothing half-written stays behind."""
        self._close()
        self.tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        for container in (self._out, self._source):
            if container is not None:
                with contextlib.suppress(av.FFmpegError, OSError):
                    container.close()
        self._out = self._source = None

    def _encode(self, frame: av.VideoFrame | None, duration: int = 0) -> list[av.Packet]:
        """The packets libx264 gives for `frame` lasting `duration` ticks (None: all it still holds)."""
        if frame is not None:
            self._durations[frame.pts] = duration
        packets = self._video.encode(frame)
        for packet in packets:  # libx264 leaves durations out (the muxer would guess): MP4 ends the video by them
            packet.duration = self._durations.pop(packet.pts)
            if self._delay is None:
                self._delay = packet.pts - packet.dts  # B-frames: decode times run this far behind
        return packets

    def _mux_audio(self, until: float) -> None:
        """Mux the audio up to `until` seconds, so that it lies in the file beside its video."""
        while self._next_audio is not None and self._next_audio.dts * self._next_audio.time_base <= until:
            self._out.mux(self._next_audio)
            self._next_audio = next(self._audio, None)

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        try:
            yield
        except (av.FFmpegError, OSError) as err:
            self.abort()
            raise UserError(f"{self.path}: video encoding failed ({err})") from err


def _audio_packets(source: av.container.InputContainer, stream: av.AudioStream,
                   out: av.container.OutputContainer) -> Iterator[av.Packet]:
    """Packets of `stream` for a new audio stream of `out`: copied if MP4 holds the codec, else AAC 192k."""
    if stream.codec_context.codec.canonical_name in MP4_AUDIO_CODECS:
        copy = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is not None:  # the demuxer's closing empty packet has no time
                packet.stream = copy
                yield packet
        return
    layout = stream.codec_context.layout  # the encoder takes only named ones, not "2 channels" of unknown order
    aac = out.add_stream("aac", rate=stream.codec_context.sample_rate,
                         layout={1: "mono", 2: "stereo"}.get(layout.nb_channels, layout))
    aac.bit_rate = 192_000
    for packet in source.demux(stream):
        for frame in packet.decode():
            yield from aac.encode(frame)
    yield from aac.encode(None)
