"""The provenance watermark (issues 14 and 24): how visible it is, how well it reads after re-encoding,
JPEG, scaling and cropping, and what it costs in swap speed; prints one JSON line.

    python bench/watermark.py [--model DIR] [--clips talk1,talk2,talk3] [--frames 60] [--repeats 3]
                              [--methods iss,dwtDct,dwtDctSvd,rivaGan] [--method-clip talk2]
                              [--method-frames 16] [--method-size 256] [--threads 1] [--out DIR]

Per clip (the first `--frames` frames of each talk video, copied losslessly to a temporary MP4 so
that every swap below sees the same short video):

- PSNR of the mark: the clip is swapped twice through `Swapper` + `swap_frames`, watermark on and off
  (same settings, default Poisson blend), and the marked frames are compared with the unmarked
  ones over the swapped face region (`SwappedFace.region`); pixels outside it must not change.
- Visibility (issue 24): Chou-Li's JND of the unmarked frame (`engine.provenance.jnd`): the share of
  8x8 blocks of the swapped region where the mark changes a pixel by more than the JND (pooled over
  frames, and the worst frame), the largest change on flat pixels (local std < 2 grey levels), and
  the mark's own signal at the landmarks it was made at (`mark_snr`, in the reader's noise deviations).
  `--out DIR` saves unmarked | marked | 128 + 10 x difference at 2x, nearest neighbour, per clip.
- Speed: `swap_video` to a temporary MP4, on and off alternately (on-off, off-on, ...), `--repeats`
  times each; the median fps of each and the cost, plus the `mark` stage's ms per frame.
- Robustness: the marked MP4 (as a user gets it: libx264 CRF 18) is decoded and attacked: `none`,
  H.264 re-encode at CRF 23 and 28 (PyAV, libx264 preset medium), JPEG quality 75 per frame,
  half size (INTER_AREA), `crop10` (5 % off each side: 10 % of width and height, centred) and
  `crop10-corner` (10 % off the left and the top); and a re-upload's steps one after another (issue
  24): `half-crf28`, `crop10-crf28`, `half-crop10-crf28`, and `trim13-crf28` (the first 13 frames cut
  off, then CRF 28: the reader must find the code's offset). `--repeats 0` skips the timing and writes
  the marked and unmarked outputs at CRF 18 directly. Each attacked frame's faces are detected again
  (MTCNN at 480 px), the largest is read, and what it says is compared with `payload_for(model_id)`:
  per frame (mean and min over frames with a detected face of the share of its 32 soft symbols whose
  sign is `watermark.symbols` of its frame) and per clip as `verify` reads a video (`watermark.weigh`
  then `watermark.combine`: the clip decoded whole over every model tag, at the best of TRIM_SEARCH
  code offsets; `exact` when that is the whole payload; `statistic` and `chance`, the bound on an
  unmarked clip reading as well; `margin_min`, the weakest bit's margin, signed so that > 0 is right).
  One face of a video is never decoded alone, so `found_rate` is 0. `raw` reads the marked frames
  before any encoding.
- False positives: the unmarked output MP4 read the same way (bit accuracy about 0.5, not found).

`--methods` adds a comparison on `--method-frames` frames of `--method-clip`: each method marks the
unmarked swap's face in the same place, an aligned crop at the mark's geometry (`--method-size` px,
coverage `watermark.MARK_COVERAGE`), its residual pasted back under the swap's own blend mask;
reading re-detects the face and aligns the same crop. `iss` is ours (`watermark.embed` and
`read_face`, 128 px); `dwtDct`, `dwtDctSvd` and `rivaGan` are the `invisible-watermark` package's
(`EmbedMaxDct`, `EmbedDwtDctSvd` with their default scales and 4 px blocks; `RivaWatermark` through
onnxruntime at one thread), which give hard bits only: their per-clip figure is a majority vote
over frames. `raw-same` reads the raw marked frames at the very landmarks the mark was made at (no
re-detection): what each method does when the geometry is exact.

Without `--model` a `lite` model is trained for 300 iterations on talk2 and Carell's photos first
(about 2 minutes), as tests/conftest.py's `tiny_model` does; its weights make real faces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.faces import align  # noqa: E402
from engine.provenance import jnd, watermark  # noqa: E402
from engine.provenance.record import PAYLOAD_BITS, payload_bits, payload_for  # noqa: E402
from engine.swap.pipeline import SwappedFace, Swapper  # noqa: E402
from engine.swap.settings import SwapSettings  # noqa: E402
from engine.swap.video import swap_frames, swap_video  # noqa: E402
from engine.video_reader import probe_video, read_frames  # noqa: E402
from engine.video_writer import TimedVideoWriter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ATTACKS = ("raw", "none", "crf23", "crf28", "jpeg75", "half", "crop10", "crop10-corner", "half-crf28", "crop10-crf28",
           "half-crop10-crf28", "trim13-crf28")
CHAINS = {"half-crf28": ("half", "crf28"), "crop10-crf28": ("crop10", "crf28"),
          "half-crop10-crf28": ("half", "crop10", "crf28"),  # issue 24: a re-upload, one step after another
          "trim13-crf28": ("trim13", "crf28")}  # the first 13 frames cut off: the reader searches the code's offset
UPLOAD_ATTACKS = ("crf28", "half-crf28", "crop10-crf28", "half-crop10-crf28", "jpeg75", "trim13-crf28")  # issue 24's list
METHOD_ATTACKS = ("self", "raw-same", "raw", "none", "crf23", "crf28", "jpeg75", "half", "crop10")
METHODS = ("iss", "dwtDct", "dwtDctSvd", "rivaGan")
DETECT_BATCH = 8
GOAL_ACCURACY, GOAL_COST_PCT, GOAL_PSNR = 0.95, 5.0, 40.0
GOAL_BLOCKS_OVER_JND, GOAL_FLAT_MAX = 0.01, 2.0  # issue 24: share of 8x8 face blocks over Chou-Li's JND; levels
GOAL_ATTACKS = ("crf23", "crf28", "jpeg75", "half", "crop10")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def code_state() -> dict:
    """Which watermark.py was measured: the tree's commit and the file's own hash (others edit it)."""
    import hashlib
    import subprocess

    source = Path(watermark.__file__)
    state = {"watermark_py": str(source), "watermark_py_sha256": hashlib.sha256(source.read_bytes()).hexdigest()[:12]}
    try:
        git = ["git", "-C", str(source.parent)]
        state["git_head"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           check=True).stdout.strip()
        state["watermark_py_modified"] = bool(subprocess.run(git + ["status", "--porcelain", source.name],
                                                             capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        state["git_head"] = None  # an exported tree (git archive): the hash says which version it is
    return state


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
            "numpy": np.__version__, "numpy_blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            "blas_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                         if k in os.environ},
            "python": platform.python_version()}


# ---------------------------------------------------------------- videos and attacks


def write_video(frames: list[np.ndarray], path: Path, times, crf: int, preset: str = "veryfast") -> Path:
    """Frames to an H.264 MP4 at `times` (a FrameTimes), libx264 at `crf` (0: lossless)."""
    h, w = frames[0].shape[:2]
    writer = TimedVideoWriter(path, w, h, time_base=times.time_base or Fraction(1, 90_000), crf=crf, preset=preset)
    try:
        for i, frame in enumerate(frames):
            writer.write(frame, times.time_of(i))
        writer.close(times.duration_of(len(frames) - 1))
    except BaseException:
        writer.abort()
        raise
    return path


def decoded(path: Path) -> list[np.ndarray]:
    return [rgb for _, rgb in read_frames(probe_video(path))]


def trimmed(source: Path, frames: int | None, tmp: Path) -> Path:
    """`source`'s first `frames` frames as a lossless MP4 with the source's frame times (no audio);
    the source itself when it has no more."""
    info = probe_video(source)
    if frames is None or frames >= info.frames:
        return source
    kept = []
    for index, rgb in read_frames(info):
        if index >= frames:
            break
        kept.append(rgb)
    return write_video(kept, tmp / f"{source.stem}-{frames}.mp4", info.times, crf=0)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def attack(name: str, frames: list[np.ndarray], mp4: Path, tmp: Path) -> list[np.ndarray]:
    """`frames` (decoded from `mp4`) after the attack `name`."""
    if name == "none":
        return frames
    if name in CHAINS:
        for step in CHAINS[name]:
            frames = attack(step, frames, mp4, tmp)
        return frames
    if name.startswith("crf"):
        out = tmp / f"{mp4.stem}-{name}.mp4"
        return decoded(write_video(frames, out, probe_video(mp4).times, crf=int(name[3:]), preset="medium"))
    if name == "jpeg75":
        return [jpeg(f, 75) for f in frames]
    if name.startswith("trim"):  # the first N frames cut off
        return frames[int(name[4:]):]
    if name == "half":
        return [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in frames]
    if name == "crop10":  # 5 % off each side
        h, w = frames[0].shape[:2]
        dy, dx = round(0.05 * h), round(0.05 * w)
        return [np.ascontiguousarray(f[dy:h - dy, dx:w - dx]) for f in frames]
    if name == "crop10-corner":  # 10 % off the left and the top
        h, w = frames[0].shape[:2]
        return [np.ascontiguousarray(f[round(0.1 * h):, round(0.1 * w):]) for f in frames]
    raise ValueError(name)


def largest_faces(detector, frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """Landmarks of each frame's largest detected face (None where none is found)."""
    out = []
    for k in range(0, len(frames), DETECT_BATCH):
        for faces in detector.detect(frames[k:k + DETECT_BATCH]):
            out.append(max(faces, key=lambda f: f.area).landmarks if faces else None)
    return out


# ---------------------------------------------------------------- reading


def summarise(accuracies: list[float], found: list[bool], frames: int, clip_accuracy: float, clip_found: bool,
              extra: dict | None = None) -> dict:
    return {"frames": frames, "detected": len(accuracies),
            "per_frame": {"mean": round(float(np.mean(accuracies)), 4) if accuracies else None,
                          "min": round(float(np.min(accuracies)), 4) if accuracies else None},
            "found_rate": round(sum(found) / frames, 4),
            "clip": {"bit_accuracy": round(clip_accuracy, 4), "found": bool(clip_found), **(extra or {})}}


def read_iss(frames: list[np.ndarray], landmarks: list[np.ndarray | None], payload: int) -> dict:
    """Our mark, read per frame (the share of a face's 32 symbols whose sign is right, `watermark.symbols` of
    its position in the attacked clip) and over the clip as `verify` reads a video (`watermark.combine`:
    the clip's faces decoded whole, at the best of the code offsets 0..TRIM_SEARCH-1)."""
    indices, crops = [], []
    started = time.perf_counter()
    for index, (frame, points) in enumerate(zip(frames, landmarks, strict=True)):
        if points is not None:
            indices.append(index)
            crops.append(watermark.face_crop(frame, points))
    soft = watermark.weigh(crops)
    read_ms = 1000 * (time.perf_counter() - started) / max(1, len(crops))
    accuracies = [float(np.mean(np.sign(s) == watermark.symbols(i, payload))) for i, s in zip(indices, soft, strict=True)]
    found = [False] * len(frames)  # one face of a video is never decoded alone
    started = time.perf_counter()
    clip = watermark.combine(zip(indices, soft, strict=True))
    combine_ms = 1000 * (time.perf_counter() - started)
    signs = 2 * np.array(payload_bits(payload)) - 1
    margin = None if clip.margin is None else clip.margin * signs  # > 0: the bit is right
    return summarise(accuracies, found, len(frames), clip.bit_accuracy(payload), clip.found,
                     {"exact": clip.payload == payload and clip.faces > 0, "faces": clip.faces,
                      "coded": clip.coded, "offset": clip.offset,
                      "statistic": None if clip.statistic is None else round(clip.statistic, 2),
                      "chance": float(f"{clip.chance:.3g}"), "signature_agreement": clip.signature_agreement,
                      "margin_min": None if margin is None else round(float(margin.min()), 2),
                      "margin_mean": None if margin is None else round(float(margin.mean()), 2),
                      "read_ms_per_face": round(read_ms, 1), "combine_ms": round(combine_ms, 1)})


def mark_snr(marked: list[np.ndarray], unmarked: list[np.ndarray], faces: list[list[SwappedFace]],
             payload: int) -> dict:
    """The mark's own strength at the landmarks it was made at (no re-detection): each face's soft bits
    (`watermark.read_face`, in noise deviations) times the payload's signs, marked and unmarked; the
    marked mean less the unmarked is what one face contributes to a clip's vote, the unmarked spread is
    the face's own noise."""
    on, off = [], []
    for index, (a, b, placed) in enumerate(zip(marked, unmarked, faces, strict=True)):
        for face in placed:
            c = watermark.symbols(index, payload)
            on.append(watermark.read_face(a, face.landmarks) * c)
            off.append(watermark.read_face(b, face.landmarks) * c)
    if not on:
        return {}
    on, off = np.array(on), np.array(off)
    return {"faces": len(on), "marked_mean": round(float(on.mean()), 3), "unmarked_mean": round(float(off.mean()), 3),
            "unmarked_std": round(float(off.std()), 3), "snr_per_bit": round(float((on - off).mean() / off.std()), 3),
            "unmarked_coded_mean_rms": round(float(np.sqrt(np.square(off.mean(axis=0)).mean())), 3)}


def mark_visibility(marked: list[np.ndarray], unmarked: list[np.ndarray], faces: list[list[SwappedFace]]) -> dict:
    """Chou-Li JND figures of the mark per frame (`jnd.visibility` over the swapped region): the share
    of 8x8 face blocks over the JND pooled over frames and its worst frame, the largest change on flat
    pixels (local std < 2) and anywhere, and the mean change."""
    rows = []
    for a, b, placed in zip(marked, unmarked, faces, strict=True):
        region = np.zeros(a.shape[:2], dtype=bool)
        for face in placed:
            region |= face.region(a.shape)
        if region.any():
            rows.append(jnd.visibility(b, a, region))
    if not rows:
        return {}
    blocks, over = sum(r["blocks"] for r in rows), sum(r["blocks_over_jnd"] for r in rows)
    return {"frames": len(rows), "blocks": blocks, "blocks_over_jnd": over,
            "share_blocks_over_jnd": round(over / max(blocks, 1), 5),
            "worst_frame_share": round(max(r["share_blocks_over_jnd"] for r in rows), 5),
            "pixels_over_jnd_share": round(float(np.mean([r["pixels_over_jnd_share"] for r in rows])), 6),
            "max_change_flat": max(r["max_change_flat"] for r in rows),
            "flat_share": round(float(np.mean([r["flat_share"] for r in rows])), 4),
            "max_change": max(r["max_change"] for r in rows),
            "mean_change": round(float(np.mean([r["mean_change"] for r in rows])), 3),
            "max_change_over_jnd": round(max(r["max_change_over_jnd"] for r in rows), 3)}


def psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10 * np.log10(255.0 ** 2 / mse)


def mark_psnr(marked: list[np.ndarray], unmarked: list[np.ndarray], faces: list[list[SwappedFace]]) -> dict:
    """PSNR of marked vs unmarked frames over the swapped region; pixels changed outside it."""
    per_frame, squared, count, outside = [], 0.0, 0, 0
    for a, b, placed in zip(marked, unmarked, faces, strict=True):
        region = np.zeros(a.shape[:2], dtype=bool)
        for face in placed:
            region |= face.region(a.shape)
        diff = a.astype(np.float64) - b.astype(np.float64)
        outside += int(np.count_nonzero(np.abs(diff).max(axis=2)[~region]))
        if not region.any():
            continue
        se = np.square(diff[region])
        per_frame.append(psnr(float(se.mean())))
        squared, count = squared + float(se.sum()), count + se.size
    return {"mean": round(float(np.mean(per_frame)), 2), "min": round(float(np.min(per_frame)), 2),
            "pooled": round(psnr(squared / max(count, 1)), 2), "frames": len(per_frame),
            "pixels_changed_outside_region": outside}


# ---------------------------------------------------------------- swapping


def swapped(swapper: Swapper, clip: Path, mark: bool) -> tuple[list[np.ndarray], list[list[SwappedFace]]]:
    swapper.update(watermark=mark)
    frames, faces = [], []
    for batch in swap_frames(swapper, probe_video(clip)):
        frames.extend(f.swapped for f in batch)
        faces.extend(f.faces for f in batch)
    return frames, faces


def timed(swapper: Swapper, clip: Path, out: Path, mark: bool) -> dict:
    swapper.update(watermark=mark)
    before = load()
    report = swap_video(swapper, clip, out)
    return {"watermark": mark, "fps": round(report.fps, 2), "frames": report.frames,
            "mark_ms_per_frame": round(1000 * report.stages.get("mark", 0.0) / max(report.frames, 1), 2),
            "load_before": before}


def speed(swapper: Swapper, clip: Path, tmp: Path, repeats: int) -> tuple[dict, Path, Path]:
    """Alternating on/off `swap_video` runs; also returns the first marked and unmarked outputs."""
    runs, outputs = [], []
    for r in range(repeats):
        for mark in ((True, False) if r % 2 == 0 else (False, True)):
            outputs.append(tmp / f"{clip.stem}-{'on' if mark else 'off'}-{r}.mp4")
            runs.append(timed(swapper, clip, outputs[-1], mark))
    on = [x["fps"] for x in runs if x["watermark"]]
    off = [x["fps"] for x in runs if not x["watermark"]]
    fps_on, fps_off = float(np.median(on)), float(np.median(off))
    mark_ms = float(np.median([x["mark_ms_per_frame"] for x in runs if x["watermark"]]))
    figures = {"repeats": repeats, "order": "on,off then off,on alternately", "fps_on": on, "fps_off": off,
               "fps_on_median": round(fps_on, 2), "fps_off_median": round(fps_off, 2),
               "cost_pct": round(100 * (1 - fps_on / fps_off), 2),
               "mark_ms_per_frame": round(mark_ms, 2),
               "mark_share_pct": round(100 * mark_ms / (1000 / fps_off), 2),  # of an unmarked frame's time
               "runs": runs}
    first_on = next(path for path, x in zip(outputs, runs, strict=True) if x["watermark"])
    first_off = next(path for path, x in zip(outputs, runs, strict=True) if not x["watermark"])
    return figures, first_on, first_off


# ---------------------------------------------------------------- the invisible-watermark package


class LibraryMark:
    """One of `invisible-watermark`'s methods on an aligned face crop (RGB in, RGB out; hard bits)."""

    def __init__(self, method: str, bits: list[int]) -> None:
        self.method = method
        if method == "rivaGan":
            import onnxruntime
            from imwatermark.rivaGan import RivaWatermark

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1  # one core, as the swap's torch
            folder = Path(sys.modules[RivaWatermark.__module__].__file__).parent
            for part in ("encoder", "decoder"):  # loadModel() keeps sessions already set
                setattr(RivaWatermark, part, onnxruntime.InferenceSession(
                    str(folder / f"rivagan_{part}.onnx"), options, providers=["CPUExecutionProvider"]))
            RivaWatermark.loadModel()
            self.encoder, self.decoder = RivaWatermark(bits, 32), RivaWatermark([], 32)
        else:
            from imwatermark.dwtDctSvd import EmbedDwtDctSvd
            from imwatermark.maxDct import EmbedMaxDct

            cls = EmbedMaxDct if method == "dwtDct" else EmbedDwtDctSvd
            self.encoder, self.decoder = cls(bits, wmLen=PAYLOAD_BITS), cls([], wmLen=PAYLOAD_BITS)

    def embed(self, crop: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(crop[..., ::-1])
        return np.ascontiguousarray(self.encoder.encode(bgr)[..., ::-1])

    def read(self, crop: np.ndarray) -> np.ndarray:
        return np.asarray(self.decoder.decode(np.ascontiguousarray(crop[..., ::-1]))).astype(int).ravel()


def mask_alpha(face: SwappedFace, coverage: float, size: int) -> np.ndarray:
    """The swap's blend mask in an aligned crop of `size` at the mark's coverage (as the pipeline does)."""
    to_mark = align.recrop_matrix(face.mask.shape[0], coverage, size, watermark.MARK_COVERAGE)
    return cv2.warpAffine(face.mask, to_mark, (size, size), flags=cv2.INTER_AREA)


def paste_residual(frame: np.ndarray, residual: np.ndarray, matrix: np.ndarray) -> None:
    """Add an (S, S, 3) residual of the aligned crop back onto the frame's pixels under it, in place."""
    h, w = frame.shape[:2]
    delta = cv2.warpAffine(residual, align.invert(matrix), (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    frame[:] = np.clip(np.rint(frame.astype(np.float32) + delta), 0, 255).astype(np.uint8)


def compare_methods(swapper: Swapper, clip: Path, methods: list[str], size: int, tmp: Path) -> dict:
    """Each method marks the unmarked swap's faces in the same place and is read after each attack."""
    payload = payload_for(swapper.model_id)
    bits = payload_bits(payload)
    unmarked, faces = swapped(swapper, clip, mark=False)
    n = sum(len(placed) for placed in faces)
    times = probe_video(clip).times
    results = {}
    for method in methods:
        lib = None if method == "iss" else LibraryMark(method, bits)
        if lib is None:  # ours as the swap applies it (the pipeline's `mark` stage times it)
            marked, marked_faces = swapped(swapper, clip, mark=True)
            assert [len(p) for p in marked_faces] == [len(p) for p in faces]
            spent = swapper.clock.seconds.get("mark", 0.0)
        else:
            marked, spent, own = [], 0.0, []
            for frame, placed in zip(unmarked, faces, strict=True):
                out = frame.copy()
                for face in placed:
                    started = time.perf_counter()
                    matrix = align.alignment_matrix(face.landmarks, size, watermark.MARK_COVERAGE)
                    crop = align.warp_face(out, matrix, size)
                    out_crop = lib.embed(crop)
                    residual = out_crop.astype(np.float32) - crop.astype(np.float32)
                    own.append(out_crop)
                    paste_residual(out, residual * mask_alpha(face, swapper.coverage, size)[..., None], matrix)
                    spent += time.perf_counter() - started
                marked.append(out)
        mp4 = write_video(marked, tmp / f"{method}-marked.mp4", times, crf=18)
        user = decoded(mp4)
        entry = {"crop_px": watermark.MARK_SIZE if lib is None else size,
                 "embed_ms_per_face": round(1000 * spent / max(n, 1), 1),
                 "psnr_db": mark_psnr(marked, unmarked, faces), "attacks": {}}
        read_spent, reads = 0.0, 0
        for name in METHOD_ATTACKS:
            if name == "self":  # the method's own marked crop, before it is pasted: its ceiling
                if lib is None:
                    continue
                got = [lib.read(c) for c in own]
                accuracies = [float(np.mean(g == np.array(bits))) for g in got]
                votes = np.sum([2 * g - 1 for g in got], axis=0)
                clip_accuracy = float(np.mean((votes > 0).astype(int) == np.array(bits)))
                entry["attacks"][name] = summarise(accuracies, [a == 1.0 for a in accuracies], len(own),
                                                   clip_accuracy, clip_accuracy == 1.0)
                continue
            if name == "raw-same":
                frames, points = marked, [p[0].landmarks if p else None for p in faces]
            else:
                frames = marked if name == "raw" else attack(name, user, mp4, tmp)
                points = largest_faces(swapper.detector, frames)
            if lib is None:
                entry["attacks"][name] = read_iss(frames, points, payload)
                continue
            accuracies, votes = [], np.zeros(PAYLOAD_BITS)
            for frame, p in zip(frames, points, strict=True):
                if p is None:
                    continue
                matrix = align.alignment_matrix(p, size, watermark.MARK_COVERAGE)
                started = time.perf_counter()
                got = lib.read(align.warp_face(frame, matrix, size))
                read_spent, reads = read_spent + time.perf_counter() - started, reads + 1
                accuracies.append(float(np.mean(got == np.array(bits))))
                votes += 2 * got - 1
            clip_bits = (votes > 0).astype(int)
            clip_accuracy = float(np.mean(clip_bits == np.array(bits))) if accuracies else 0.0
            # the library has no signature test: "found" here means every bit right
            entry["attacks"][name] = summarise(accuracies, [a == 1.0 for a in accuracies] +
                                               [False] * (len(frames) - len(accuracies)), len(frames),
                                               clip_accuracy, clip_accuracy == 1.0)
        if lib is not None:
            entry["read_ms_per_face"] = round(1000 * read_spent / max(reads, 1), 1)
        results[method] = entry
    return {"clip": clip.name, "frames": len(unmarked), "library_crop_px": size, "results": results}


# ---------------------------------------------------------------- the PNG strip


def save_strip(out_dir: Path, name: str, marked: np.ndarray, unmarked: np.ndarray, face: SwappedFace) -> Path:
    """unmarked | marked | 128 + 10 x (marked - unmarked) around one face with a margin, each at 2x
    (nearest neighbour, so every pixel the mark changed is seen as it is)."""
    region = face.region(marked.shape)
    ys, xs = np.nonzero(region)
    cx, cy, half = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, 0.6 * max(np.ptp(xs), np.ptp(ys))
    h, w = marked.shape[:2]
    x0, x1 = int(max(cx - half, 0)), int(min(cx + half, w))
    y0, y1 = int(max(cy - half, 0)), int(min(cy + half, h))
    a, b = unmarked[y0:y1, x0:x1], marked[y0:y1, x0:x1]
    diff = np.clip(128 + 10 * (b.astype(np.float32) - a.astype(np.float32)), 0, 255).astype(np.uint8)
    gap = np.full((a.shape[0], 4, 3), 255, dtype=np.uint8)
    strip = np.concatenate([a, gap, b, gap, diff], axis=1)
    strip = cv2.resize(strip, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"watermark-{name}.png"
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return path


# ---------------------------------------------------------------- a model when none is given


def tiny_model(tmp: Path, data: Path) -> Path:
    from engine.faces.detectors import build_detector
    from engine.faces.extract import ExtractOptions, extract
    from engine.train import TrainConfig, train

    detector = build_detector("mtcnn")
    extract([data / "video" / "talk2.mp4"], tmp / "A", ExtractOptions(every=3), detector=detector)
    extract(sorted((data / "people" / "carell").glob("*.jpg"))[:48], tmp / "B", ExtractOptions(), detector=detector)
    folder = tmp / "model"
    result = train(TrainConfig(faces_a=str(tmp / "A"), faces_b=str(tmp / "B"), model_dir=str(folder), preset="lite",
                               device="cpu", batch_size=8, iterations=300, save_every=300, preview_every=0))
    assert result.status == "done", result
    return folder


# ---------------------------------------------------------------- main


def run_clip(swapper: Swapper, source: Path, frames: int | None, repeats: int, attacks: list[str], tmp: Path,
             out_dir: Path | None) -> dict:
    payload = payload_for(swapper.model_id)
    clip = trimmed(source, frames, tmp)
    info = probe_video(clip)
    marked, faces = swapped(swapper, clip, mark=True)
    unmarked, faces_off = swapped(swapper, clip, mark=False)
    assert all(len(a) == len(b) for a, b in zip(faces, faces_off, strict=True))
    result = {"clip": source.name, "size": f"{info.width}x{info.height}", "frames": len(marked),
              "frames_with_faces": sum(1 for f in faces if f), "psnr_db": mark_psnr(marked, unmarked, faces),
              "visibility": mark_visibility(marked, unmarked, faces),
              "mark_snr": mark_snr(marked, unmarked, faces, payload)}
    sizes = [max(np.ptp(f.region(marked[0].shape).nonzero()[1]), 1) for placed in faces for f in placed[:1]]
    result["face_width_px"] = {"median": int(np.median(sizes)), "min": int(np.min(sizes))} if sizes else None
    if out_dir is not None:
        middle = next(i for i in range(len(faces) // 2, len(faces)) if faces[i])
        result["strip"] = str(save_strip(out_dir, source.stem, marked[middle], unmarked[middle], faces[middle][0]))
        # the code flips every CODE_BLOCK frames: the two frames either side of a flip, marked, side by side
        flip = watermark.CODE_BLOCK * (middle // watermark.CODE_BLOCK + 1)
        if flip < len(faces) and faces[flip - 1] and faces[flip]:
            result["strip_flip"] = str(save_strip(out_dir, f"{source.stem}-flip{flip - 1}-{flip}", marked[flip],
                                                  marked[flip - 1], faces[flip][0]))
    print(json.dumps({"clip": source.stem, "load": load(), **{k: result[k] for k in
                      ("frames", "face_width_px", "psnr_db", "visibility", "mark_snr")}}), file=sys.stderr, flush=True)
    if repeats > 0:
        result["speed"], on_mp4, off_mp4 = speed(swapper, clip, tmp, repeats)
    else:  # no timing: the outputs as a user gets them (the swap's writer: libx264 CRF 18)
        on_mp4 = write_video(marked, tmp / f"{source.stem}-on.mp4", info.times, crf=18)
        off_mp4 = write_video(unmarked, tmp / f"{source.stem}-off.mp4", info.times, crf=18)
    user = decoded(on_mp4)
    result["attacks"] = {"raw": read_iss(marked, largest_faces(swapper.detector, marked), payload)} \
        if "raw" in attacks else {}
    del marked, unmarked
    for name in (a for a in attacks if a != "raw"):
        frames_attacked = attack(name, user, on_mp4, tmp)
        result["attacks"][name] = read_iss(frames_attacked, largest_faces(swapper.detector, frames_attacked),
                                           payload)
        print(json.dumps({"clip": source.stem, "attack": name, "load": load(), **result["attacks"][name]}),
              file=sys.stderr, flush=True)
    plain = decoded(off_mp4)
    result["unmarked"] = read_iss(plain, largest_faces(swapper.detector, plain), payload)
    print(json.dumps({"clip": source.stem, "attack": "unmarked output", "load": load(), **result["unmarked"]}),
          file=sys.stderr, flush=True)
    return result


def goals(clips: list[dict]) -> dict:
    """Each goal of issue 14 (where its attacks and timings were run) and issue 24 against the worst clip."""
    out = {}
    for name in GOAL_ATTACKS:
        if not all(name in c["attacks"] for c in clips):
            continue
        frame = min(c["attacks"][name]["per_frame"]["mean"] or 0.0 for c in clips)
        clip = min(c["attacks"][name]["clip"]["bit_accuracy"] for c in clips)
        out[f"bit_accuracy_{name}"] = {"goal": GOAL_ACCURACY, "worst_clip_per_frame_mean": frame,
                                       "worst_clip_per_clip": clip, "met_per_frame": frame >= GOAL_ACCURACY,
                                       "met_per_clip": clip >= GOAL_ACCURACY}
    if all("speed" in c for c in clips):
        on = sum(c["speed"]["fps_on_median"] for c in clips)
        off = sum(c["speed"]["fps_off_median"] for c in clips)
        worst_cost = max(c["speed"]["cost_pct"] for c in clips)
        share = max(c["speed"]["mark_share_pct"] for c in clips)
        out["fps_cost_pct"] = {"goal": GOAL_COST_PCT, "worst_clip": worst_cost,
                               "all_clips": round(100 * (1 - on / off), 2), "worst_mark_share_pct": share,
                               "met": worst_cost <= GOAL_COST_PCT}
    worst = min(c["psnr_db"]["min"] for c in clips)
    out["psnr_db"] = {"goal": GOAL_PSNR, "worst_frame": worst,
                      "worst_clip_mean": min(c["psnr_db"]["mean"] for c in clips), "met": worst >= GOAL_PSNR}
    share = max(c["visibility"]["share_blocks_over_jnd"] for c in clips)
    flat = max(c["visibility"]["max_change_flat"] for c in clips)
    out["issue24_blocks_over_jnd"] = {"goal": GOAL_BLOCKS_OVER_JND, "worst_clip": share,
                                      "worst_frame": max(c["visibility"]["worst_frame_share"] for c in clips),
                                      "met": share < GOAL_BLOCKS_OVER_JND}
    out["issue24_max_change_flat"] = {"goal": GOAL_FLAT_MAX, "worst_clip": flat, "met": flat <= GOAL_FLAT_MAX}
    for name in UPLOAD_ATTACKS:
        if all(name in c["attacks"] for c in clips):
            out[f"issue24_exact_{name}"] = {
                "clips_exact_all_frames": [c["clip"] for c in clips if c["attacks"][name]["clip"]["exact"]],
                "clips_found": [c["clip"] for c in clips if c["attacks"][name]["clip"]["found"]],
                "met": all(c["attacks"][name]["clip"]["exact"] for c in clips)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a trained model folder (default: train a lite one for 300 its)")
    p.add_argument("--clips", default="talk1,talk2,talk3", help="talk videos of ../shared/data/video ('' skips)")
    p.add_argument("--frames", type=int, default=None, help="the first N frames of each clip (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="timed swaps per clip with the mark on, and off (0: none)")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help="attacks on each clip's marked MP4 ('' : none, for a speed-only run)")
    p.add_argument("--methods", default="iss", help=f"comparison of {','.join(METHODS)} ('iss' alone: none)")
    p.add_argument("--method-clip", default="talk2")
    p.add_argument("--method-frames", type=int, default=16)
    p.add_argument("--method-size", type=int, default=256, help="px of the library methods' aligned crop")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; see docs/benchmarks.md)")
    p.add_argument("--out", type=Path, help="save a PNG strip per clip (unmarked | marked | 10x difference)")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: ../shared/data)")
    args = p.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    attacks = [a for a in args.attacks.split(",") if a]
    if set(attacks) - set(ATTACKS):
        p.error(f"--attacks: choose from {', '.join(ATTACKS)}")
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    result = {"bench": "watermark", "load_avg_before": load(), "machine": machine(), "code": code_state(),
              "detector": "mtcnn 480 px",
              "settings": "SwapSettings() defaults (Poisson blend, auto colour), detect every frame, smooth 0.5",
              "frames_per_clip": args.frames}
    with tempfile.TemporaryDirectory(prefix="wmbench-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or tiny_model(tmp, args.data)
        swapper = Swapper(model, SwapSettings(), device="cpu", detector="mtcnn")
        result.update({"model": str(args.model or "lite, 300 iterations (trained by the bench)"),
                       "model_id": swapper.model_id[:12], "payload": f"{payload_for(swapper.model_id):08x}",
                       "mark": {"size": watermark.MARK_SIZE, "cell": watermark.CELL, "jnd_share": watermark.JND_SHARE,
                                "flat_cap": watermark.FLAT_CAP, "amplitude_max": watermark.AMPLITUDE_MAX,
                                "found_at": watermark.FOUND_AT}})
        clips = [c for c in args.clips.split(",") if c]
        result["clips"] = [run_clip(swapper, args.data / "video" / f"{c}.mp4", args.frames, args.repeats, attacks,
                                    tmp, args.out)
                           for c in clips]
        if result["clips"]:
            result["goals"] = goals(result["clips"])
        if methods != ["iss"]:
            clip = trimmed(args.data / "video" / f"{args.method_clip}.mp4", args.method_frames, tmp)
            result["methods"] = compare_methods(swapper, clip, methods, args.method_size, tmp)
    result["load_avg_after"] = load()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
