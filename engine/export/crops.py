"""Face crops for detectors that train on faces rather than frames.

A box crop, not an aligned one: most detector recipes (FF++'s Xception and its successors) cut the
detector's face box enlarged 1.3x, unrotated, so the crop keeps the pose the video shows. The box is
the face square of the swap's own alignment (the ArcFace template square, `engine.faces.align`) in
frame pixels, a square about its centre: the same box serves the fake frame and the real one, and it
follows the swapped face exactly. Crops are cut from the compressed files as written, so each
compression level's crops show its own artefacts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.faces import align
from engine.swap.pipeline import SwappedFace
from engine.video_reader import read_frames

Box = tuple[int, int, int, int]


def face_box(face: SwappedFace, coverage: float, scale: float, shape: tuple[int, ...]) -> Box | None:
    """x1, y1, x2, y2 (x2, y2 exclusive) of `face`'s face square enlarged `scale` times, clipped to the
    frame; None when nothing of it lies inside."""
    size = face.mask.shape[0]
    center = align.transform_points([((size - 1) / 2, (size - 1) / 2)], align.invert(face.matrix))[0]
    pixels_per_crop_pixel = 1.0 / np.sqrt(abs(np.linalg.det(face.matrix[:, :2])))
    half = coverage * size * pixels_per_crop_pixel * scale / 2
    x1, y1 = max(0, round(center[0] - half)), max(0, round(center[1] - half))
    x2, y2 = min(shape[1], round(center[0] + half)), min(shape[0], round(center[1] + half))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def cut_crops(video: Path, boxes: dict[int, list[Box]], root: Path, rel: str, row: dict) -> list[dict]:
    """PNG crops of `video` (the export's file `rel` under `root`) at `boxes` (frame -> boxes), and
    their crops.csv rows (`row` gives label, split, compression)."""
    from engine.export.layout import crop_file

    rows = []
    last = max(boxes, default=-1)
    if last < 0:
        return rows
    for index, rgb in read_frames(video):
        for k, (x1, y1, x2, y2) in enumerate(boxes.get(index, ())):
            name = crop_file(rel, index, k)
            write_png(root / name, rgb[y1:y2, x1:x2])
            rows.append({**row, "file": name, "video": rel, "frame": index, "face": k,
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2})
        if index >= last:
            break
    return rows


def write_png(path: Path, image: np.ndarray) -> None:
    """A PNG inside the export's temporary folder (its rename at the end is what makes the export whole)."""
    img = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(buf.tobytes())
