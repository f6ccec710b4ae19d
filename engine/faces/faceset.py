"""A face set: a folder of aligned face PNGs plus `faces.json` saying where each face came from.

`faces.json` = {"version", "size", "coverage", "detector", "faces": [entry...], "inputs": {...}}.
Each entry: file, source, frame, box, score, landmarks, matrix (source pixels -> aligned pixels),
blur, sha1. "inputs" records which inputs are done, so re-running extract skips them.
The JSON is rewritten atomically after every input, so a crash never loses or corrupts it.

`open_faceset` is how training and evaluation open a set (every way it can be missing is a
UserError with the fix); `face_count` and `faceset_stamp` are cheap enough for a page to poll.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine import atomic
from engine.errors import UserError
from engine.faces.align import FACESET_COVERAGE

INDEX = "faces.json"
VERSION = 1


class FaceSet:
    def __init__(self, path: str | Path, size: int | None = None, coverage: float | None = None,
                 create: bool = False) -> None:
        self.path = Path(path)
        index = self.path / INDEX
        if index.exists():
            try:
                data = json.loads(index.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise UserError(f"{index} is damaged ({err}); restore it or extract into a new folder") from err
            self.size = int(data["size"])
            self.coverage = float(data["coverage"])
            self.detector = data.get("detector")
            self.entries: list[dict] = data.get("faces", [])
            self.inputs: dict[str, dict] = data.get("inputs", {})
            if size is not None and size != self.size:
                raise UserError(f"{self.path} holds {self.size} px faces, not {size} px: extract into a "
                                f"new folder or use --size {self.size}")
        elif create:
            self.size = int(size or 256)
            self.coverage = float(coverage or FACESET_COVERAGE)
            self.detector = None
            self.entries, self.inputs = [], {}
        else:
            raise UserError(f"{self.path} is not a face set (no {INDEX}); create one with "
                            f"`python -m engine extract INPUT --out {self.path}`")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def files(self) -> list[Path]:
        return [self.path / e["file"] for e in self.entries]

    def hashes(self) -> set[str]:
        return {e["sha1"] for e in self.entries if "sha1" in e}

    def add(self, entry: dict, image: np.ndarray) -> None:
        """Write the aligned crop (atomically) and record its entry; call `save()` to commit the index."""
        atomic.write_image(self.path / entry["file"], image)
        self.entries.append(entry)

    def remove(self, files: list[str]) -> int:
        """Delete faces by file name (e.g. bad crops picked in the web gallery); returns how many.

        Only names faces.json lists, each a plain name inside the set's folder, are deleted: the names
        come from a browser, so anything else (another file, a path) is ignored.
        """
        listed = {e["file"] for e in self.entries}
        drop = {name for name in files if _plain_name(name) and name in listed}
        kept = [e for e in self.entries if e["file"] not in drop]
        removed = len(self.entries) - len(kept)
        self.entries = kept
        self.save()
        for name in drop:
            (self.path / name).unlink(missing_ok=True)
        return removed

    def save(self) -> None:
        """Rewrite faces.json atomically, one face per line so that diffs and greps stay readable."""
        head = json.dumps({"version": VERSION, "size": self.size, "coverage": self.coverage,
                           "detector": self.detector})[:-1]
        faces = ",\n  ".join(json.dumps(e) for e in self.entries)
        inputs = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in self.inputs.items())
        atomic.write_text(self.path / INDEX,
                          f"{head},\n \"faces\": [\n  {faces}\n ],\n \"inputs\": {{\n  {inputs}\n }}\n}}\n")

    def load_images(self, indices=None) -> np.ndarray:
        """All faces (or those at `indices`, in that order) as one (N, S, S, 3) uint8 RGB array.

        Only the faces asked for are read, so sampling a big set costs the sample's memory alone.
        """
        import cv2

        files = self.files if indices is None else [self.path / self.entries[int(i)]["file"] for i in indices]
        out = np.empty((len(files), self.size, self.size, 3), np.uint8)
        for i, path in enumerate(files):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"{path} is missing or unreadable: re-run extract, or remove it from the set")
            if bgr.shape[:2] != (self.size, self.size):
                raise UserError(f"{path} is {bgr.shape[1]}x{bgr.shape[0]}, the set says {self.size} px")
            out[i] = bgr[..., ::-1]
        return out


def _plain_name(name) -> bool:
    """A file name with no folder part: no separators, not '.' or '..'."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def open_faceset(path: str | Path) -> FaceSet:
    """Open an existing face set with faces in it, turning every way it can be missing into a UserError."""
    path = Path(path)
    hint = "point --faces-a/--faces-b at a folder made by `python -m engine extract`"
    if not path.is_dir():
        raise UserError(f"face set {path} does not exist: {hint}")
    if not (path / INDEX).is_file():
        raise UserError(f"{path} is not a face set (no {INDEX}): {hint}")
    faceset = FaceSet(path)
    if len(faceset) == 0:
        raise UserError(f"face set {path} holds no faces: extract faces into it first ({hint})")
    return faceset


def face_count(path: str | Path) -> int:
    """How many faces the set at `path` holds; 0 when there is no face set there yet."""
    return len(FaceSet(path)) if (Path(path) / INDEX).is_file() else 0


def faceset_stamp(path: str | Path) -> int:
    """Changes whenever the set does (its index's modification time; 0 when there is none): one stat."""
    try:
        return (Path(path) / INDEX).stat().st_mtime_ns
    except OSError:
        return 0


def write_subset(source: str | Path, out: str | Path, held_out) -> int:
    """Write the faces of `source` not in `held_out` (indices) as a new face set `out`, for training
    while keeping faces aside to measure on; an `out` already there is kept. -> faces in `out`."""
    out = Path(out)
    if (out / INDEX).is_file():
        return len(FaceSet(out))
    src = FaceSet(source)
    dst = FaceSet(out, size=src.size, coverage=src.coverage, create=True)
    images, skip = src.load_images(), {int(i) for i in held_out}
    for i, entry in enumerate(src.entries):
        if i not in skip:
            dst.add(dict(entry), images[i])
    dst.detector = src.detector
    dst.save()
    return len(dst)
