"""Write files so that a crash, a SIGKILL, a power cut or a full disk never leaves a half-written one behind.

Everything goes to a temporary name in the same folder first (`.NAME.XXXXXXXX.SUFFIX`, see
`temp_files`) and is renamed into place, which is atomic on POSIX file systems. The temporary file
is fsynced before the rename, so the name never points at data still in the page cache, and the
folder after it, so the rename itself survives a power cut; folders the write had to create are
fsynced into their parents too. A writer killed before the rename leaves its temporary file behind
(nothing can run after SIGKILL): whoever is the folder's only writer removes those with
`remove_temp_files` (training does, under the model folder's lock).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

# tempfile.mkstemp's names: prefix, 8 characters of this alphabet, suffix
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)$")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; fsync it and rename it onto `path` only if the block succeeds.

    The temporary name keeps `path`'s extension (or `suffix`) so that writers that choose a
    format by extension (OpenCV, ffmpeg) still work.
    """
    path = Path(path)
    created = _make_folders(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files should follow the umask like open()
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_file(tmp_path)  # the data is on disk before the name points at it
        os.replace(tmp_path, path)
        fsync_folder(path.parent)  # and the rename too
        for folder in created:
            fsync_folder(folder.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk (also one that another library wrote and closed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to the disk.

    File systems that cannot fsync a folder (some network and FUSE ones) are let be.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EROFS):
            raise
    finally:
        os.close(fd)


def temp_files(folder: str | os.PathLike) -> list[Path]:
    """The temporary files of `atomic_path` in `folder` and the folders below it (links not followed).

    A name counts when it is `.NAME.XXXXXXXX.SUFFIX` with SUFFIX the extension of NAME (or .tmp for a
    NAME without one), as `atomic_path` makes them; other hidden files are left alone.
    """
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files:
            match = _TEMP_NAME.match(name)
            if match and match["suffix"] == (Path(match["target"]).suffix or ".tmp"):
                found.append(Path(root, name))
    return sorted(found)


def remove_temp_files(folder: str | os.PathLike) -> tuple[int, int]:
    """Delete the temporary files that interrupted writes left in `folder` (see `temp_files`).

    Only the folder's one writer may call it, before it writes: a live writer's temporary file looks
    the same. -> (files removed, their bytes).
    """
    count = size = 0
    for path in temp_files(folder):
        try:
            bytes_ = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        count, size = count + 1, size + bytes_
    return count, size


def _make_folders(folder: Path) -> list[Path]:
    """mkdir -p; -> the folders it created, outermost first (their parents need an fsync too)."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent))


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Save an RGB (or grey) uint8 image; the format follows the extension (PNG, JPEG, ...)."""
    path = Path(path)
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    if not ok:
        raise OSError(f"could not encode image for {path}")
    write_bytes(path, buf.tobytes())


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Let `writer(tmp_path)` produce the file (e.g. `safetensors.torch.save_file`), then fsync and rename."""
    with atomic_path(path) as tmp:
        writer(tmp)
