"""Read images (PIL): RGB uint8, EXIF orientation honoured, corrupt files and decompression bombs refused.

Which files are media is decided here by suffix; videos are read by `engine.video_reader` (PyAV)
and written by `engine.video_writer`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from engine.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jfif"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}
MAX_IMAGE_PIXELS = 80_000_000  # larger images are refused as likely decompression bombs

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def ffmpeg_exe() -> str:
    """The ffmpeg command-line program (the `imageio-ffmpeg` wheel's), for making test clips by hand;
    the engine itself reads and writes video in-process through PyAV."""
    import imageio_ffmpeg

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
    except Image.UnidentifiedImageError as err:  # its message names a BytesIO object, not the file
        raise UserError(f"{name}: not a readable image (no image format recognised in its bytes); "
                        "re-export it as JPEG or PNG") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{name}: not a readable image ({err}); re-export it as JPEG or PNG") from err


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from err
    return decode_image(data, str(path))
