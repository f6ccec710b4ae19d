"""`python -m engine verify FILE...`: is this photo or video a swap made here, and by which model?

One line per file (or `--json`): the metadata's record and the pixel mark's reading. Exit code 0
when every file is identified as synthetic (a mark or a record found), 1 when any is not (or
could not be read): `verify swapped.mp4 && echo synthetic` reads as it should.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.provenance.verify import SAMPLE_FRAMES

    p.add_argument("files", nargs="+", metavar="FILE", help="photos and videos to check")
    p.add_argument("--frames", type=int, default=SAMPLE_FRAMES, metavar="N",
                   help="video frames to read the mark in: every frame, or every k-th of a longer video (default: %(default)s)")
    p.add_argument("--detector", default="mtcnn", choices=["auto", "mtcnn", "retinaface"],
                   help="face detector that finds the faces to read (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a sentence")


def run(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from engine.faces.detectors import build_detector
    from engine.provenance.verify import verify_file

    if args.frames < 1:
        raise UserError(f"--frames {args.frames}: read at least 1 frame")
    detector = build_detector(args.detector, device="cpu")
    identified = 0
    for path in args.files:
        verdict = verify_file(path, detector, frames=args.frames)
        print(json.dumps(verdict.to_dict()) if args.json else verdict.message(), flush=True)
        identified += verdict.synthetic
    return 0 if identified == len(args.files) else 1
