"""Swap quality of a short `lite` training on the shared pair: A = talk2.mp4 faces, B = Carell photos.

Splits each face set into a training part and a held-out part (the trainer itself trains on every
face it is given), trains a fresh model on the training parts, then runs `python -m engine evaluate`'s
job on talk2.mp4 with the whole sets, so SSIM/PSNR come from the held-out faces. Prints one JSON line
with the training time and the report's summary; the report lands in WORK/report.

    python -m engine extract --detector mtcnn --out WORK/talk2 ../shared/data/video/talk2.mp4
    python -m engine extract --detector mtcnn --out WORK/carell ../shared/data/people/carell
    nice -n 10 python bench/evaluate.py --work WORK --iterations 600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluate.options import EvaluateOptions  # noqa: E402
from engine.evaluate.run import evaluate  # noqa: E402
from engine.faces.faceset import FaceSet, write_subset  # noqa: E402
from engine.train import TrainConfig, train  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder with the talk2/ and carell/ face sets")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hold-out-a", type=int, default=25, help="last N faces (frames) of talk2 kept out of training")
    p.add_argument("--hold-out-b", type=int, default=5, help="every Nth Carell face kept out of training")
    p.add_argument("--video", type=Path, default=DATA / "video" / "talk2.mp4")
    p.add_argument("--frames", type=int, default=None, help="evaluate a sample of N frames (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    faces_a, faces_b = args.work / "talk2", args.work / "carell"
    n_a, n_b = len(FaceSet(faces_a)), len(FaceSet(faces_b))
    kept_a = write_subset(faces_a, args.work / "train_a", np.arange(n_a - args.hold_out_a, n_a))
    kept_b = write_subset(faces_b, args.work / "train_b", np.arange(args.hold_out_b - 1, n_b, args.hold_out_b))
    model = args.work / "lite"
    t0 = time.perf_counter()
    result = train(TrainConfig(faces_a=str(args.work / "train_a"), faces_b=str(args.work / "train_b"),
                               model_dir=str(model), preset="lite", device="cpu", batch_size=args.batch_size,
                               iterations=args.iterations, resume=(model / "config.json").is_file(),
                               save_every=200, preview_every=0))
    train_seconds = time.perf_counter() - t0
    report = evaluate(EvaluateOptions(model=model, video=args.video, out=args.work / "report", faces_a=faces_a,
                                      faces_b=faces_b, frames=args.frames, device="cpu", detector="mtcnn"))
    print(json.dumps({"train": {"iterations": result.iteration, "seconds": round(train_seconds, 1),
                                "loss_a": result.loss_a, "loss_b": result.loss_b, "faces_a": kept_a,
                                "faces_b": kept_b, "threads": args.threads, "batch_size": args.batch_size},
                      "summary": report.get("summary"), "identity": report.get("identity"),
                      "pose_error_deg": report.get("pose_error_deg"),
                      "evaluation_seconds": report.get("evaluation_seconds")}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
