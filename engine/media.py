"""Read images and videos: ffmpeg through pipes (writing lives in `engine.video_writer`).

The ffmpeg binary comes from the `imageio-ffmpeg` wheel (no system ffmpeg needed) and commands are
built with `ffmpeg-python`. Frames travel as raw RGB through pipes: no folders of temporary PNGs.
"""

from __future__ import annotations

import io
import subprocess
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps

from engine.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jfif"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}
DAMAGE_SIGNS = ("partial file", "Invalid data", "moov atom not found", "truncat", "corrupt")
MAX_IMAGE_PIXELS = 80_000_000  # larger images are refused as likely decompression bombs

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes to RGB uint8, honouring EXIF orientation; UserError if corrupt or a bomb."""
    try:
        with warnings.catch_warnings():  # PIL only warns between 1x and 2x its limit: refuse, do not print
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise UserError(f"{name}: {img.width}x{img.height} pixels is over the "
                                f"{MAX_IMAGE_PIXELS // 1_000_000} MP limit (decompression bomb?); resize it first")
            img.load()  # raises on truncated data
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"{name}: refused as a decompression bomb ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{name}: not a readable image ({err}); re-export it as JPEG or PNG") from err


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from err
    return decode_image(data, str(path))


@dataclass(frozen=True)
class VideoInfo:
    """What a video stream holds. `fps` is the nominal frame rate (ffmpeg's tbr), `avg_fps` the mean."""

    path: str
    width: int
    height: int
    fps: float
    avg_fps: float
    duration: float
    has_audio: bool
    codec: str


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's stream properties (via imageio-ffmpeg's header parser); UserError if none."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration) as err:
        raise UserError(f"{path}: ffmpeg cannot read a video stream from it "
                        f"({_last_line(err)}); check that it is a video file") from err
    finally:
        gen.close()
    width, height = meta["size"]
    if meta.get("rotate", 0) in (90, 270, -90):
        width, height = height, width
    fps = _nominal_fps(path) or float(meta["fps"])
    return VideoInfo(path=str(path), width=int(width), height=int(height), fps=fps,
                     avg_fps=float(meta["fps"]), duration=float(meta.get("duration") or 0.0),
                     has_audio=bool(meta.get("audio_codec")), codec=str(meta.get("codec", "")))


def _nominal_fps(path: Path) -> float | None:
    """ffmpeg's `tbr` (the stream's real base rate), which stays right for variable-rate phone clips."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          errors="replace")
    for line in proc.stderr.splitlines():
        if "Video:" in line and " tbr" in line:
            token = line.split(" tbr")[0].rsplit(",", 1)[-1].strip()
            try:
                return float(Fraction(token.replace("k", "000")))
            except (ValueError, ZeroDivisionError):
                return None
    return None


def _last_line(err: BaseException) -> str:
    lines = [s for s in str(err).strip().splitlines() if s.strip()]
    return lines[-1] if lines else type(err).__name__


def read_frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 frame) for every `every`-th decoded frame, via an ffmpeg pipe.

    Frames come out as stored (no duplication or dropping to a constant rate), so indices match the
    source's frame count. A video that breaks off mid-stream raises UserError after its good frames.
    """
    info = probe_video(path)
    w, h = info.width, info.height
    stream = (ffmpeg.input(str(path))
              .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
              .global_args("-nostdin", "-hide_banner", "-loglevel", "error"))
    proc = stream.run_async(cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    drain.start()
    frame_bytes = w * h * 3
    index = 0
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            if index % every == 0:
                yield index, np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            index += 1
    finally:
        proc.stdout.close()
        proc.wait()
        drain.join(timeout=5)
    message = b"".join(errors).decode(errors="replace").strip()
    # ffmpeg exits 0 on a file cut short: its complaints on stderr are the only sign
    damaged = any(sign in message for sign in DAMAGE_SIGNS)
    if proc.returncode != 0 or index == 0 or damaged:
        detail = message.splitlines()[-1] if message else "no frames decoded"
        raise UserError(f"{path}: video decoding failed after {index} frames ({detail})")
