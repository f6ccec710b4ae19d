"""Swap a video: decode -> detect in batches (or track between detections) -> smooth -> swap -> encode.

Frames stream through ffmpeg pipes (a reader thread decodes ahead while the model works), and
the output keeps the source's frame count, size, frame times and audio (`engine.video_writer`). Faces
are detected on every `detect_every`-th frame in one batched call per chunk of frames and carried
to the frames between by optical flow (`flow_tracker`); landmarks are One-Euro smoothed per face
track, so the pasted face does not shimmer. Frames without a face are written as they came.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.faces.detection import Face
from engine.media import probe_video, read_frames
from engine.progress import Listener, Reporter, StopFlag
from engine.swap.flow_tracker import FlowTracker
from engine.swap.pipeline import STAGES, SwappedFace, Swapper
from engine.swap.smoothing import LandmarkSmoother, smoothing_params
from engine.video_writer import TimedVideoWriter, frame_times

BATCH_SIZE = 8  # frames per detector and model call


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


def swap_video(swapper: Swapper, source: str | Path, out: str | Path, *, smooth: float = 0.5,
               detect_every: int = 1, batch_size: int = BATCH_SIZE, listeners: Iterable[Listener] = (),
               stop: StopFlag | None = None, keep_faces: bool = False) -> VideoReport:
    """Write `source` with its faces swapped to `out` (MP4); nothing is left at `out` on failure or stop."""
    if detect_every < 1:
        raise UserError(f"--detect-every {detect_every}: use 1 (every frame) or more")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source, out = Path(source), Path(out)
    params = smoothing_params(smooth)
    info = probe_video(source)
    times = frame_times(source, info.fps)
    if times.damage:
        raise UserError(f"{source}: the file is cut short or damaged (ffmpeg: {times.damage}); "
                        "copy or export it again")
    total = len(times.times) if len(times.times) > 1 else max(1, round(info.duration * info.avg_fps))
    stop = stop if stop is not None else StopFlag()
    clock = swapper.clock
    clock.reset()
    report = VideoReport(source, None)
    reporter = Reporter("swap", total=total, unit="frame", listeners=listeners)
    state = _Tracking(LandmarkSmoother(params, fps=info.fps), FlowTracker(), info.fps)
    writer = TimedVideoWriter(out, info.width, info.height, audio_from=source if info.has_audio else None,
                              time_base=times.time_base)
    started = time.perf_counter()
    frames = _prefetch(read_frames(source), depth=2 * batch_size)
    try:
        while True:
            with clock("decode"):
                batch = _take(frames, batch_size)
            if not batch:
                break
            if stop:
                writer.abort()
                frames.close()
                report.seconds = time.perf_counter() - started
                report.stages = dict(clock.seconds)
                return report
            indices = [i for i, _ in batch]
            images = [img for _, img in batch]
            landmarks = state.landmarks(swapper, indices, images, detect_every, times.time_of)
            outputs, placed = swapper.swap_frames(images, landmarks)
            with clock("encode"):
                for index, frame in zip(indices, outputs, strict=True):
                    writer.write(frame, times.time_of(index))
            report.frames += len(batch)
            report.frames_with_faces += sum(1 for faces in placed if faces)
            if keep_faces:
                report.faces.extend(placed)
            elapsed = time.perf_counter() - started
            reporter(report.frames, metrics={"fps": report.frames / elapsed,
                                             "faces": report.frames_with_faces}, preview=outputs[-1])
        with clock("encode"):
            writer.close(times.duration_of(report.frames - 1))
    except BaseException:
        writer.abort()
        frames.close()
        raise
    report.out = out
    report.detections = state.detections
    report.seconds = time.perf_counter() - started
    report.stages = {stage: clock.seconds.get(stage, 0.0) for stage in STAGES}
    reporter(report.frames, metrics={"fps": report.fps, "faces": report.frames_with_faces}, done=True)
    return report


class _Tracking:
    """Per-video face state: which frames are detected, flow tracking between them, smoothing."""

    def __init__(self, smoother: LandmarkSmoother, tracker: FlowTracker, fps: float) -> None:
        self.smoother, self.tracker, self.fps = smoother, tracker, fps
        self.detections = 0
        self._tick = -1

    def landmarks(self, swapper: Swapper, indices: list[int], images: list[np.ndarray], every: int,
                  time_of) -> list[list[np.ndarray]]:
        """Smoothed landmarks of the faces to swap in each frame of one batch."""
        keys = [k for k, index in enumerate(indices) if index % every == 0]
        found = dict(zip(keys, swapper.find_faces([images[k] for k in keys]), strict=True)) if keys else {}
        self.detections += len(keys)
        out = []
        for k, (index, image) in enumerate(zip(indices, images, strict=True)):
            with swapper.clock("track"):
                faces: list[Face]
                if k in found:
                    faces = found[k]
                    if every > 1:
                        self.tracker.reset(image, faces)
                else:
                    faces = self.tracker.track(image)
                out.append(self._smoothed(index, faces, time_of))
        return out

    def _smoothed(self, index: int, faces: list[Face], time_of) -> list[np.ndarray]:
        # the smoother counts time in frames of the nominal rate; VFR gaps count as the frames they span
        self._tick = max(self._tick + 1, round(time_of(index) * self.fps))
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        return self.smoother(self._tick, boxes, [f.landmarks for f in faces])


def _take(frames: Iterator[tuple[int, np.ndarray]], n: int) -> list[tuple[int, np.ndarray]]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == n:
            break
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
