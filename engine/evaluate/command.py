"""`python -m engine evaluate -m MODEL --video DEST --out DIR`: measure how well a model swaps a video."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="model folder written by `train`")
    p.add_argument("--video", required=True, metavar="DEST_VIDEO",
                   help="destination video: its faces (identity A) are swapped to B")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.html and plots")
    p.add_argument("--faces-a", metavar="SET", help="face set of A (default: the one the model trained on)")
    p.add_argument("--faces-b", metavar="SET", help="face set of B (default: the one the model trained on)")
    p.add_argument("--frames", type=int, metavar="N",
                   help="measure a sample of about N frames, in runs of 5 consecutive frames (default: all)")
    p.add_argument("--reference-faces", type=int, default=120, metavar="N",
                   help="faces per set embedded for the identity means (default: 120)")
    p.add_argument("--strip", type=int, default=6, metavar="N", help="frame pairs shown in the report (default: 6)")
    p.add_argument("--smooth", type=float, default=0.5, metavar="S", help="landmark smoothing, as for swap")
    p.add_argument("--detector", default="auto", choices=["auto", "mtcnn", "retinaface"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for the model and detector; 0 = one less than the cores, as for swap")


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from engine.errors import UserError
    from engine.evaluate.run import EvaluateOptions, evaluate
    from engine.progress import TqdmListener

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder for the report")
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: use 0 (automatic) or more")
    if args.reference_faces < 2:
        raise UserError(f"--reference-faces {args.reference_faces}: use 2 or more")
    options = EvaluateOptions(
        model=Path(args.model), video=Path(args.video), out=out,
        faces_a=Path(args.faces_a) if args.faces_a else None, faces_b=Path(args.faces_b) if args.faces_b else None,
        frames=args.frames, reference_faces=args.reference_faces, strip=args.strip, smooth=args.smooth,
        device=args.device, detector=args.detector)
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))  # swap's rule, so speeds compare
    bar = TqdmListener(desc="evaluate")
    try:
        report = evaluate(options, listeners=[bar])
    finally:
        bar.close()
    if report["status"] != "done":
        print("stopped: no report written")
        return 1
    s = report["summary"]
    print(f"identity retrieval {s['id_retrieval']:.3f}, verified as B {s['id_verified']:.3f}, similarity to B {s['id_similarity_target']:.3f} "
          f"(real B {s['id_similarity_target_real']:.3f}), landmark NME {s['landmark_nme']:.4f}, "
          f"flicker {s['flicker']:.2f}, {s['fps']:.2f} frames/s")
    print(f"report: {out / 'report.html'}")
    return 0
