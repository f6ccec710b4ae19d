"""How much of an invisible-sized mark a re-upload leaves, by the mark's grain and its rhythm in time (issue 24).

The shipped mark (engine/provenance/watermark.py) lives in 4 px cells and flips its sign every 8 frames
so that the face's own projection cancels; a re-upload (half size, then H.264 CRF 28) leaves too little
of it to read. This bench asks the question underneath, without a reader: add a keyed +-AMPLITUDE
checkerboard of square cells over the face box of every frame of a real clip, write it as the studio
does (CRF 18), re-upload it (half size, CRF 28), and subtract the same clip re-uploaded unmarked. What is
left of the mark, projected on the half-size pattern, is the share that survived (1: all of it). Cells of
4 to 32 px, the sign constant or flipping every 8 frames (the shipped code's rhythm).

    python bench/mark_scale.py --video ../shared/data/video/talk1.mp4 --frames 64     # one JSON line

What a reader needs is the survivor against the face's own content in the same pattern (`face_std`: the
spread of the unmarked re-upload's projections per frame, in the same units): a constant mark is read
against that spread once per clip, a flipping one against its change from block to block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from watermark import attack, decoded, write_video  # noqa: E402

from engine.video_reader import probe_video  # noqa: E402

AMPLITUDE = 2.0  # grey levels: about the shipped mark's allowance where a face is textured (JND share 0.8 x 3)
CELLS = (4, 8, 16, 32)  # px of the full-size frame
FLIP_BLOCK = 8  # frames: the shipped code's block


def face_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """The largest face's box in the first frame (MTCNN), clipped to the frame: the mark's region."""
    from engine.faces.detectors import build_detector

    faces = build_detector("mtcnn").detect([frame])[0]
    x1, y1, x2, y2 = max(faces, key=lambda f: f.area).box.round().astype(int)
    h, w = frame.shape[:2]
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def pattern(shape: tuple[int, int], box: tuple[int, int, int, int], cell: int, seed: int = 24) -> np.ndarray:
    """(H, W) float: keyed +-1 per cell inside the box, 0 outside."""
    h, w = shape
    x1, y1, x2, y2 = box
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.array([-1.0, 1.0]), size=(-(-(y2 - y1) // cell), -(-(x2 - x1) // cell)))
    out = np.zeros((h, w))
    out[y1:y2, x1:x2] = np.kron(cells, np.ones((cell, cell)))[: y2 - y1, : x2 - x1]
    return out


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)[..., 0].astype(np.float64)


def reuploaded(frames: list[np.ndarray], times, tmp: Path, name: str) -> list[np.ndarray]:
    """The studio's CRF 18 file, then half size and CRF 28 (bench/watermark.py's `half-crf28`)."""
    studio = write_video(frames, tmp / f"{name}.mp4", times, crf=18, preset="medium")
    return attack("half-crf28", decoded(studio), studio, tmp)


def measure(clean: list[np.ndarray], times, box, cell: int, flip: bool, base: list[np.ndarray], tmp: Path) -> dict:
    """One row: the mark of `cell` px (constant or flipping) re-uploaded; `base`: the unmarked clip's
    re-upload, as luma."""
    full = pattern(clean[0].shape[:2], box, cell)
    signs = [(-1.0) ** (i // FLIP_BLOCK) if flip else 1.0 for i in range(len(clean))]
    marked = [np.clip(f.astype(np.float64) + AMPLITUDE * s * full[..., None], 0, 255).round().astype(np.uint8)
              for f, s in zip(clean, signs, strict=True)]
    after = reuploaded(marked, times, tmp, f"c{cell}-{int(flip)}")
    h, w = base[0].shape[:2]
    half = cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
    norm = float((half * half).sum())
    survived = [float(((luma(a) - b) * half).sum()) / norm / (AMPLITUDE * s)
                for a, b, s in zip(after, base, signs, strict=True)]
    own = [float((b * half).sum()) / norm for b in base]  # the face's own projection, in levels
    blocks = np.array(own[: len(own) // (2 * FLIP_BLOCK) * 2 * FLIP_BLOCK]).reshape(-1, FLIP_BLOCK).mean(1)
    return {"cell_px": cell, "flip": flip, "survived": round(float(np.mean(survived)), 3),
            "survived_min": round(float(np.min(survived)), 3),
            "face_level": round(float(np.mean(own)), 3), "face_std": round(float(np.std(own)), 3),
            "face_block_step": round(float(np.mean(np.abs(np.diff(blocks)[::2]))), 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "data" / "video" / "talk1.mp4")
    p.add_argument("--frames", type=int, default=64)
    args = p.parse_args()
    info = probe_video(args.video)
    clean = decoded(args.video)[: args.frames]
    box = face_box(clean[0])
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = [luma(f) for f in reuploaded(clean, info.times, tmp, "clean")]
        rows = [measure(clean, info.times, box, cell, flip, base, tmp) for cell in CELLS for flip in (False, True)]
    print(json.dumps({"bench": "mark_scale", "video": args.video.name, "frames": len(clean),
                      "frame_size": list(clean[0].shape[:2]), "face_box": list(map(int, box)),
                      "amplitude": AMPLITUDE, "attack": "crf18 then half-crf28", "rows": rows,
                      "seconds": round(time.perf_counter() - t0, 1), "load": [round(load0, 2),
                                                                             round(os.getloadavg()[0], 2)]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
