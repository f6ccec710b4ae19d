"""Projects: one folder per face pair under the workspace, and the model archive going in and out.

    <workspace>/<owner>/<project>/faces/A   face set of A (the face that gets replaced)
                                  faces/B   face set of B (the identity put in)
                                  model/    the model folder training writes
                                  outputs/  swapped photos and videos
                                  uploads/  the photos, zips and videos users sent, kept so that a
                                            re-run skips inputs already done (the face set records them)

`owner` is the signed-in user (so with --auth nobody sees another user's projects) or `local`
without sign-in. Names come from the browser, so every name is checked before it becomes a path.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.errors import UserError
from engine.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from engine.models import folder as model_folder

SIDES = ("A", "B")
LOCAL_OWNER = "local"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
UPLOAD_KINDS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | {".zip"}

# model archives: the limits an import enforces before unpacking anything (what an export holds is
# engine.models.folder's portable_files)
ARCHIVE_MAX_MEMBERS = 200
ARCHIVE_MAX_BYTES = 8 << 30  # uncompressed, all members
ARCHIVE_MAX_RATIO = 200  # uncompressed / compressed for a member over 1 MiB (zip bombs)


def check_name(name: str, what: str = "project name") -> str:
    """A name that is safe as one folder: letters, digits, space, `_ . -`; not starting with `.`."""
    name = (name or "").strip()
    if not NAME_RE.match(name) or name.endswith("."):
        raise UserError(f"{what} {name!r} is not allowed: use 1-64 letters, digits, spaces, '_', '.' or '-', "
                        "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Project:
    owner: str
    name: str
    path: Path

    def faces(self, side: str) -> Path:
        if side not in SIDES:
            raise ValueError(f"side must be A or B, got {side!r}")
        return self.path / "faces" / side

    def uploads(self, side: str) -> Path:
        return self.path / "uploads" / side

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def outputs(self) -> Path:
        return self.path / "outputs"

    @property
    def evaluations(self) -> Path:
        """One folder per quality report (engine.evaluate), named after the video and the time."""
        return self.outputs / "evaluations"

    def videos(self) -> list[Path]:
        """Videos this project was sent (for face sets, swaps or evaluations), newest first."""
        found = [p for p in (self.path / "uploads").glob("*/*")
                 if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def reports(self) -> list[Path]:
        """Finished evaluation folders (engine.evaluate.report.is_report), newest first."""
        from engine.evaluate.report import is_report

        folder = self.evaluations
        found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_report(p)
                 ] if folder.is_dir() else []
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class Workspace:
    """The folder holding every owner's projects."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def owner_dir(self, owner: str | None) -> Path:
        return self.root / check_name(owner or LOCAL_OWNER, "user name")

    def projects(self, owner: str | None) -> list[str]:
        """The owner's project names, most recently used first."""
        folder = self.owner_dir(owner)
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.is_dir() and NAME_RE.match(p.name)]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    def create(self, owner: str | None, name: str) -> Project:
        project = self._project(owner, name)
        if project.path.exists():
            raise UserError(f"a project called {project.name!r} exists already: open it, or pick another name")
        for sub in ("faces/A", "faces/B", "model", "outputs", "uploads/A", "uploads/B"):
            (project.path / sub).mkdir(parents=True, exist_ok=True)
        return project

    def open(self, owner: str | None, name: str) -> Project:
        project = self._project(owner, name)
        if not project.path.is_dir():
            raise UserError(f"there is no project called {project.name!r}: create it first")
        project.path.touch()  # most recently used first in the list
        return project

    def _project(self, owner: str | None, name: str) -> Project:
        owner = check_name(owner or LOCAL_OWNER, "user name")
        name = check_name(name)
        return Project(owner, name, self.root / owner / name)


def split_uploads(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Uploaded files -> (usable media and zips, one 'name: why' line per refused file)."""
    usable, refused = [], []
    for raw in paths or []:
        path = Path(raw)
        if path.suffix.lower() not in UPLOAD_KINDS:
            kinds = "photos (jpg, png, webp, ...), videos (mp4, mov, mkv, webm, ...) or .zip archives of them"
            refused.append(f"{path.name}: not a photo, video or zip; send {kinds}")
        elif not path.is_file() or path.stat().st_size == 0:
            refused.append(f"{path.name}: empty or missing upload")
        else:
            usable.append(path)
    return usable, refused


def keep_uploads(project: Project, side: str, paths: list[Path]) -> list[Path]:
    """Keep uploads in the project (the upload cache is cleaned up; the face set names these files): hard
    links where the file system allows, so an upload is not stored twice while Gradio's cache holds it.

    Names are made safe and unique; an identical file already kept is reused, so uploading the same
    photo twice does not extract it twice.
    """
    folder = project.uploads(side)
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._")[:80] or "upload"
        target = folder / f"{stem}{path.suffix.lower()}"
        n = 1
        while target.exists() and not _same_file(target, path):
            target = folder / f"{stem}-{n}{path.suffix.lower()}"
            n += 1
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(path, target)
        kept.append(target)
    return kept


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def export_model(project: Project) -> Path:
    """Zip the model folder's portable files (weights, config, optimizer, loss log, latest preview, the
    colour net's) into the project's outputs, replacing the previous archive.

    One archive per project, inside it (so it counts against the owner's quota and goes with the
    project), written under a temporary name and renamed. Weights go in uncompressed (floats do not
    deflate) so that exporting a big model stays fast.
    """
    from engine.atomic import write_with

    folder = project.model_dir
    if not model_folder.is_model_dir(folder):
        raise UserError("this project has no trained model yet: train one first (Train tab)")
    out = project.outputs / f"{project.name.replace(' ', '_')}-model.zip"

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            for path, name in model_folder.portable_files(folder):
                method = zipfile.ZIP_DEFLATED if path.suffix in (".json", ".csv") else zipfile.ZIP_STORED
                zf.write(path, f"model/{name}", compress_type=method)
    write_with(out, write)
    return out


def import_model(project: Project, archive: str | Path) -> str:
    """Unpack an uploaded model zip into the project's model folder, safely; -> a message for the user.

    Every member name is checked before anything is written (no absolute paths, no `..`, no links,
    size and ratio limits), files are written only below a fresh folder inside the project, and the
    result must load as a model (architecture and weights match) before it replaces model/.
    The model it replaces is kept as model.previous/.
    """
    from engine.models import load_model

    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"{archive.name} is not a readable zip archive ({err})") from err
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=project.path))
    try:
        with zf:
            members = _checked_members(zf, archive.name)
            for info, parts in members:
                target = staging.joinpath(*parts)
                if not target.resolve().is_relative_to(staging.resolve()):
                    raise UserError(f"{archive.name}: member {info.filename!r} points outside the archive")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError, zlib.error) as err:
                    raise UserError(f"{archive.name}: member {info.filename!r} cannot be read ({err}); "
                                    "upload a zip made with 'Download model'") from err
        root = model_folder.model_root(staging)
        if root is None or not model_folder.is_model_dir(root):
            raise UserError(f"{archive.name} holds no model folder ({model_folder.CONFIG} + {model_folder.WEIGHTS} "
                            "written by training): upload a zip made with 'Download model'")
        try:
            load_model(root, "cpu")  # raises a UserError naming the problem when it does not load
        except UserError as err:  # named after the upload, not the server's staging folder
            raise UserError(str(err).replace(str(root), archive.name)) from err
        _check_optimizers(root, archive.name)
        iteration = model_folder.summary(root)["iteration"]
        previous = project.path / "model.previous"
        if project.model_dir.exists():
            from engine.models.lock import FolderBusyError, training_lock

            try:
                with training_lock(project.model_dir):  # refused while a training (CLI or web) holds it
                    pass
            except FolderBusyError as err:
                raise UserError("this project's model is being trained: stop the training, then import "
                                "the archive") from err
            if any(project.model_dir.iterdir()):
                if previous.exists():
                    shutil.rmtree(previous)
                project.model_dir.rename(previous)
            else:
                project.model_dir.rmdir()
        root.rename(project.model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = " (the model it replaced is kept in model.previous/)" if (project.path / "model.previous").exists() else ""
    return f"model imported at iteration {iteration}{kept}: press Resume to continue training"


def _check_optimizers(root: Path, name: str) -> None:
    """Optimizer files must load as plain tensors (what Resume reads): a pickle that would run code, or any
    other object, is refused at import rather than failing the training that Resume starts later."""
    import torch

    for file in (model_folder.OPTIMIZER, model_folder.COLOR_OPTIMIZER):
        if (root / file).is_file():
            try:
                state = torch.load(root / file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as err:
                raise UserError(f"{name}: {file} is not an optimizer state saved by training (it holds Python "
                                "objects other than tensors, which could run code when loaded); upload a zip "
                                "made with 'Download model'") from err
            except Exception as err:  # any failure means it is not what training wrote
                raise UserError(f"{name}: {file} is not an optimizer state saved by training (it cannot be "
                                f"read: {type(err).__name__}); upload a zip made with 'Download model'") from err
            if not isinstance(state, dict) or "optimizer" not in state:
                raise UserError(f"{name}: {file} is not an optimizer state saved by training; "
                                "upload a zip made with 'Download model'")


def _checked_members(zf: zipfile.ZipFile, name: str) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    infos = zf.infolist()
    if len(infos) > ARCHIVE_MAX_MEMBERS:
        raise UserError(f"{name}: {len(infos)} members is more than a model archive holds")
    total, members = 0, []
    for info in infos:
        raw = info.filename
        if not raw:  # before is_dir(), which fails on it
            raise UserError(f"{name}: a member has an empty name; upload a zip made with 'Download model'")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise UserError(f"{name}: member {raw!r} is encrypted (password-protected); "
                            "upload a zip made with 'Download model'")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            raise UserError(f"{name}: member {raw!r} uses compression method {info.compress_type}, which cannot "
                            "be read here; upload a zip made with 'Download model'")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{name}: member {raw!r} is a link; model archives hold plain files only")
        path = PurePosixPath(raw.replace("\\", "/"))
        if path.is_absolute() or ":" in raw or any(p in ("..", "") for p in path.parts):
            raise UserError(f"{name}: member {raw!r} points outside the archive (refused)")
        total += info.file_size
        if info.file_size > (1 << 20) and info.file_size > ARCHIVE_MAX_RATIO * max(info.compress_size, 1):
            raise UserError(f"{name}: member {raw!r} expands {info.file_size // max(info.compress_size, 1)}x "
                            "(a zip bomb?)")
        if total > ARCHIVE_MAX_BYTES:
            raise UserError(f"{name}: over {ARCHIVE_MAX_BYTES >> 30} GiB unpacked, more than any model")
        members.append((info, path.parts))
    return members
