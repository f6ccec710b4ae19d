"""What flicker a face that cannot shimmer scores, by its sharpness: how far `evaluate`'s flicker reads blur.

`evaluate`'s flicker is the warping error of the swapped frames over the destination's (the flow from the
destination moves both; engine.evaluate.metrics.flicker_pair). Moving an image along a flow resamples it,
and resampling loses detail in proportion to how much there is, so a blurrier face has less warping error
even when it moves exactly with the destination. This measures that bias on the sampled runs `evaluate`
itself uses (20 frames in runs of 5, MTCNN, the blend mask of a 256 px aligned crop), with "swaps" that
cannot shimmer:

- `blur S`: the destination frame itself blurred (Gaussian, S px of the frame): it moves exactly with the
  destination, only blurrier;
- `round trip R` (`raw` or `smoothed` landmarks): the destination's own face cut at R px from its aligned
  crop and pasted back through the blend mask, as a perfect R px model would be pasted, at each frame's
  MTCNN landmarks or at the swap's One-Euro-smoothed ones (`--smooth`'s default).

Each row gives the sharpness ratio and the flicker `evaluate` would report for it.

    python bench/flicker_blur.py [--clips talk1,talk2] [--frames 20]

Prints one JSON line per clip and row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.evaluate import metrics as M  # noqa: E402 (after the path insert above)
from engine.evaluate.inputs import sample_clips  # noqa: E402 (after the path insert above)
from engine.evaluate.meter import FLOW_MARGIN, region_box  # noqa: E402 (after the path insert above)
from engine.faces import align  # noqa: E402 (after the path insert above)
from engine.faces.detectors import build_detector  # noqa: E402 (after the path insert above)
from engine.models import MODEL_COVERAGE  # noqa: E402 (after the path insert above)
from engine.swap.masks import blend_mask  # noqa: E402 (after the path insert above)
from engine.swap.settings import BLEND_SIZE, DETECT_SIZE, SwapSettings, VideoSettings  # noqa: E402
from engine.swap.smoothing import LandmarkSmoother, smoothing_params  # noqa: E402 (after the path insert above)
from engine.video_reader import probe_video, read_frames  # noqa: E402 (after the path insert above)

DATA = ROOT.parent / "shared" / "data"
BLURS = (0.5, 1.0, 1.5, 2.0, 3.0)
ROUND_TRIPS = (64, 128)
MASK = blend_mask(BLEND_SIZE, MODEL_COVERAGE, blur=SwapSettings.blur)


def round_trip(frame: np.ndarray, points: np.ndarray, side: int) -> np.ndarray:
    """`frame` with its face replaced by the face seen through `side` px, pasted through the blend mask."""
    matrix = align.alignment_matrix(points, BLEND_SIZE, MODEL_COVERAGE)
    small = align.warp_face(frame, align.alignment_matrix(points, side, MODEL_COVERAGE), side)
    face = cv2.resize(small, (BLEND_SIZE, BLEND_SIZE), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    h, w = frame.shape[:2]
    inverse = align.invert(matrix)
    face = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(MASK, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    return np.clip(np.rint(alpha * face + (1 - alpha) * frame), 0, 255).astype(np.uint8)


def measure(clip: Path, frames: int, detector) -> dict[str, dict[str, float]]:
    info = probe_video(clip)
    runs = sample_clips(info.frames, frames)
    wanted = {i for run in runs for i in run}
    decoded = {i: f for i, f in read_frames(clip) if i in wanted}
    makers = {f"blur {s:g}": (lambda frame, raw, smooth, s=s: cv2.GaussianBlur(frame, (0, 0), s)) for s in BLURS}
    for side in ROUND_TRIPS:
        makers[f"round trip {side} raw"] = lambda frame, raw, smooth, side=side: round_trip(frame, raw, side)
        makers[f"round trip {side} smoothed"] = lambda frame, raw, smooth, side=side: round_trip(frame, smooth, side)
    errors = {name: ([], []) for name in makers}
    sharp = {name: [] for name in makers}
    for run in runs:
        smoother = LandmarkSmoother(smoothing_params(VideoSettings.smooth), fps=info.fps)
        previous = None
        for tick, index in enumerate(run):
            frame = decoded[index]
            faces = detector.detect([frame])[0]
            if not faces:
                previous = None
                continue
            face = max(faces, key=lambda f: f.score)
            smooth = smoother(tick, face.box[None], [face.landmarks])[0]
            matrix = align.alignment_matrix(smooth, BLEND_SIZE, MODEL_COVERAGE)
            region = cv2.warpAffine((MASK > 0).astype(np.uint8), align.invert(matrix),
                                    (frame.shape[1], frame.shape[0]), flags=cv2.INTER_NEAREST) > 0
            made = {name: make(frame, face.landmarks, smooth) for name, make in makers.items()}
            dest_crop = align.warp_face(frame, matrix, BLEND_SIZE)
            for name, image in made.items():
                sharp[name].append(M.sharpness_ratio(align.warp_face(image, matrix, BLEND_SIZE), dest_crop, MASK))
            if previous is not None:
                prev_frame, prev_made, prev_region = previous
                y0, y1, x0, x1 = region_box(region | prev_region, FLOW_MARGIN)
                for name, image in made.items():
                    s, d = M.flicker_pair(prev_frame[y0:y1, x0:x1], frame[y0:y1, x0:x1],
                                          prev_made[name][y0:y1, x0:x1], image[y0:y1, x0:x1], region[y0:y1, x0:x1])
                    errors[name][0].append(s)
                    errors[name][1].append(d)
            previous = (frame, made, region)
    return {name: {"sharpness_ratio": round(float(np.nanmean(sharp[name])), 3),
                   "flicker": round(M.flicker_ratio(*map(np.array, errors[name])), 3),
                   "pairs": len(errors[name][0])} for name in makers}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", default="talk1,talk2", help="clips of shared/data/video, without .mp4")
    p.add_argument("--frames", type=int, default=20, help="frames per clip, in evaluate's runs of 5")
    args = p.parse_args()
    detector = build_detector("mtcnn", device="cpu", max_side=DETECT_SIZE)
    for name in args.clips.split(","):
        load = os.getloadavg()[0]
        for row, figures in measure(DATA / "video" / f"{name}.mp4", args.frames, detector).items():
            print(json.dumps({"bench": "flicker_blur", "clip": name, "row": row, **figures, "loadavg": load}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
