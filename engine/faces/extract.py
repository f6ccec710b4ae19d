"""Extraction: media items -> detect (batched) -> select and filter -> align -> face set.

Each input either completes (its faces saved and it is marked done in faces.json) or is reported as
skipped with a reason; one bad file never stops the batch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces import align
from engine.faces.detection import Detector, Face, largest
from engine.faces.faceset import FaceSet
from engine.faces.inputs import MediaItem, Skipped, collect, remove_tree, safe_stem
from engine.media import decode_image
from engine.progress import Listener, Reporter, StopFlag
from engine.video_reader import probe_video, read_frames

log = logging.getLogger(__name__)
# faces.json is rewritten whole: after every video, but for photos at most this often, so that a folder
# of 13,000 photos is not 13,000 rewrites of a growing index (a kill redoes the last seconds' photos)
SAVE_EVERY_S = 5.0


@dataclass
class ExtractOptions:
    detector: str = "auto"
    size: int = 256
    coverage: float = align.FACESET_COVERAGE
    every: int = 1            # keep every Nth video frame
    min_face: int = 40        # px, short side of the detector's box
    min_score: float = 0.9
    min_blur: float = 0.0     # variance of Laplacian on the aligned face; 0 keeps all
    select: str = "largest"   # or "all"
    batch_size: int = 8       # video frames per detector call
    device: str = "auto"
    # Tight crops (LFW's 90 px faces fill the frame) defeat detectors, which need some head and
    # background around a face: photos are padded by this share of their longer side on every side
    # (edge pixels repeated) before detection; boxes, landmarks and matrices stay in the photo's pixels.
    pad: float = 0.0
    person_from_folder: bool = False  # keep each photo's folder name as "person" in faces.json (LFW's layout)


@dataclass
class ExtractReport:
    inputs_read: int = 0
    inputs_already_done: int = 0
    faces_kept: int = 0
    filtered: Counter = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)
    detector: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped


def blur_score(face: np.ndarray) -> float:
    """Variance of the Laplacian over the central half of an aligned crop: low means blurry."""
    s = face.shape[0]
    core = cv2.cvtColor(face[s // 4: 3 * s // 4, s // 4: 3 * s // 4], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(core, cv2.CV_64F).var())


def extract(inputs: Iterable[str | Path], out: str | Path, options: ExtractOptions | None = None,
            listeners: Iterable[Listener] = (), stop: StopFlag | None = None,
            detector: Detector | None = None) -> ExtractReport:
    opts = options or ExtractOptions()
    if opts.select not in ("largest", "all"):
        raise ValueError(f"select must be 'largest' or 'all', got {opts.select!r}")
    out = Path(out)
    faceset = FaceSet(out, size=opts.size, coverage=opts.coverage, create=True)
    items, skipped = collect(list(inputs))
    report = ExtractReport(skipped=list(skipped))
    todo = [it for it in items if faceset.inputs.get(it.source, {}).get("stamp") != it.stamp]
    report.inputs_already_done = len(items) - len(todo)
    if not todo:
        return report
    if detector is None:
        from engine.device import pick_device
        from engine.faces.detectors import build_detector

        detector = build_detector(opts.detector, device=pick_device(opts.device))
    report.detector = faceset.detector = detector.name
    weights = [_frames_to_read(item, opts.every) for item in todo]
    reporter = Reporter("extract", total=sum(weights), unit="frame", listeners=listeners)
    run = _Run(faceset, detector, opts, report, reporter,
               stop if stop is not None else StopFlag())  # not `stop or ...`: an unset flag is falsy
    tmp_dir = out / ".tmp"
    saved = time.monotonic()
    try:
        for chunk in _chunks(todo, weights, opts.batch_size):
            if run.stop:
                break
            start = run.done
            if chunk[0][0].kind == "image":  # consecutive photos: one detector call for the lot
                outcomes = run.images([item for item, _ in chunk])
            else:
                outcomes = [run.video_outcome(chunk[0][0], tmp_dir)]
            for (item, weight), (kept, why) in zip(chunk, outcomes, strict=True):
                if isinstance(kept, UserError):
                    report.skipped.append(Skipped(item.source, str(kept).removeprefix(f"{item.source}: ")))
                else:
                    report.inputs_read += 1
                    if kept == 0:
                        report.skipped.append(Skipped(item.source, why))
                    else:
                        faceset.inputs[item.source] = {"stamp": item.stamp, "faces": kept}
                start += weight
            if chunk[0][0].kind != "image" or time.monotonic() - saved > SAVE_EVERY_S:
                faceset.save()
                saved = time.monotonic()
            run.progress(start, chunk[-1][0])
    finally:
        remove_tree(tmp_dir)
        faceset.save()
    run.reporter(run.done, metrics={"faces": report.faces_kept}, done=True)
    return report


def _chunks(items: list[MediaItem], weights: list[int], size: int) -> list[list[tuple[MediaItem, int]]]:
    """Runs of up to `size` consecutive photos (batched through the detector: MTCNN takes about a
    tenth of the time per photo in a batch of same-sized ones), and every video on its own."""
    chunks: list[list[tuple[MediaItem, int]]] = []
    for item, weight in zip(items, weights, strict=True):
        last = chunks[-1] if chunks else None
        if item.kind == "image" and last and last[0][0].kind == "image" and len(last) < size:
            last.append((item, weight))
        else:
            chunks.append([(item, weight)])
    return chunks


def _frames_to_read(item: MediaItem, every: int) -> int:
    """Progress weight of an input: 1 for a photo, the expected kept frames for a video."""
    if item.kind == "image" or item.file is None:
        return 1
    try:
        info = probe_video(item.file)
    except UserError:
        return 1
    return max(1, (info.frames + every - 1) // every)


class _Run:
    """State of one extraction run: the face set being filled and the per-input filter counts."""

    def __init__(self, faceset: FaceSet, detector: Detector, opts: ExtractOptions, report: ExtractReport,
                 reporter: Reporter, stop: StopFlag) -> None:
        self.faceset, self.detector, self.opts, self.report = faceset, detector, opts, report
        self.reporter, self.stop = reporter, stop
        self.hashes = faceset.hashes()
        self.names = {e["file"] for e in faceset.entries}
        self.item_filtered: Counter = Counter()
        self.done = 0

    def progress(self, step: int, item: MediaItem) -> None:
        self.done = max(self.done, step)
        self.reporter(self.done, metrics={"faces": self.report.faces_kept},
                      message=Path(item.source.split("::")[-1]).name)

    def why_none(self) -> str:
        if not self.item_filtered:
            return "no face found; use a photo where the face is visible, or try --detector retinaface"
        parts = ", ".join(f"{n} {why}" for why, n in self.item_filtered.items())
        return f"no face kept ({parts}); loosen --min-face/--min-score/--min-blur"

    def images(self, items: list[MediaItem]) -> list[tuple[int | UserError, str]]:
        """(faces kept or the file's UserError, why none was kept) of each photo, detected in one call."""
        decoded: dict[int, tuple[np.ndarray, int]] = {}
        outcomes: list[tuple[int | UserError, str]] = [(0, "")] * len(items)
        for i, item in enumerate(items):
            try:
                rgb = decode_image(item.read_bytes(), item.source)
            except UserError as err:
                outcomes[i] = (err, "")
                continue
            margin = int(round(self.opts.pad * max(rgb.shape[:2])))
            if margin:
                rgb = cv2.copyMakeBorder(rgb, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
            decoded[i] = (rgb, margin)
        found = self.detector.detect([rgb for rgb, _ in decoded.values()]) if decoded else []
        for (i, (rgb, margin)), faces in zip(decoded.items(), found, strict=True):
            self.item_filtered = Counter()
            kept = self.keep(items[i], None, rgb, faces, margin)
            outcomes[i] = (kept, "" if kept else self.why_none())
        return outcomes

    def video_outcome(self, item: MediaItem, tmp_dir: Path) -> tuple[int | UserError, str]:
        try:
            kept = self.video(item, tmp_dir)
        except UserError as err:
            return err, ""
        return kept, "" if kept else self.why_none()

    def video(self, item: MediaItem, tmp_dir: Path) -> int:
        self.item_filtered = Counter()
        kept = 0
        with item.local_file(tmp_dir) as path:
            batch: list[tuple[int, np.ndarray]] = []
            for index, frame in read_frames(path, every=self.opts.every):
                batch.append((index, frame))
                if len(batch) == self.opts.batch_size:
                    kept += self._video_batch(item, batch)
                    self.done += len(batch)
                    self.progress(self.done, item)
                    batch = []
                    if self.stop:
                        return kept
            kept += self._video_batch(item, batch)
        return kept

    def _video_batch(self, item: MediaItem, batch: list[tuple[int, np.ndarray]]) -> int:
        if not batch:
            return 0
        detections = self.detector.detect([frame for _, frame in batch])
        return sum(self.keep(item, idx, frame, faces)
                   for (idx, frame), faces in zip(batch, detections, strict=True))

    def keep(self, item: MediaItem, frame_index: int | None, rgb: np.ndarray, faces: list[Face],
             margin: int = 0) -> int:
        """Filter, align and save the faces of one image or frame (`rgb`: padded by `margin` px on every
        side, `faces` in its pixels); returns how many were kept."""
        opts = self.opts
        candidates = []
        for f in faces:
            if f.score < opts.min_score:
                self._filtered("below --min-score")
            elif f.size < opts.min_face:
                self._filtered("smaller than --min-face")
            else:
                candidates.append(f)
        if opts.select == "largest":
            candidates = largest(candidates)
        kept = 0
        for k, face in enumerate(sorted(candidates, key=lambda f: f.box[0])):
            crop = align.warp_face(rgb, align.alignment_matrix(face.landmarks, opts.size, opts.coverage), opts.size)
            box, landmarks = face.box - margin, face.landmarks - margin  # the unpadded photo's pixels
            matrix = align.alignment_matrix(landmarks, opts.size, opts.coverage)
            blur = blur_score(crop)
            if blur < opts.min_blur:
                self._filtered("blurrier than --min-blur")
                continue
            digest = hashlib.sha1(crop.tobytes()).hexdigest()
            if digest in self.hashes:
                self._filtered("exact duplicates")
                continue
            entry = {
                "file": self._name(item.source, frame_index, k), "source": item.source,
                "frame": frame_index, "box": _round(box), "score": round(face.score, 4),
                "landmarks": _round(landmarks), "matrix": _round(matrix, 6), "blur": round(blur, 2),
                "sha1": digest,
            }
            if opts.person_from_folder:
                entry["person"] = Path(item.source.split("::")[-1]).parent.name
            self.faceset.add(entry, crop)
            self.hashes.add(digest)
            self.names.add(entry["file"])
            kept += 1
        self.report.faces_kept += kept
        return kept

    def _filtered(self, why: str) -> None:
        self.item_filtered[why] += 1
        self.report.filtered[why] += 1

    def _name(self, source: str, frame: int | None, k: int) -> str:
        tag = hashlib.sha1(source.encode()).hexdigest()[:6]
        base = f"{safe_stem(source)}-{tag}" + (f"_f{frame:06d}" if frame is not None else "")
        name = f"{base}_{k}.png"
        while name in self.names:
            k += 1
            name = f"{base}_{k}.png"
        return name


def _round(a: np.ndarray, digits: int = 2) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()
