"""The command-line flags the web server (app.py) and its workers (`python -m webapp.worker`) share.

Why here: a worker must read the same queue and apply the same media caps as the server, and it should
not import app.py (the one entry point) to get them.
"""

from __future__ import annotations

import argparse


def add_queue_arguments(p: argparse.ArgumentParser) -> None:
    """--queue and --worker-timeout."""
    p.add_argument("--queue", default=None, metavar="URL",
                   help="where the job queue lives: by default SQLite in the workspace (nothing to run); "
                        "redis://HOST:6379/0 to share it between this server and workers on other machines")
    p.add_argument("--worker-timeout", type=float, default=60.0, metavar="S",
                   help="a running job whose worker has not beaten its heartbeat for S seconds is marked "
                        "interrupted, and a training resumes from its last save on a live worker (default: 60)")


def add_media_limit_arguments(group: argparse.ArgumentParser | argparse._ArgumentGroup, shown: bool = True) -> None:
    """--max-video-frames, --max-video-pixels, --max-image-pixels (0: the engine's own caps)."""
    def help_text(text: str) -> str:
        return text if shown else argparse.SUPPRESS

    group.add_argument("--max-video-frames", type=int, default=0, metavar="N",
                       help=help_text("frames per video (default: the engine's, 20 minutes at 60 fps)"))
    group.add_argument("--max-video-pixels", type=float, default=0, metavar="MP",
                       help=help_text("megapixels per video frame (default: the engine's, 4096x2304)"))
    group.add_argument("--max-image-pixels", type=float, default=0, metavar="MP",
                       help=help_text("megapixels per image (default: the engine's, 80)"))


def apply_media_limits(args: argparse.Namespace) -> None:
    """The operator's frame, frame-size and image-size caps, set where the engine reads them."""
    import engine.media
    import engine.video_reader

    if args.max_video_frames:
        engine.video_reader.MAX_VIDEO_FRAMES = args.max_video_frames
    if args.max_video_pixels:
        engine.video_reader.MAX_VIDEO_PIXELS = int(args.max_video_pixels * 1e6)
    if args.max_image_pixels:
        from PIL import Image

        engine.media.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS = int(args.max_image_pixels * 1e6)
