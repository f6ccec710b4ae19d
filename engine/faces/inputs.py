"""Turn extract's INPUT arguments (files, folders, zips, videos) into media items, safely.

Zip members are read in memory (images) or unpacked under the face set's own temporary folder
(videos, which ffmpeg must seek), never to a path taken from the archive, so a crafted member name
cannot write outside the face set. Size and compression-ratio limits refuse zip bombs.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.errors import UserError
from engine.media import is_image, is_video

MAX_MEMBER_BYTES = 2 << 30      # one member, uncompressed
MAX_ARCHIVE_BYTES = 8 << 30     # all members, uncompressed
MAX_RATIO = 100                 # uncompressed / compressed, for members over RATIO_MIN_BYTES
RATIO_MIN_BYTES = 4 << 20
MAX_MEMBERS = 100_000
# what reading a zip or one of its members raises besides UserError: a damaged archive, an encrypted
# member (RuntimeError), a compression method zipfile lacks (NotImplementedError), a broken stream
READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
               ValueError, zlib.error)
SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass
class MediaItem:
    """One image or video to extract from. `open_path` yields a real file path (for ffmpeg)."""

    source: str                      # what faces.json records: a path, or "archive.zip::member"
    kind: str                        # "image" | "video"
    read_bytes: Callable[[], bytes]
    stamp: str                       # changes when the input changes (size + mtime, or zip CRC)
    file: Path | None = None         # on-disk path when there is one
    zip_path: Path | None = None
    member: str | None = None

    @contextmanager
    def local_file(self, tmp_dir: Path) -> Iterator[Path]:
        if self.file is not None:
            yield self.file
            return
        tmp_dir.mkdir(parents=True, exist_ok=True)
        target = tmp_dir / f"member{PurePosixPath(self.member).suffix.lower()}"
        try:
            with zipfile.ZipFile(self.zip_path) as zf, zf.open(self.member) as src, open(target, "wb") as dst:
                _copy_limited(src, dst, MAX_MEMBER_BYTES, self.source)
        except READ_ERRORS as err:
            target.unlink(missing_ok=True)
            raise UserError(f"{self.source}: cannot be read from the archive ({err})") from err
        try:
            yield target
        finally:
            target.unlink(missing_ok=True)


@dataclass
class Skipped:
    source: str
    reason: str


def collect(inputs: list[str | Path]) -> tuple[list[MediaItem], list[Skipped]]:
    """Media items in a stable order, and the inputs that cannot be used with the reason."""
    items: list[MediaItem] = []
    skipped: list[Skipped] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            skipped.append(Skipped(str(path), "no such file or folder"))
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if not any(part.startswith(".") for part in child.relative_to(path).parts):
                    _add_file(child, items, skipped)
        else:
            _add_file(path, items, skipped)
    return items, skipped


def _add_file(path: Path, items: list[MediaItem], skipped: list[Skipped]) -> None:
    if path.suffix.lower() == ".zip" or (not is_image(path) and not is_video(path) and zipfile.is_zipfile(path)):
        _add_zip(path, items, skipped)
        return
    kind = "image" if is_image(path) else "video" if is_video(path) else None
    if kind is None:
        skipped.append(Skipped(str(path), "not an image, video or zip (by its extension)"))
        return
    st = path.stat()
    items.append(MediaItem(source=str(path), kind=kind, read_bytes=path.read_bytes,
                           stamp=f"{st.st_size}:{int(st.st_mtime)}", file=path))


def _add_zip(path: Path, items: list[MediaItem], skipped: list[Skipped]) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.filename.endswith("/")]  # is_dir() fails on ""
    except READ_ERRORS as err:
        skipped.append(Skipped(str(path), f"not a readable zip archive ({err})"))
        return
    if len(infos) > MAX_MEMBERS:
        skipped.append(Skipped(str(path), f"{len(infos)} members is over the {MAX_MEMBERS} limit"))
        return
    total = sum(i.file_size for i in infos)
    if total > MAX_ARCHIVE_BYTES:
        skipped.append(Skipped(str(path), f"unpacks to {total >> 20} MiB, over the {MAX_ARCHIVE_BYTES >> 30} GiB "
                                          "limit (zip bomb?)"))
        return
    for info in infos:
        source = f"{path}::{info.filename}"
        reason = _member_reason(info)
        if reason:
            skipped.append(Skipped(source, reason))
            continue
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts or "\\" in info.filename or ":" in name.parts[0]:
            skipped.append(Skipped(source, "member path points outside the archive (path traversal); refused"))
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in name.parts):
            continue
        reason = _bomb_reason(info)
        if reason:
            skipped.append(Skipped(source, reason))
            continue
        kind = "image" if is_image(name) else "video" if is_video(name) else None
        if kind is None:
            skipped.append(Skipped(source, "not an image or video (by its extension)"))
            continue
        items.append(MediaItem(source=source, kind=kind, stamp=f"{info.file_size}:{info.CRC:08x}",
                               read_bytes=_member_reader(path, info.filename, source),
                               zip_path=path, member=info.filename))


def _member_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read at all (each is one skipped line; the other members go on)."""
    if not info.filename:
        return "member has an empty name; refused"
    if info.flag_bits & 0x1:
        return "member is encrypted (password-protected); unpack it with its password and add the files"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "member is a symbolic link; archives of photos and videos hold plain files only"
    if info.compress_type not in SUPPORTED_METHODS:
        return (f"member is compressed with method {info.compress_type}, which cannot be read here; "
                "re-zip it with ordinary (deflate) compression")
    return None


def _bomb_reason(info: zipfile.ZipInfo) -> str | None:
    if info.file_size > MAX_MEMBER_BYTES:
        return f"unpacks to {info.file_size >> 20} MiB, over the {MAX_MEMBER_BYTES >> 20} MiB limit (zip bomb?)"
    if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(1, info.compress_size):
        return (f"compression ratio {info.file_size // max(1, info.compress_size)}:1 is over {MAX_RATIO}:1 "
                "(zip bomb?)")
    return None


def _member_reader(zip_path: Path, member: str, source: str) -> Callable[[], bytes]:
    def read() -> bytes:
        import io

        buf = io.BytesIO()
        try:
            with zipfile.ZipFile(zip_path) as zf, zf.open(member) as src:
                _copy_limited(src, buf, MAX_MEMBER_BYTES, source)
        except READ_ERRORS as err:
            raise UserError(f"{source}: cannot be read from the archive ({err})") from err
        return buf.getvalue()

    return read


def _copy_limited(src, dst, limit: int, source: str) -> None:
    """Copy at most `limit` bytes: headers can lie about sizes, so the cap holds while reading."""
    copied = 0
    while chunk := src.read(1 << 20):
        copied += len(chunk)
        if copied > limit:
            raise UserError(f"{source}: unpacks to more than {limit >> 20} MiB (zip bomb?); refused")
        dst.write(chunk)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def safe_stem(source: str) -> str:
    """A file-name-safe stem from a source path or zip member."""
    stem = Path(source.split("::")[-1]).stem or "face"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60]



