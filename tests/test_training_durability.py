"""A model folder under crashes and competition: fsync before and after every rename, orphaned temporary
files swept, one training per folder (the lock), a rewind that cannot load, an optimizer file that
must not be unpickled. tests/test_sigkill_training.py kills real trainings for the figures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine import atomic


def test_every_atomic_write_fsyncs_its_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def record(fd):
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)

    def writer(tmp: Path) -> None:  # a library that opens, writes and closes the file itself
        tmp.write_bytes(b"weights")

    target = tmp_path / "new" / "deeper" / "model.safetensors"
    atomic.write_with(target, writer)
    assert target.read_bytes() == b"weights"
    kinds = [kind for kind, _ in synced]
    assert synced[0] == ("file", target.stat().st_ino)  # the data before the name points at it
    assert ("folder", target.parent.stat().st_ino) in synced  # the rename
    # the two folders the write created are entries of their parents, which are synced too
    assert ("folder", tmp_path.stat().st_ino) in synced and ("folder", (tmp_path / "new").stat().st_ino) in synced
    assert kinds.index("folder") > 0

    synced.clear()
    atomic.write_json(tmp_path / "config.json", {"a": 1})
    assert synced == [("file", (tmp_path / "config.json").stat().st_ino), ("folder", tmp_path.stat().st_ino)]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "optimizer.pt"
    target.write_bytes(b"old")

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.write_with(target, failing)
    assert target.read_bytes() == b"old" and atomic.temp_files(tmp_path) == []


def test_temp_files_match_the_names_atomic_writes_make_and_nothing_else(tmp_path):
    kept = [".lock", ".hidden", "optimizer.pt", ".optimizer.pt.refused", ".notes.txt.abc.txt", ".x.abcdefgh.png"]
    for name in kept:
        (tmp_path / name).write_bytes(b"x")
    made = []
    for name in ("optimizer.pt", "model.safetensors", "config.json", "loss.csv", "snapshots/00000005/model.safetensors",
                 "previews/latest.png", "README"):
        with atomic.atomic_path(tmp_path / name) as tmp:
            made.append(tmp)
            tmp.write_bytes(b"x")
            assert atomic.temp_files(tmp_path) == sorted(made)
            hard = tmp.with_name(tmp.name + "-kept")  # no temp name: not matched
            os.link(tmp, hard)
        os.rename(hard, tmp)  # as if the rename never happened: the orphan a kill leaves
    assert atomic.temp_files(tmp_path) == sorted(made)
    assert atomic.remove_temp_files(tmp_path) == (len(made), len(made))
    assert atomic.temp_files(tmp_path) == [] and all((tmp_path / name).exists() for name in kept)
