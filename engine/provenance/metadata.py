"""The provenance record in the file's own container: PNG text chunks, EXIF (JPEG, WebP, TIFF), MP4 tags.

Each keeps the JSON record under the studio's key plus the fields common tools show: PNG `Software`
and `Description`, EXIF `Software` and `ImageDescription`, MP4 `encoder`-free `comment` and
`description` (written with `use_metadata_tags`, which also keeps our own key). Metadata is the
first thing a re-upload strips, which is why each swapped face also carries a pixel mark
(`engine.provenance.watermark`); metadata says more (source hash, date) where it survives.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import UserError
from engine.provenance.record import METADATA_KEY, STUDIO, Provenance

EXIF_SOFTWARE, EXIF_DESCRIPTION = 0x0131, 0x010E
PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF",
               ".tiff": "TIFF", ".bmp": "BMP"}
CARRIES_METADATA = {"JPEG", "PNG", "WEBP", "TIFF"}  # BMP has nowhere to keep it: the pixel mark alone


def video_tags(record: Provenance) -> dict[str, str]:
    """MP4 tags of a swapped video (`TimedVideoWriter(metadata=...)`)."""
    return {METADATA_KEY: record.to_json(), "comment": record.to_json(), "description": record.summary()}


def image_bytes(rgb: np.ndarray, suffix: str, record: Provenance | None) -> bytes:
    """`rgb` encoded as `suffix` says, with `record` in its metadata (JPEG at quality 95)."""
    fmt = PIL_FORMATS.get(suffix.lower())
    if fmt is None:
        raise UserError(f"{suffix}: not an image format this tool writes; use .png or .jpg")
    img = Image.fromarray(np.ascontiguousarray(rgb))
    options: dict = {}
    if record is not None and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt(METADATA_KEY, record.to_json())
        info.add_itxt("Software", f"{record.studio} {record.version}")
        info.add_itxt("Description", record.summary())
        options["pnginfo"] = info
    elif record is not None and fmt in CARRIES_METADATA:
        exif = Image.Exif()
        exif[EXIF_SOFTWARE] = f"{record.studio} {record.version}"
        exif[EXIF_DESCRIPTION] = record.to_json()
        options["exif"] = exif.tobytes()
    if fmt == "JPEG":
        options.update(quality=95, subsampling=0)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_image(path: str | os.PathLike, rgb: np.ndarray, record: Provenance | None) -> None:
    """Write `rgb` to `path` (format by suffix) with `record` in its metadata, atomically."""
    from engine.atomic import write_bytes

    write_bytes(path, image_bytes(rgb, Path(path).suffix or ".png", record))


def read_record(path: str | os.PathLike) -> Provenance | None:
    """The studio's record in a photo's or video's metadata, or None (none there, or not ours)."""
    from engine.media import is_video

    path = Path(path)
    texts = _video_texts(path) if is_video(path) else _image_texts(path)
    for text in texts:
        record = Provenance.from_json(text)
        if record is not None:
            return record
    return None


def _image_texts(path: Path) -> list[str]:
    try:
        with Image.open(path) as img:
            texts = [img.info.get(METADATA_KEY)] if hasattr(img, "info") else []
            text_chunks = getattr(img, "text", None) or {}
            texts.append(text_chunks.get(METADATA_KEY))
            exif = img.getexif()
            texts.append(exif.get(EXIF_DESCRIPTION))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return []
    return [t for t in texts if isinstance(t, str) and STUDIO in t]


def _video_texts(path: Path) -> list[str]:
    import av

    from engine.video_reader import open_input

    try:
        with open_input(path) as container:
            tags = dict(container.metadata)
    except (av.FFmpegError, OSError):
        return []
    return [tags[k] for k in (METADATA_KEY, "comment") if k in tags]
