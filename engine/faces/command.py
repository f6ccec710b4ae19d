"""`python -m engine extract`: build or extend a face set from photos, folders, zips and videos."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.faces.extract import ExtractOptions

    d = ExtractOptions  # the defaults live on the options (no torch imported for them)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders (recursive), .zip archives, videos")
    p.add_argument("--out", required=True, metavar="FACESET", help="face set folder (created or extended)")
    p.add_argument("--detector", default=d.detector, choices=["auto", "retinaface", "mtcnn"],
                   help="auto = RetinaFace when its weights are present, else MTCNN (default: %(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="aligned face size in px (default: %(default)s)")
    p.add_argument("--coverage", type=float, default=d.coverage,
                   help="share of the crop the face square covers (default: %(default)s)")
    p.add_argument("--every", type=int, default=d.every, metavar="N",
                   help="keep every Nth video frame (default: %(default)s)")
    p.add_argument("--min-face", type=int, default=d.min_face, metavar="PX",
                   help="smallest face box side kept (default: %(default)s)")
    p.add_argument("--min-score", type=float, default=d.min_score,
                   help="lowest detector score kept (default: %(default)s)")
    p.add_argument("--min-blur", type=float, default=d.min_blur,
                   help="lowest sharpness (variance of Laplacian) kept; 0 keeps all (default: %(default)s)")
    p.add_argument("--select", default=d.select, choices=["largest", "all"],
                   help="faces per image or frame (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="video frames per detector call (default: %(default)s)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--pad", type=float, default=d.pad, metavar="SHARE",
                   help="pad photos by this share of their longer side (edge pixels repeated) before "
                        "detecting: for tight face crops such as LFW's (try 0.5; default: %(default)s)")
    p.add_argument("--person-from-folder", action="store_true",
                   help="record each photo's folder name as the person in faces.json (LFW's name/photo layout)")


def run(args: argparse.Namespace) -> int:
    from engine.faces.extract import ExtractOptions, extract
    from engine.progress import TqdmListener

    if args.every < 1:
        print("error: --every must be 1 or more", file=sys.stderr)
        return 2
    if not 0 <= args.pad <= 2:
        print("error: --pad must be between 0 and 2 (a share of the photo's longer side)", file=sys.stderr)
        return 2
    opts = ExtractOptions(detector=args.detector, size=args.size, coverage=args.coverage, every=args.every,
                          min_face=args.min_face, min_score=args.min_score, min_blur=args.min_blur,
                          select=args.select, batch_size=args.batch_size, device=args.device,
                          pad=args.pad, person_from_folder=args.person_from_folder)
    bar = TqdmListener(desc="extract")
    report = extract(args.inputs, args.out, opts, listeners=[bar])
    bar.close()
    print(f"{report.inputs_read} inputs read, {report.faces_kept} faces kept in {args.out}"
          + (f" (detector: {report.detector})" if report.detector else "")
          + (f", {report.inputs_already_done} inputs already done" if report.inputs_already_done else ""))
    for why, n in sorted(report.filtered.items()):
        print(f"  {n} faces dropped: {why}")
    for skip in report.skipped:
        print(f"skipped {skip.source}: {skip.reason}", file=sys.stderr)
    return 0 if report.ok else 1
