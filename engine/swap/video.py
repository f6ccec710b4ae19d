"""Swap a video: decode -> detect in batches (or track between detections) -> smooth -> swap -> encode.

Frames are decoded in-process (`engine.video_reader`, a reader thread decoding ahead while the model
works), and the output keeps the source's frame count, size, frame times and audio
(`engine.video_writer`). Faces are detected on every `detect_every`-th frame in one batched call per
chunk of frames and carried to the frames between by optical flow (`flow_tracker`); landmarks are
One-Euro smoothed per face track, at the frames' own times, so the pasted face does not shimmer.
Frames without a face are written as they came.

`swap_frames` is that loop without the encoder: it swaps the whole video or runs of consecutive
frames and hands out each source frame beside its swap. `swap_video` writes what it gives;
evaluation measures what it gives, so both see the same tracking and smoothing.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.faces.detection import Face
from engine.progress import Listener, Reporter, StopFlag, Stopped
from engine.provenance.metadata import video_tags
from engine.swap.flow_tracker import FlowTracker
from engine.swap.pipeline import STAGES, SwappedFace, Swapper
from engine.swap.settings import VideoSettings
from engine.swap.smoothing import LandmarkSmoother, smoothing_params
from engine.swap.steady import TrackLowPass, track_filters
from engine.video_reader import FrameTimes, VideoInfo, probe_video, read_frames
from engine.video_writer import TimedVideoWriter

BATCH_SIZE = 8  # frames per detector and model call


@dataclass
class SwappedFrame:
    """One frame as decoded and as swapped, with where its faces went."""

    index: int
    source: np.ndarray
    swapped: np.ndarray
    faces: list[SwappedFace]
    first: bool  # the first frame of its run: no predecessor to compare with
    detected: bool = False  # its faces came from the detector (else optical flow carried them)


@dataclass
class VideoReport:
    source: Path
    out: Path | None  # None when stopped: nothing is left at the output path
    frames: int = 0
    frames_with_faces: int = 0
    detections: int = 0  # frames the detector ran on
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage
    faces: list[list[SwappedFace]] = field(default_factory=list)  # per frame, if asked to keep them

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def swap_video(swapper: Swapper, source: str | Path, out: str | Path, *, smooth: float = VideoSettings.smooth,
               detect_every: int = VideoSettings.detect_every, batch_size: int = BATCH_SIZE,
               listeners: Iterable[Listener] = (), stop: StopFlag | None = None, keep_faces: bool = False,
               probe: VideoInfo | None = None) -> VideoReport:
    """Write `source` with its faces swapped to `out` (MP4); nothing is left at `out` on failure or stop.

    The file carries the swapper's provenance record in its tags, and its faces the swapper's mark.

    `probe` is `probe_video(source)` when the caller has it already.
    """
    VideoSettings(smooth, detect_every).check()
    source, out = Path(source), Path(out)
    info = probe if probe is not None else probe_video(source)
    times = info.times
    if times.damage:
        raise UserError(f"{source}: the file is cut short or damaged ({times.damage}); copy or export it again")
    frames = swap_frames(swapper, info, smooth=smooth, detect_every=detect_every, batch_size=batch_size, stop=stop)
    clock = swapper.clock
    report = VideoReport(source, None)
    reporter = Reporter("swap", total=info.frames, unit="frame", listeners=listeners)
    writer = TimedVideoWriter(out, info.width, info.height, audio_from=source if info.has_audio else None,
                              time_base=times.time_base, metadata=video_tags(swapper.provenance(source)))
    started = time.perf_counter()
    try:
        with contextlib.closing(frames):
            for batch in frames:
                with clock("encode"):
                    for frame in batch:
                        writer.write(frame.swapped, times.time_of(frame.index))
                report.frames += len(batch)
                report.frames_with_faces += sum(1 for frame in batch if frame.faces)
                report.detections += sum(frame.detected for frame in batch)
                if keep_faces:
                    report.faces.extend(frame.faces for frame in batch)
                elapsed = time.perf_counter() - started
                reporter(report.frames, metrics={"fps": report.frames / elapsed, "faces": report.frames_with_faces},
                         preview=batch[-1].swapped)
        with clock("encode"):
            writer.close(times.duration_of(report.frames - 1))
    except Stopped:
        writer.abort()
        report.seconds = time.perf_counter() - started
        report.stages = dict(clock.seconds)
        return report
    except BaseException:
        writer.abort()
        raise
    report.out = out
    report.seconds = time.perf_counter() - started
    report.stages = {stage: clock.seconds.get(stage, 0.0) for stage in STAGES}
    reporter(report.frames, metrics={"fps": report.fps, "faces": report.frames_with_faces}, done=True)
    return report


def swap_frames(swapper: Swapper, video: VideoInfo, *, runs: list[list[int]] | None = None,
                smooth: float = VideoSettings.smooth, detect_every: int = VideoSettings.detect_every,
                batch_size: int = BATCH_SIZE, stop: StopFlag | None = None) -> Iterator[list[SwappedFrame]]:
    """Swap the frames of `video` batch by batch: the whole video, or only `runs` of consecutive frame
    indices, each run tracked and smoothed from a fresh start as if it were a video of its own.

    Restarts `swapper.clock`, whose stages then time the work; raises `Stopped` when `stop` is set.
    """
    VideoSettings(smooth, detect_every).check()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if runs is not None and any(list(run) != list(range(run[0], run[0] + len(run))) for run in runs):
        raise ValueError("each run must be consecutive frame indices")
    starts = None if runs is None else {index: run[0] for run in runs for index in run}
    return _swapped(swapper, video, starts, smoothing_params(smooth), detect_every, batch_size,
                    stop if stop is not None else StopFlag())  # not `or`: an unset flag is falsy


def _swapped(swapper: Swapper, video: VideoInfo, starts: dict[int, int] | None, params, every: int,
             batch_size: int, stop: StopFlag) -> Iterator[list[SwappedFrame]]:
    clock = swapper.clock
    clock.reset()
    frames = _prefetch(read_frames(video), depth=2 * batch_size)
    batches = _Batches(frames, batch_size, starts)
    tracking: _Tracking | None = None
    try:
        while True:
            with clock("decode"):
                batch = batches.take()
            if not batch:
                return
            if stop:
                raise Stopped
            start = 0 if starts is None else starts[batch[0][0]]
            if tracking is None or tracking.start != start:
                tracking = _Tracking(start, LandmarkSmoother(params, fps=video.fps), FlowTracker(), video.times,
                                     track_filters(params))
            indices = [i for i, _ in batch]
            images = [img for _, img in batch]
            landmarks, detected = tracking.landmarks(swapper, indices, images, every)
            # the mark's code follows the index
            outputs, placed = swapper.swap_at_landmarks(images, landmarks, indices, tracking.steady)
            yield [SwappedFrame(index, image, swapped, faces, index == start, found)
                   for index, image, swapped, faces, found in zip(indices, images, outputs, placed, detected,
                                                                  strict=True)]
    finally:
        frames.close()


class _Tracking:
    """The face state of one run of frames: which are detected, flow tracking between them, smoothing of
    each face track's landmarks, Poisson membrane and face."""

    def __init__(self, start: int, smoother: LandmarkSmoother, tracker: FlowTracker, times: FrameTimes,
                 filters: dict[str, TrackLowPass] | None) -> None:
        self.start, self.smoother, self.tracker, self.times, self.filters = start, smoother, tracker, times, filters
        self._tick = -1
        self._batch: list[tuple[float, list[int]]] = []  # per frame of the last batch: (time s, track ids)

    def landmarks(self, swapper: Swapper, indices: list[int], images: list[np.ndarray],
                  every: int) -> tuple[list[list[np.ndarray]], list[bool]]:
        """Smoothed landmarks of the faces to swap in each frame of one batch, and which frames were detected."""
        detected = [(index - self.start) % every == 0 for index in indices]
        keys = [k for k, d in enumerate(detected) if d]
        found = dict(zip(keys, swapper.find_faces([images[k] for k in keys]), strict=True)) if keys else {}
        out = []
        self._batch = []
        for k, (index, image) in enumerate(zip(indices, images, strict=True)):
            with swapper.clock("track"):
                faces: list[Face]
                if k in found:
                    faces = found[k]
                    if every > 1:
                        self.tracker.reset(image, faces)
                else:
                    faces = self.tracker.track(image)
                out.append(self._smoothed(index, faces))
        return out, detected

    def _smoothed(self, index: int, faces: list[Face]) -> list[np.ndarray]:
        # the smoother counts time in frames of the nominal rate; VFR gaps count as the frames they span
        self._tick = max(self._tick + 1, round(self.times.time_of(index) * self.smoother.fps))
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        ids, landmarks = self.smoother.track(self._tick, boxes, [f.landmarks for f in faces])
        self._batch.append((self._tick / self.smoother.fps, ids))
        for low_pass in (self.filters or {}).values():
            low_pass.keep(set(self.smoother.tracker.tracks))
        return landmarks

    def steady(self, frame: int, face: int, what: str, value: np.ndarray) -> np.ndarray:
        """`value` ("membrane" or "face") of face `face` in frame `frame` of the last batch, low-passed
        along its track (`engine.swap.steady`)."""
        if self.filters is None:
            return value
        t, ids = self._batch[frame]
        return self.filters[what](ids[face], value, t)


class _Batches:
    """Decoded frames in batches of up to `n` that stay within one run (`starts`: wanted index -> its
    run's first index; None: every frame, one run)."""

    def __init__(self, frames: Iterator[tuple[int, np.ndarray]], n: int, starts: dict[int, int] | None) -> None:
        self.frames, self.n, self.starts = frames, n, starts
        self.last = max(starts, default=-1) if starts is not None else None
        self._held: tuple[int, np.ndarray] | None = None  # the first frame of the next run

    def take(self) -> list[tuple[int, np.ndarray]]:
        batch = [self._held] if self._held is not None else []
        self._held = None
        while len(batch) < self.n:
            item = next(self.frames, None)
            if item is None or (self.last is not None and item[0] > self.last):
                break  # the video or the last run is over: nothing further is decoded
            if self.starts is not None:
                if item[0] not in self.starts:
                    if batch:
                        break
                    continue
                if batch and self.starts[item[0]] != self.starts[batch[0][0]]:
                    self._held = item
                    break
            batch.append(item)
        return batch


class _prefetch:
    """Iterate `items` on a background thread, `depth` ahead, so decoding overlaps the swap work.

    Errors raised by `items` (e.g. a video that breaks off) come out of `next()` in order.
    """

    _END = object()

    def __init__(self, items: Iterator, depth: int) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    break
        except BaseException as err:  # handed to the consumer
            self._put(err)
            return
        finally:
            if self._closed.is_set():
                self._items.close()
        self._put(self._END)

    def _put(self, item) -> bool:
        """Queue `item`, waiting for room; False when the consumer closed the reader first."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> _prefetch:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            self._queue.put(self._END)  # later calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop reading ahead and end the decoder (for a stop or an error downstream)."""
        self._closed.set()
        self._thread.join(timeout=10)
