"""Extraction speed per detector on the shared photos and talk videos; prints one JSON line.

    python bench/extract.py [--detectors mtcnn,retinaface] [--device auto] [--every 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.device import pick_device  # noqa: E402
from engine.faces.detectors import build_detector, choose_detector  # noqa: E402
from engine.faces.extract import ExtractOptions, extract  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run(detector_name: str, device: torch.device, every: int) -> dict:
    detector = build_detector(detector_name, device=device)
    sets = {
        "photos": sorted((DATA / "people" / "carell").glob("*.jpg"))[:60] + sorted((DATA / "photos").glob("*.jpg")),
        "videos": sorted((DATA / "video").glob("*.mp4")),
    }
    figures = {}
    for name, inputs in sets.items():
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            report = extract(inputs, out, ExtractOptions(every=every, select="all"), detector=detector)
            seconds = time.perf_counter() - t0
        figures[name] = {"inputs": len(inputs), "faces": report.faces_kept, "seconds": round(seconds, 2),
                         "faces_per_s": round(report.faces_kept / seconds, 2)}
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--detectors", default="mtcnn,retinaface")
    p.add_argument("--device", default="auto")
    p.add_argument("--every", type=int, default=1)
    args = p.parse_args()
    device = pick_device(args.device)
    result = {"bench": "extract", "device": str(device), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    for name in args.detectors.split(","):
        if name == "retinaface" and choose_detector("auto")[0] != "retinaface":
            result[name] = "skipped: weights absent (python -m engine weights)"
            continue
        result[name] = run(name, device, args.every)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
