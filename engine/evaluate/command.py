"""`python -m engine evaluate -m MODEL --video DEST --out DIR`: measure how well a model swaps a video."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.evaluate.options import CLIP, EvaluateOptions
    from engine.swap.command import add_threads_argument

    defaults = EvaluateOptions  # the class's field defaults: one home for the CLI's, the web app's and the library's
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="model folder written by `train`")
    p.add_argument("--video", required=True, metavar="DEST_VIDEO",
                   help="destination video: its faces (identity A) are swapped to B")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.html and plots")
    p.add_argument("--faces-a", metavar="SET", help="face set of A (default: the one the model trained on)")
    p.add_argument("--faces-b", metavar="SET", help="face set of B (default: the one the model trained on)")
    p.add_argument("--frames", type=int, metavar="N",
                   help=f"measure a sample of about N frames, in runs of {CLIP} consecutive frames (default: all)")
    p.add_argument("--reference-faces", type=int, default=defaults.reference_faces, metavar="N",
                   help="faces per set embedded for the identity means (default: %(default)s)")
    p.add_argument("--strip", type=int, default=defaults.strip, metavar="N",
                   help="frame pairs shown in the report (default: %(default)s)")
    p.add_argument("--smooth", type=float, default=defaults.smooth, metavar="S",
                   help="smoothing of placement and Poisson colour, as for swap (default: %(default)s)")
    p.add_argument("--detector", default=defaults.detector, choices=["auto", "mtcnn", "retinaface"])
    p.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from engine.evaluate.options import EvaluateOptions
    from engine.evaluate.run import evaluate
    from engine.progress import TqdmListener
    from engine.swap.command import use_threads

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder for the report")
    use_threads(args.threads)  # swap's rule, so speeds compare
    if args.reference_faces < 2:
        raise UserError(f"--reference-faces {args.reference_faces}: use 2 or more")
    options = EvaluateOptions(
        model=Path(args.model), video=Path(args.video), out=out,
        faces_a=Path(args.faces_a) if args.faces_a else None, faces_b=Path(args.faces_b) if args.faces_b else None,
        frames=args.frames, reference_faces=args.reference_faces, strip=args.strip, smooth=args.smooth,
        device=args.device, detector=args.detector)
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
    from engine.evaluate.report import REPORT_HTML

    print(f"report: {out / REPORT_HTML}")
    return 0
