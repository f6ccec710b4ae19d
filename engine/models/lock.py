"""One training per model folder: an exclusive lock on the folder's `.lock` file for the whole run.

Without it the command line and the web app (or two browser tabs, two hosts on one share) could train
one folder at once, each overwriting the other's saves. `training_lock(folder)` takes a
non-blocking `fcntl.flock` on `.lock` (created beside the weights, the holder's pid written in it)
and keeps it until the block ends; a second training gets a UserError naming the folder and the
holder's pid. The kernel drops the lock when its process dies, SIGKILL included, so a killed run
never leaves the folder locked; the stale `.lock` file it leaves is taken over by the next run.

Within one process the lock is re-entrant for the thread that holds it (the colour phase runs inside
its swap model's run) and refused to every other thread (the web app's jobs are threads). The holder
unlinks `.lock` before it lets go, and a taker checks that the file it locked is still the one on
disk, so an unlink racing an open never lets two processes hold it. A file system without flock
(some network mounts) trains unlocked, with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError

from .folder import LOCK

__all__ = ["FolderBusyError", "training_lock"]

log = logging.getLogger(__name__)


class FolderBusyError(UserError):
    """Another training holds the model folder."""


@dataclass
class _Hold:
    thread: int
    fd: int | None  # None: the file system has no flock, the run goes on unlocked
    created: bool  # the lock made the folder: it goes again when nothing else was written there
    count: int = 1


_guard = threading.Lock()
_held: dict[str, _Hold] = {}  # real path of the folder -> this process's hold on it


@contextmanager
def training_lock(folder: str | os.PathLike) -> Iterator[bool]:
    """Hold `folder`'s lock for the block (the folder is made if missing); -> True for the outermost
    hold of this thread, False when it already held it. FolderBusyError when another holds it."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    with _guard:
        hold = _held.get(key)
        if hold is not None:
            if hold.thread != threading.get_ident():
                raise FolderBusyError(f"{folder} is being trained by another training of this process "
                                      f"(pid {os.getpid()}); stop it first")
            hold.count += 1
            outer = False
        else:
            hold = _held[key] = _acquire(folder)
            outer = True
    try:
        yield outer
    finally:
        with _guard:
            hold.count -= 1
            if hold.count == 0:
                del _held[key]
                _release(folder, hold)


def _acquire(folder: Path) -> _Hold:
    created = not folder.exists()
    path = folder / LOCK
    for _ in range(20):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # a holder removed the folder it had made between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise FolderBusyError(f"{folder} is being trained by another process "
                                  f"({f'pid {pid}' if pid else 'pid unknown'}); stop it first") from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                os.close(fd)
                raise
            os.close(fd)
            log.warning("%s: the file system cannot lock files (%s); training it unlocked, so make sure "
                        "nothing else trains it", folder, err)
            return _Hold(threading.get_ident(), None, created)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return _Hold(threading.get_ident(), fd, created)
        os.close(fd)  # the holder before us unlinked the file we opened: lock the one on disk now
    raise UserError(f"could not lock {folder / LOCK}: it keeps changing under us; is something deleting it?")


def _release(folder: Path, hold: _Hold) -> None:
    if hold.fd is None:
        return
    try:
        (folder / LOCK).unlink(missing_ok=True)  # still holding it: see the module's notes
    finally:
        os.close(hold.fd)
    if hold.created:
        try:
            folder.rmdir()  # only when empty: a run that failed before it saved anything
        except OSError:
            pass


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
