"""`python -m engine swap INPUT... -m MODEL --out OUT`: swap faces in photos, folders and videos.

OUT is a file for one input file (photo -> image, video -> .mp4) and a folder otherwise. One bad
input is reported and the rest go on; the exit code is 1 if any input failed, 2 if the model or
the settings are wrong (nothing is attempted then).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

WRITABLE_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.swap.settings import DETECT_SIZE, DIRECTIONS, SwapSettings, VideoSettings

    swap, video = SwapSettings, VideoSettings  # the classes' defaults (no instance: min_score's is looked up)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos, or folders of them (recursive)")
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="model folder written by `train`")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output file for one input file, else a folder (created)")
    p.add_argument("--direction", default=swap.direction, choices=list(DIRECTIONS),
                   help="a2b: frames show face set A, B's face is put in; b2a: the reverse (default: %(default)s)")
    p.add_argument("--color", default=swap.color, metavar="MODE",
                   help="colour correction: auto (net when the model has a colour network, else reinhard), "
                        "net (the colour network: the face at 2x/4x in the frame's colours), "
                        "reinhard, hist, average or none (default: %(default)s)")
    p.add_argument("--color-strength", type=float, default=swap.color_strength, metavar="F",
                   help="0 keeps the model's colours, 1 applies the full correction; with net, the network's "
                        "share, the rest is reinhard's (default: %(default)s)")
    p.add_argument("--detail", type=float, default=swap.detail, metavar="F",
                   help="share of the frame's own fine detail (skin texture, grain) finer than the new face's "
                        "pixels, added to it: 0 (off) to 1 (default: %(default)s)")
    p.add_argument("--feature-detail", type=float, default=swap.feature_detail, metavar="F",
                   help="share of the frame's finest detail (finer than twice the model's pixels) on the eyes, "
                        "brows, nose and mouth: 0 (off) to 1 (default: %(default)s)")
    p.add_argument("--blend", default=swap.blend, metavar="MODE",
                   help="poisson (seamless), poisson-mixed (keeps frame texture) or alpha (default: %(default)s)")
    p.add_argument("--erode", type=int, default=swap.erode, metavar="PX",
                   help="shrink the face mask by PX (of a 256 px face; negative grows it) (default: %(default)s)")
    p.add_argument("--blur", type=int, default=swap.blur, metavar="PX",
                   help="feather the mask edge over PX (of a 256 px face) (default: %(default)s)")
    p.add_argument("--faces", default=swap.faces, metavar="RULE",
                   help="largest, all, or like:IMAGE (the face most like a frame grab of the person) "
                        "(default: %(default)s)")
    p.add_argument("--smooth", type=float, default=video.smooth, metavar="S",
                   help="video smoothing of where each face goes and of its Poisson colour, 0 (off) to 1 "
                        "(heaviest) (default: %(default)s)")
    p.add_argument("--detector", default="auto", choices=["auto", "mtcnn", "retinaface"],
                   help="auto = RetinaFace when its weights are present, else MTCNN (default: %(default)s)")
    p.add_argument("--detect-size", type=int, default=DETECT_SIZE, metavar="PX",
                   help="long side frames are shrunk to for detection: faces must be about 20 px at this size; "
                        "raise it for small faces, lower it (320) for speed on close-ups (default: %(default)s)")
    p.add_argument("--detect-every", type=int, default=video.detect_every, metavar="N",
                   help="video: detect on every Nth frame and track faces by optical flow between "
                        "(default: %(default)s)")
    p.add_argument("--no-watermark", dest="watermark", action="store_false",
                   help="leave the swapped faces' pixels unmarked (for a research protocol that needs them so); "
                        "the file's metadata still says it is synthetic, and that it is unmarked")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    add_threads_argument(p)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """`--threads`, for every command that swaps (swap, evaluate), so that their speeds compare."""
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for the model and detector; 0 = one less than the cores, leaving one to "
                        "decoding and encoding (default: %(default)s)")


def use_threads(threads: int) -> None:
    """Set torch's CPU threads as `--threads` asks; UserError when it is negative."""
    import torch

    from engine.errors import UserError

    if threads < 0:
        raise UserError(f"--threads {threads}: use 0 (automatic) or more")
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - 1))


def run(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from engine.swap.pipeline import Swapper
    from engine.swap.settings import SwapSettings, VideoSettings

    VideoSettings(smooth=args.smooth, detect_every=args.detect_every).check()
    if args.detect_size < 64:
        raise UserError(f"--detect-size {args.detect_size}: use 64 px or more")
    use_threads(args.threads)
    jobs = plan_outputs(args.inputs, Path(args.out))
    settings = SwapSettings(direction=args.direction, color=args.color, color_strength=args.color_strength,
                            detail=args.detail, feature_detail=args.feature_detail, blend=args.blend,
                            erode=args.erode, blur=args.blur, faces=args.faces, watermark=args.watermark)
    settings.check()
    swapper = Swapper(args.model, settings, device=args.device, detector=args.detector,
                      detect_size=args.detect_size)
    failed = 0
    for source, out in jobs:
        try:
            if out is None:
                raise UserError(f"{source}: not a photo or video this tool reads; "
                                "convert it to JPEG/PNG or MP4")
            message = (swap_photo(swapper, source, out) if _is_image(source)
                       else swap_one_video(swapper, source, out, args))
        except UserError as err:
            failed += 1
            print(f"skipped {source}: {str(err).removeprefix(f'{source}: ')}", file=sys.stderr)
        else:
            print(message)
    if len(jobs) > 1:
        print(f"{len(jobs) - failed} of {len(jobs)} inputs swapped into {args.out}")
    return 1 if failed else 0


def swap_photo(swapper, source: Path, out: Path) -> str:
    from engine.errors import UserError
    from engine.media import read_image
    from engine.provenance.metadata import write_image

    rgb = read_image(source)
    faces = swapper.find_faces([rgb])[0]
    if not faces:
        raise UserError(f"{source}: no face found to swap; use a photo where the face is clearly visible, "
                        "or check --faces")
    swapped = swapper.swap_at_landmarks([rgb], [[f.landmarks for f in faces]])[0][0]
    write_image(out, swapped, swapper.provenance(source))
    return f"wrote {out} ({len(faces)} face{'s' if len(faces) != 1 else ''})"


def swap_one_video(swapper, source: Path, out: Path, args: argparse.Namespace) -> str:
    from engine.errors import UserError
    from engine.progress import TqdmListener
    from engine.swap.video import swap_video

    bar = TqdmListener(desc=f"swap {source.name}")
    try:
        report = swap_video(swapper, source, out, smooth=args.smooth, detect_every=args.detect_every,
                            listeners=[bar])
    finally:
        bar.close()
    if report.frames_with_faces == 0:
        out.unlink(missing_ok=True)
        raise UserError(f"{source}: no face found in any of its {report.frames} frames; nothing written "
                        "(check --faces, or try --detect-size larger for small faces)")
    return (f"wrote {out} ({report.frames} frames, {report.frames_with_faces} with faces, "
            f"{report.fps:.1f} frames/s)")


def plan_outputs(inputs: list[str], out: Path) -> list[tuple[Path, Path | None]]:
    """(source, output path or None for an unreadable kind) per input file, folders expanded.

    OUT is a file path when exactly one input file is given and OUT has a file suffix; else a folder,
    where each output keeps its name (videos become .mp4) and its place under an input folder.
    """
    from engine.errors import UserError
    from engine.media import is_video

    files: list[tuple[Path, Path]] = []  # (source, path relative to OUT)
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and (_is_image(p) or is_video(p)))
            if not found:
                raise UserError(f"{path}: no photos or videos in this folder")
            files += [(p, Path(path.name) / p.relative_to(path)) for p in found]
        elif path.is_file():
            files.append((path, Path(path.name)))
        else:
            raise UserError(f"{path}: no such file or folder")
    single_file = len(files) == 1 and Path(inputs[0]).is_file()
    if single_file and out.suffix and not out.is_dir():
        source = files[0][0]
        _check_single_out(source, out)
        return [(source, out)]
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; with several inputs or a folder, --out must be a folder")
    jobs, taken = [], set()
    for source, rel in files:
        target = _output_name(out / rel)
        if target is not None:
            stem, n = target.stem, 2
            while target in taken:
                target = target.with_name(f"{stem}-{n}{target.suffix}")
                n += 1
            taken.add(target)
            _check_not_source(source, target)
        jobs.append((source, target))
    return jobs


def _check_single_out(source: Path, out: Path) -> None:
    from engine.errors import UserError
    from engine.media import is_video

    suffix = out.suffix.lower()
    if _is_image(source) and suffix not in WRITABLE_IMAGE_SUFFIXES:
        raise UserError(f"--out {out}: a photo is written as {', '.join(sorted(WRITABLE_IMAGE_SUFFIXES))}; "
                        "change the suffix")
    if is_video(source) and suffix != ".mp4":
        raise UserError(f"--out {out}: videos are written as H.264 .mp4; name the output *.mp4")
    _check_not_source(source, out)


def _check_not_source(source: Path, out: Path) -> None:
    from engine.errors import UserError

    if out.resolve() == source.resolve():
        raise UserError(f"--out {out} is the input itself; write the result somewhere else")


def _output_name(path: Path) -> Path | None:
    from engine.media import is_video

    if is_video(path):
        return path.with_suffix(".mp4")
    if _is_image(path):
        return path if path.suffix.lower() in WRITABLE_IMAGE_SUFFIXES else path.with_suffix(".png")
    return None


def _is_image(path: Path) -> bool:
    from engine.media import is_image

    return is_image(path)
