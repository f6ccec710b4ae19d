"""The sharpness ratio a perfect face of R px would score: what a model's resolution allows at best.

`evaluate` compares the swapped face with the destination face inside the blend mask of a 256 px aligned
crop (Laplacian variance, engine.evaluate.metrics.sharpness_ratio). A model of R px can at best paste the
destination itself seen through R px: the aligned crop cut at R and upscaled to 256 (bicubic), as the
swap does. This measures that round trip on sampled frames of each talking-head clip (MTCNN landmarks,
the models' crop coverage), so a goal such as "sharpness >= 0.3" reads as a number of pixels.

    python bench/sharpness_ceiling.py [--clips talk1,talk2] [--every 10] [--frames 12]

Prints one JSON line: per clip, the mean ratio at each resolution.
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

from engine.evaluate.metrics import sharpness_ratio  # noqa: E402 (after the path insert above)
from engine.faces import align  # noqa: E402 (after the path insert above)
from engine.faces.detectors import build_detector  # noqa: E402 (after the path insert above)
from engine.models import MODEL_COVERAGE  # noqa: E402 (after the path insert above)
from engine.swap.masks import blend_mask  # noqa: E402 (after the path insert above)
from engine.swap.settings import BLEND_SIZE, DETECT_SIZE, SwapSettings  # noqa: E402 (after the path insert above)
from engine.video_reader import read_frames  # noqa: E402 (after the path insert above)

DATA = ROOT.parent / "shared" / "data"
SIZES = (64, 96, 128, 192, 256)


def ceiling(clip: Path, every: int, frames: int, detector) -> dict[str, float]:
    mask = blend_mask(BLEND_SIZE, MODEL_COVERAGE, blur=SwapSettings.blur)
    ratios: dict[int, list[float]] = {size: [] for size in SIZES}
    for _, frame in read_frames(clip, every=every):
        faces = detector.detect([frame])[0]
        if not faces:
            continue
        points = max(faces, key=lambda f: f.score).landmarks
        destination = align.warp_face(frame, align.alignment_matrix(points, BLEND_SIZE, MODEL_COVERAGE), BLEND_SIZE)
        for size in SIZES:
            small = align.warp_face(frame, align.alignment_matrix(points, size, MODEL_COVERAGE), size)
            pasted = cv2.resize(small, (BLEND_SIZE, BLEND_SIZE), interpolation=cv2.INTER_CUBIC)
            ratios[size].append(sharpness_ratio(pasted, destination, mask))
        if len(ratios[SIZES[0]]) >= frames:
            break
    return {str(size): round(float(np.mean(values)), 3) for size, values in ratios.items()} | \
        {"frames": len(ratios[SIZES[0]])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", default="talk1,talk2", help="clips of shared/data/video, without .mp4")
    p.add_argument("--every", type=int, default=10, help="sample every Nth frame")
    p.add_argument("--frames", type=int, default=12, help="frames per clip")
    args = p.parse_args()
    detector = build_detector("mtcnn", device="cpu", max_side=DETECT_SIZE)
    result = {"bench": "sharpness_ceiling", "coverage": MODEL_COVERAGE, "blend_size": BLEND_SIZE,
              "clips": {name: ceiling(DATA / "video" / f"{name}.mp4", args.every, args.frames, detector)
                        for name in args.clips.split(",")},
              "loadavg": os.getloadavg()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
