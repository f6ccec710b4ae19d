"""`python -m engine export-dataset --videos V... --model M --out DIR`: a detector-training dataset.

Real clips and their swaps in FaceForensics++'s layout, at FF++'s compression levels, with a binary
mask per fake frame, optional face crops, a manifest and a seeded train/val/test split that keeps
every identity in one split (`engine.export.split`). Clips without a face are skipped with a message
and the exit code is 1; a wrong model folder or option stops everything before any work (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.export.options import COMPRESSIONS, SPLIT_BY, ExportOptions
    from engine.swap.command import add_threads_argument

    d = ExportOptions  # the class's field defaults: one home for the CLI's, the web tab's and the library's
    p.add_argument("--videos", nargs="+", required=True, metavar="VIDEO[=PERSON]",
                   help="clips of real people; each is a person of its own unless named: clip.mp4=anna "
                        "(clips with one name are one person)")
    p.add_argument("-m", "--model", action="append", required=True, metavar="MODEL[=IDENTITY]",
                   help="model folder written by `train` (repeat for more); the identity it puts in is the "
                        "folder's name unless given: models/AB=carell (the name of a clip's person if it is them)")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the dataset (written whole at the end)")
    p.add_argument("--compression", default=",".join(d.compressions), metavar="LEVELS",
                   help=f"comma-separated, of {', '.join(f'{c} (crf {v})' for c, v in COMPRESSIONS.items())}, "
                        "as FF++ (default: %(default)s)")
    p.add_argument("--crops", action="store_true",
                   help="also save face crops (the face box enlarged --crop-scale times) as PNGs, with crops.csv")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale, metavar="F",
                   help="face box enlargement for crops (default: %(default)s)")
    p.add_argument("--crop-every", type=int, default=d.crop_every, metavar="N",
                   help="crops of every Nth frame (default: %(default)s)")
    p.add_argument("--split", default=",".join(str(s) for s in d.split), metavar="TRAIN,VAL,TEST",
                   help="shares of the frames per split; 0 leaves a split out (default: %(default)s)")
    p.add_argument("--split-by", default=d.split_by, choices=SPLIT_BY,
                   help="identity: no person in two splits, the identities models put in too (a fake only where "
                        "its clip and model share a split); source: by the clips' people only, every model in "
                        "every split (for one model) (default: %(default)s)")
    p.add_argument("--balance", action=argparse.BooleanOptionalAction, default=d.balance,
                   help="one fake per original in each split, so real and fake frames are equal; --no-balance "
                        "swaps each clip with every model of its split (default: on)")
    p.add_argument("--max-frames", type=int, metavar="N", help="only the first N frames of each clip (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the split (default: %(default)s)")
    p.add_argument("--no-watermark", dest="watermark", action="store_false",
                   help="leave the swapped faces' pixels unmarked; the metadata still says synthetic")
    p.add_argument("--detector", default=d.detector, choices=["auto", "mtcnn", "retinaface"])
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    add_threads_argument(p)


def options_from(args: argparse.Namespace):
    from engine.export.options import (
        ExportOptions,
        ModelInput,
        VideoInput,
        parse_compressions,
        parse_named,
        parse_split,
    )

    return ExportOptions(
        videos=[VideoInput(*parse_named(v)) for v in args.videos],
        models=[ModelInput(*parse_named(m)) for m in args.model],
        out=Path(args.out), compressions=parse_compressions(args.compression), crops=args.crops,
        crop_scale=args.crop_scale, crop_every=args.crop_every, split=parse_split(args.split),
        split_by=args.split_by, balance=args.balance, max_frames=args.max_frames, seed=args.seed,
        watermark=args.watermark, device=args.device, detector=args.detector)


def run(args: argparse.Namespace) -> int:
    from engine.export.run import export_dataset
    from engine.progress import TqdmListener
    from engine.swap.command import use_threads

    options = options_from(args)
    options.check()
    use_threads(args.threads)
    bar = TqdmListener(desc="export")
    try:
        report = export_dataset(options, listeners=[bar])
    finally:
        bar.close()
    for line in report.skipped:
        print(f"skipped {line}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if report.status != "done":
        print("stopped: nothing written")
        return 1
    fakes = sum(r["label"] == "fake" for r in report.rows)
    print(f"wrote {report.out}: {len(report.rows) - fakes} real and {fakes} fake videos"
          f"{f', {report.crops} face crops' if options.crops else ''} ({report.seconds:.0f} s); "
          f"see {report.out / 'README.txt'}")
    return 1 if report.skipped else 0
