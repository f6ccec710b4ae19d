"""The evaluation job: swap a destination video with a model, then measure the result frame by frame.

A whole video goes through the product's own `swap_video` (detection, tracking, smoothing, blending,
encoding), so speed and flicker are what a user gets; the swapped MP4 is then decoded beside the
source. A `--frames N` sample swaps short runs of consecutive frames spread over the video through
the same `Swapper` (with the same landmark smoothing inside each run), because flicker needs
neighbouring frames. Identity means come from the A and B face sets; fidelity (SSIM/PSNR) from faces
of those sets that training did not see (see `held_out`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces import align
from engine.progress import Listener, Progress, Reporter, StopFlag

from . import metrics as M

log = logging.getLogger(__name__)

CLIP = 5  # consecutive frames per sampled run
FLOW_MARGIN = 16  # px around the face region that optical flow sees
MAX_HELD_OUT = 64  # faces per side reconstructed for SSIM/PSNR


@dataclass
class EvaluateOptions:
    model: Path
    video: Path
    out: Path
    faces_a: Path | None = None  # None: the face sets recorded in the model's training settings
    faces_b: Path | None = None
    frames: int | None = None  # None: the whole video
    reference_faces: int = 120  # faces per set embedded for the identity means
    strip: int = 6  # destination/swapped pairs shown in the HTML report
    smooth: float = 0.5
    device: str = "auto"
    detector: str = "auto"
    settings: object | None = None  # engine.swap.pipeline.SwapSettings; None: the defaults


@dataclass
class FrameRecord:
    """The figures of one frame (NaN where the frame had no face or no predecessor)."""

    index: int
    face: bool = False
    sim_target: float = math.nan  # swapped face vs B's mean
    sim_source: float = math.nan  # swapped face vs A's mean
    retrieved: float = math.nan  # 1 if the swapped face is nearer B's mean than A's
    dest_sim_target: float = math.nan  # the untouched destination face, for reference
    dest_sim_source: float = math.nan
    dest_retrieved: float = math.nan
    dist_target: float = math.nan  # Euclidean distance of the swapped face to B's mean
    verified: float = math.nan  # 1 if that distance is within B's own photos' (engine.evaluate.metrics.verified)
    dest_verified: float = math.nan
    dest_dist_target: float = math.nan
    nme: float = math.nan
    pose: np.ndarray = field(default_factory=lambda: np.full(4, math.nan))  # yaw, pitch, roll, angle
    sharpness: float = math.nan
    seam: float = math.nan
    warp_swapped: float = math.nan
    warp_destination: float = math.nan


class Stopped(Exception):
    """Raised inside the job when the stop flag is set; `evaluate` turns it into status 'stopped'."""


def evaluate(options: EvaluateOptions, listeners: Iterable[Listener] = (), stop: StopFlag | None = None) -> dict:
    """Run the evaluation and write report.json, report.html and plots into `options.out`.

    Returns the report dict (status 'done'), or {'status': 'stopped'} when stopped, writing nothing.
    """
    from engine.evaluate.identity import FaceAnalyzer
    from engine.evaluate.report import write_report
    from engine.models import load_model

    stop = stop if stop is not None else StopFlag()  # not `or`: an unset flag is falsy
    started = time.perf_counter()
    out = Path(options.out)
    reporter = Reporter("evaluate", unit="step", listeners=listeners)
    model, meta = load_model(options.model, "cpu")
    train_sets = meta.get("train", {})
    sets = {side: _resolve_set(getattr(options, f"faces_{side}"), train_sets.get(f"faces_{side}"), side)
            for side in ("a", "b")}
    try:
        reporter(0, message="loading dlib models")
        analyzer = FaceAnalyzer()
        reporter(0, message="identity references")
        refs = {side: _reference_embeddings(analyzer, faceset, options.reference_faces, stop)
                for side, faceset in sets.items()}
        mean_a, mean_b = refs["a"].mean(axis=0), refs["b"].mean(axis=0)
        reporter(0, message="held-out reconstructions")
        recon = {side: reconstruction(model, sets[side], side, train_sets.get(f"faces_{side}"))
                 for side in ("a", "b")}
        facts = {"preset": model.config.get("preset"), "resolution": int(model.resolution),
                 "iteration": meta.get("iteration"), "train": train_sets}
        del model
        threshold = M.verification_threshold(refs["b"])  # one figure for the frames and the report
        meter = FrameMeter(analyzer, mean_target=mean_b, mean_source=mean_a, threshold=threshold)
        strip = StripCollector(options.strip)
        swap = _swap(options, out, reporter, stop, strip)
        records = []
        for index, dest, swapped, faces, new_clip in swap.frames:
            if stop:
                raise Stopped
            records.append(meter.add(index, dest, swapped, faces, new_clip))
            strip.offer(index, dest, swapped, faces)
            reporter(swap.steps + len(records), total=2 * swap.count, message="measuring")
    except Stopped:
        reporter(0, message="stopped", done=True)
        return {"status": "stopped"}
    grids = {side: r.pop("grid") for side, r in recon.items()}
    report = build_report(options, facts, records, refs, threshold, recon, swap, time.perf_counter() - started)
    write_report(out, report, strip.pairs, grids)
    reporter(2 * swap.count, total=2 * swap.count, message="report written", done=True,
             metrics={k: v for k, v in report["summary"].items() if isinstance(v, float)})
    return report


# --- inputs --------------------------------------------------------------------------------------

def _resolve_set(given: Path | None, recorded: str | None, side: str):
    from engine.train.data import open_faceset

    path = given if given is not None else recorded
    if path is None:
        raise UserError(f"the model does not record its {side.upper()} face set: pass --faces-{side} FOLDER")
    if given is None and not Path(path).is_dir():
        raise UserError(f"the model trained on face set {path}, which is gone: pass --faces-{side} FOLDER")
    return open_faceset(path)


def spread(count: int, n: int) -> np.ndarray:
    """`n` indices in range(count), evenly spread, first and last included when n > 1."""
    if n <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, num=min(n, count)).round().astype(np.int64))


def _reference_embeddings(analyzer, faceset, limit: int, stop: StopFlag) -> np.ndarray:
    """Embeddings of up to `limit` faces of the set, evenly spread over it (all poses and sources)."""
    images = faceset.load_images()[spread(len(faceset), limit)]
    embeddings = []
    box = analyzer.box_in_crop(faceset.size, faceset.coverage)
    for crop in images:
        if stop:
            raise Stopped
        embeddings.append(analyzer.embed(crop, box))
    return np.stack(embeddings)


def held_out(faceset, train_path: str | None) -> tuple[np.ndarray, bool, str]:
    """(indices of the set's faces that training did not see, whether they truly are unseen, a note).

    The trainer keeps no hold-out: it trains on every face of the sets it is given
    (engine.train.data.load_pool). So a face counts as unseen when neither its pixels (sha1) nor its
    origin (source file and frame) occur in the face set the model trained on, as recorded in the
    model's training settings. When every face was seen, all are used and the note says so.
    """
    from engine.faces.faceset import FaceSet

    every = np.arange(len(faceset))
    if train_path is None or not (Path(train_path) / "faces.json").is_file():
        return every, False, "training face set unknown or gone: all faces used, some may have been seen"
    train = FaceSet(train_path)
    hashes = train.hashes()
    origins = {(e.get("source"), e.get("frame")) for e in train.entries}
    unseen = np.array([i for i, e in enumerate(faceset.entries)
                       if e.get("sha1") not in hashes and (e.get("source"), e.get("frame")) not in origins],
                      dtype=np.int64)
    if len(unseen) == 0:
        return every, False, "every face was in the training set: these are training-set reconstructions"
    return unseen, True, f"{len(unseen)} of {len(faceset)} faces not in the training set {train_path}"


def reconstruction(model, faceset, side: str, train_path: str | None) -> dict:
    """SSIM and PSNR of side->side reconstructions of held-out faces, at the model's crop.

    Faces are cut exactly as training shows them to the model (augment.center_crop_batch at the
    model's coverage and resolution); the model's output is compared with that crop.
    """
    import torch

    from engine.train.augment import center_crop_batch
    from engine.train.trainer import model_coverage

    picks, unseen, note = held_out(faceset, train_path)
    picks = picks[spread(len(picks), MAX_HELD_OUT)]
    images = faceset.load_images()[picks]
    faces = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = center_crop_batch(faces, resolution=model.resolution, src_coverage=faceset.coverage,
                          model_coverage=model_coverage(model))
    with torch.inference_mode():
        rgb, _ = model(x, side)
    to_u8 = lambda t: t.clamp(0, 1).mul(255).add(0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    targets, outputs = to_u8(x), to_u8(rgb.float())
    ssims = [M.ssim(o, t) for o, t in zip(outputs, targets, strict=True)]
    psnrs = [M.psnr(o, t) for o, t in zip(outputs, targets, strict=True)]
    show = spread(len(targets), 8)
    grid = np.concatenate([np.concatenate(list(targets[show]), axis=1),
                           np.concatenate(list(outputs[show]), axis=1)], axis=0)
    return {"ssim": float(np.mean(ssims)), "psnr": float(np.mean(psnrs)), "faces": len(picks),
            "held_out": unseen, "note": note,
            "face_set": str(faceset.path), "grid": grid}


# --- swapping ------------------------------------------------------------------------------------

def sample_clips(count: int, frames: int | None, clip: int = CLIP) -> list[list[int]]:
    """Frame indices to swap: the whole video as one run, or ~`frames` frames in runs of `clip`
    consecutive frames spread evenly over it."""
    if frames is not None and frames < 2:
        raise UserError(f"--frames {frames}: use 2 or more (flicker needs neighbouring frames)")
    if frames is None or frames >= count:
        return [list(range(count))]
    clip = min(clip, frames)
    runs = max(1, frames // clip)
    starts = spread(count - clip + 1, runs)
    return [list(range(int(s), int(s) + clip)) for s in starts]


@dataclass
class SwapRun:
    """What the swap produced: a stream of (index, destination, swapped, faces, new clip) and timings."""

    frames: Iterator
    count: int  # frames that will be measured
    steps: int  # progress steps used by the swap itself
    clips: list[list[int]]
    seconds: float = 0.0
    what: str = ""
    output: str | None = None
    stages: dict = field(default_factory=dict)


def _frame_count(video: Path) -> int:
    from engine.media import probe_video
    from engine.video_writer import frame_times

    info = probe_video(video)
    times = frame_times(video, info.fps)
    return len(times.times) if len(times.times) > 1 else max(1, round(info.duration * info.avg_fps))


def _swap(options: EvaluateOptions, out: Path, reporter: Reporter, stop: StopFlag, strip) -> SwapRun:
    from engine.swap.pipeline import Swapper, SwapSettings

    count = _frame_count(options.video)
    clips = sample_clips(count, options.frames)
    swapper = Swapper(options.model, options.settings or SwapSettings(), device=options.device,
                      detector=options.detector)
    measured = sum(len(c) for c in clips)
    strip.plan([i for c in clips for i in c])
    if len(clips) == 1 and len(clips[0]) == count:
        return _swap_whole(swapper, options, out, reporter, stop, count, clips)
    return _swap_sampled(swapper, options, reporter, stop, clips, measured)


def _swap_whole(swapper, options, out: Path, reporter: Reporter, stop: StopFlag, count: int, clips) -> SwapRun:
    """The product path: swap_video writes out/swapped.mp4; its frames are then read back."""
    from engine.media import read_frames
    from engine.swap.video import swap_video

    def forward(event: Progress) -> None:
        reporter(event.step, total=2 * count, message="swapping", preview=event.preview)

    video_out = out / "swapped.mp4"
    result = swap_video(swapper, options.video, video_out, smooth=options.smooth, listeners=[forward],
                        stop=stop, keep_faces=True)
    if result.out is None:
        raise Stopped

    def frames():
        for (index, dest), (_, swapped), faces in zip(read_frames(options.video), read_frames(video_out),
                                                     result.faces, strict=False):
            yield index, dest, swapped[: dest.shape[0], : dest.shape[1]], faces, index == 0

    return SwapRun(frames(), result.frames, result.frames, clips, seconds=result.seconds,
                   what="swap_video on the whole video: decode, detect, smooth, swap, blend, encode",
                   output=str(video_out), stages=dict(result.stages))


def _swap_sampled(swapper, options, reporter: Reporter, stop: StopFlag, clips, measured: int) -> SwapRun:
    """Swap only the sampled runs through `Swapper`, smoothing landmarks within each run."""
    from engine.media import probe_video, read_frames
    from engine.swap.smoothing import LandmarkSmoother, smoothing_params

    fps = probe_video(options.video).fps
    wanted = {i: k for k, c in enumerate(clips) for i in c}
    buffers: dict[int, list[tuple[int, np.ndarray]]] = {}
    done: list[tuple[int, np.ndarray, np.ndarray, list, bool]] = []
    seconds = 0.0
    for index, frame in read_frames(options.video):
        if stop:
            raise Stopped
        if index not in wanted:
            continue
        k = wanted[index]
        buffers.setdefault(k, []).append((index, frame.copy()))
        if len(buffers[k]) < len(clips[k]):
            continue
        run = buffers.pop(k)
        t0 = time.perf_counter()
        images = [img for _, img in run]
        found = swapper.find_faces(images)
        smoother = LandmarkSmoother(smoothing_params(options.smooth), fps=fps)
        landmarks = [smoother(i, np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4),
                              [f.landmarks for f in faces]) for (i, _), faces in zip(run, found, strict=True)]
        outputs, placed = swapper.swap_frames(images, landmarks)
        seconds += time.perf_counter() - t0
        for j, ((i, img), swapped, faces) in enumerate(zip(run, outputs, placed, strict=True)):
            done.append((i, img, swapped, faces, j == 0))
        reporter(len(done), total=2 * measured, message="swapping sample")
    return SwapRun(iter(done), len(done), len(done), clips, seconds=seconds,
                   what="Swapper.find_faces + swap_frames on the sampled frames (no decode or encode)",
                   stages=dict(swapper.clock.seconds))


# --- per-frame measurement -----------------------------------------------------------------------

def main_face(faces: list):
    """The largest pasted face of a frame (the `largest` rule swaps one), or None."""
    if not faces:
        return None
    return max(faces, key=lambda f: 1.0 / max(abs(np.linalg.det(f.matrix[:, :2])), 1e-12))


class FrameMeter:
    """Measures each destination/swapped frame pair; keeps the previous pair for the flicker figures."""

    def __init__(self, analyzer, mean_target: np.ndarray, mean_source: np.ndarray, threshold: float) -> None:
        self.analyzer, self.mean_target, self.mean_source = analyzer, mean_target, mean_source
        self.threshold = threshold  # distance to B's mean that verifies a face as B
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def add(self, index: int, dest: np.ndarray, swapped: np.ndarray, faces: list, new_clip: bool) -> FrameRecord:
        """Figures for one frame; `faces` are where the swap pasted (engine.swap.pipeline.SwappedFace)."""
        record = FrameRecord(index)
        face = main_face(faces)
        region = face.region(dest.shape) if face is not None else None
        if face is not None:
            record.face = True
            self._identity_and_geometry(record, dest, swapped, face)
            size = face.mask.shape[0]
            dest_crop = align.warp_face(dest, face.matrix, size)
            swap_crop = align.warp_face(swapped, face.matrix, size)
            record.sharpness = M.sharpness_ratio(swap_crop, dest_crop, face.mask)
            record.seam = M.seam_score(swap_crop, dest_crop, face.mask)
        if not new_clip and self._previous is not None and region is not None:
            prev_dest, prev_swap, prev_region = self._previous
            both = region | prev_region if prev_region is not None else region
            y0, y1, x0, x1 = _box(both, FLOW_MARGIN)
            record.warp_swapped, record.warp_destination = M.flicker_pair(
                prev_dest[y0:y1, x0:x1], dest[y0:y1, x0:x1], prev_swap[y0:y1, x0:x1], swapped[y0:y1, x0:x1],
                region[y0:y1, x0:x1])
        self._previous = (dest, swapped, region)
        return record

    def _identity_and_geometry(self, record: FrameRecord, dest, swapped, face) -> None:
        box = self.analyzer.box_from_landmarks(face.landmarks)
        dest_points, dest_embedding = self.analyzer.analyse(dest, box)
        swap_points, swap_embedding = self.analyzer.analyse(swapped, box)
        record.sim_target = float(M.cosine_similarity(swap_embedding, self.mean_target)[0])
        record.sim_source = float(M.cosine_similarity(swap_embedding, self.mean_source)[0])
        record.retrieved = float(M.identity_retrieval(swap_embedding, self.mean_target, self.mean_source)[0])
        record.dest_sim_target = float(M.cosine_similarity(dest_embedding, self.mean_target)[0])
        record.dest_sim_source = float(M.cosine_similarity(dest_embedding, self.mean_source)[0])
        record.dest_retrieved = float(M.identity_retrieval(dest_embedding, self.mean_target, self.mean_source)[0])
        record.dist_target = float(np.linalg.norm(swap_embedding - self.mean_target))
        record.verified = float(M.verified(swap_embedding, self.mean_target, self.threshold)[0])
        record.dest_verified = float(M.verified(dest_embedding, self.mean_target, self.threshold)[0])
        record.dest_dist_target = float(np.linalg.norm(dest_embedding - self.mean_target))
        record.nme = M.landmark_nme(swap_points, dest_points)
        try:
            record.pose = M.pose_difference(swap_points, dest_points, dest.shape[:2])
        except ValueError:
            log.debug("frame %d: no head pose", record.index)


def _box(region: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(region)
    h, w = region.shape
    return (max(0, ys.min() - margin), min(h, ys.max() + margin + 1),
            max(0, xs.min() - margin), min(w, xs.max() + margin + 1))


class StripCollector:
    """Keeps face close-ups of a few evenly spread frames for the report's destination/swapped strip."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.wanted: set[int] = set()
        self.pairs: list[tuple[int, np.ndarray, np.ndarray]] = []

    def plan(self, indices: list[int]) -> None:
        self.wanted = {indices[i] for i in spread(len(indices), self.count)}

    def offer(self, index: int, dest: np.ndarray, swapped: np.ndarray, faces: list) -> None:
        face = main_face(faces)
        if index not in self.wanted or face is None:
            return
        y0, y1, x0, x1 = _box(face.region(dest.shape), 0)
        pad = (y1 - y0) // 4
        y0, y1 = max(0, y0 - pad), min(dest.shape[0], y1 + pad)
        x0, x1 = max(0, x0 - pad), min(dest.shape[1], x1 + pad)
        side = 192
        scale = side / max(1, y1 - y0)
        size = (max(1, round((x1 - x0) * scale)), side)
        self.pairs.append((index, cv2.resize(dest[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA),
                           cv2.resize(swapped[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)))


# --- the report ----------------------------------------------------------------------------------

def _mean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def build_report(options: EvaluateOptions, facts: dict, records: list[FrameRecord], refs: dict, threshold: float,
                 recon: dict, swap: SwapRun, seconds: float) -> dict:
    """The report as a JSON-able dict: headline figures in `summary`, details and per-frame series."""
    faced = [r for r in records if r.face]
    pose = np.array([r.pose for r in faced]).reshape(-1, 4)
    pose_mean = [_mean(pose[:, k]) for k in range(4)]
    warp_s = np.array([r.warp_swapped for r in records])
    warp_d = np.array([r.warp_destination for r in records])
    fps = swap.count / swap.seconds if swap.seconds > 0 else math.nan
    summary = {
        "id_retrieval": _mean(r.retrieved for r in faced),
        "id_verified": _mean(r.verified for r in faced),
        "id_similarity_target": _mean(r.sim_target for r in faced),
        "id_similarity_source": _mean(r.sim_source for r in faced),
        "id_similarity_target_real": _mean(M.leave_one_out_similarity(refs["b"])),
        "id_jitter": M.jitter([r.sim_target for r in faced]),
        "landmark_nme": _mean(r.nme for r in faced),
        "pose_error_deg": pose_mean[3],
        "ssim_a": recon["a"]["ssim"], "psnr_a": recon["a"]["psnr"],
        "ssim_b": recon["b"]["ssim"], "psnr_b": recon["b"]["psnr"],
        "sharpness_ratio": _mean(r.sharpness for r in faced),
        "seam_score": _mean(r.seam for r in faced),
        "flicker": M.flicker_ratio(warp_s, warp_d),
        "seconds": swap.seconds, "fps": fps,
    }
    return {
        "status": "done",
        "model": str(options.model), "video": str(options.video),
        "model_facts": facts,
        "frames": {"measured": len(records), "with_face": len(faced), "sampled": swap.output is None,
                   "clips": [[c[0], c[-1]] for c in swap.clips]},
        "summary": summary,
        "identity": {
            "faces_a": len(refs["a"]), "faces_b": len(refs["b"]),
            "real_b_leave_one_out": summary["id_similarity_target_real"],
            "real_a_leave_one_out": _mean(M.leave_one_out_similarity(refs["a"])),
            "destination_similarity_target": _mean(r.dest_sim_target for r in faced),
            "destination_similarity_source": _mean(r.dest_sim_source for r in faced),
            "destination_retrieval": _mean(r.dest_retrieved for r in faced),
            "destination_verified": _mean(r.dest_verified for r in faced),
            "verification_threshold": threshold,
            "distance_target": _mean(r.dist_target for r in faced),
            "destination_distance_target": _mean(r.dest_dist_target for r in faced),
            "distance_target_real": _mean(M.leave_one_out_distance(refs["b"])),
        },
        "pose_error_deg": dict(zip(("yaw", "pitch", "roll", "angle"), pose_mean, strict=True)),
        "reconstruction": recon,
        "temporal": {"flicker": summary["flicker"], "warping_error_swapped": _mean(warp_s),
                     "warping_error_destination": _mean(warp_d),
                     "pairs": int(np.sum(np.isfinite(warp_s) & np.isfinite(warp_d)))},
        "speed": {"seconds": swap.seconds, "fps": fps, "frames": swap.count, "what": swap.what,
                  "stages": swap.stages, "output": swap.output},
        "evaluation_seconds": seconds,
        "per_frame": {
            "index": [r.index for r in records],
            "id_similarity_target": [r.sim_target for r in records],
            "id_similarity_source": [r.sim_source for r in records],
            "destination_similarity_target": [r.dest_sim_target for r in records],
            "destination_similarity_source": [r.dest_sim_source for r in records],
            "landmark_nme": [r.nme for r in records],
            "pose_error_deg": [float(r.pose[3]) for r in records],
            "sharpness_ratio": [r.sharpness for r in records],
            "seam_score": [r.seam for r in records],
            "warping_error_swapped": [r.warp_swapped for r in records],
            "warping_error_destination": [r.warp_destination for r in records],
        },
    }
