"""What every tab shares: the workspace, the job manager, the signed-in user, small display helpers.

One `Studio` is built per server and handed to each tab's render/listen, so tabs hold no globals
and tests can build several apps side by side.
"""

from __future__ import annotations

import hashlib
import html
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from engine.errors import UserError
from engine.models import folder as model_folder
from webapp.jobs import DONE, QUEUED, RUNNING, Job, JobManager, describe, format_eta, ordinal
from webapp.projects import Project, Workspace


class LoadedSwapper:
    """One project's `Swapper` plus what makes re-rendering a photo fast: its lock and detections.

    A settings change re-runs only model, colour and blend; the faces found in a photo are kept
    (keyed by the photo's bytes and the face rule), since detection is the slow part on a CPU.
    """

    def __init__(self, swapper, stamp: tuple) -> None:
        self.swapper, self.stamp = swapper, stamp
        self.lock = threading.Lock()
        self._faces: OrderedDict[tuple, list] = OrderedDict()

    def landmarks(self, rgb) -> list:
        """Landmarks of the faces the current face rule picks in `rgb` (cached; call under `lock`)."""
        settings = self.swapper.settings
        key = (hashlib.sha1(rgb.tobytes()).hexdigest(), rgb.shape, settings.faces, settings.min_score)
        if key not in self._faces:
            self._faces[key] = [f.landmarks for f in self.swapper.find_faces([rgb])[0]]
            while len(self._faces) > 16:
                self._faces.popitem(last=False)
        self._faces.move_to_end(key)
        return self._faces[key]


class SwapperCache:
    """Loaded swappers per project, reloaded when training saves the model again (a few at most)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], LoadedSwapper] = OrderedDict()

    def get(self, project: Project, device: str = "auto") -> LoadedSwapper:
        from engine.swap.pipeline import Swapper

        stamp = model_folder.stamp(project.model_dir)
        key = (project.owner, project.name)
        with self._lock:  # one load at a time: two visitors asking at once must not load twice
            entry = self._entries.get(key)
            if entry is None or entry.stamp != stamp:
                if stamp is None:
                    raise UserError("this project has no trained model yet: train one first (Train tab)")
                entry = LoadedSwapper(Swapper(project.model_dir, device=device), stamp)
                self._entries[key] = entry
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return entry


@dataclass
class Studio:
    workspace: Workspace
    jobs: JobManager = field(default_factory=JobManager)
    auth: bool = False
    max_upload_mb: int = 2048
    device: str = "auto"
    swappers: SwapperCache = field(default_factory=SwapperCache)

    @property
    def limits(self):
        return self.jobs.limits

    def submit(self, project: Project, kind: str, task, lane: str = "media", info: dict | None = None) -> Job:
        """Queue a tab's job for `project` once the owner's disk quota allows it (every tab submits here)."""
        self.check_quota(project.owner)
        return self.jobs.submit(project.owner, project.name, kind, task, lane=lane, info=info)

    def check_quota(self, owner: str) -> None:
        """UserError when the owner's projects take more disk than `--quota-mb` allows."""
        quota = self.limits.quota_mb
        if not quota:
            return
        used = folder_mb(self.workspace.owner_dir(owner))
        if used >= quota:
            raise UserError(f"your projects take {used:.0f} MB of disk, the most this server allows each user "
                            f"(--quota-mb {quota}): delete a project or its outputs first")

    def owner(self, request: gr.Request | None) -> str:
        """The signed-in user (the folder their projects live in) or the single local owner."""
        user = getattr(request, "username", None) if request is not None else None
        if self.auth and not user:
            raise gr.Error("sign in first")
        return user or "local"

    def project(self, request: gr.Request | None, name: str | None) -> Project:
        """The caller's open project; gr.Error when none is open (the owner never comes from the page)."""
        if not name:
            raise gr.Error("open or create a project first (top of the page)")
        try:
            return self.workspace.open(self.owner(request), name)
        except UserError as err:
            raise gr.Error(str(err)) from err


    def stop_job(self, request: gr.Request | None, name: str | None, kind: str) -> Job | None:
        """Stop the open project's running or queued job of `kind` (the Stop buttons); a notice if none."""
        proj = self.project(request, name)
        job = self.jobs.find(proj.owner, proj.name, kind)
        if job is None or not job.active:
            gr.Info(f"no {describe(kind)} is running for this project")
            return None
        self.jobs.stop(job)
        return job


def publish(path: str | Path) -> str:
    """A path Gradio may hand to the browser.

    Gradio copies returned files into its cache only from the working directory or the temp
    folder, and we do not want the whole workspace in `allowed_paths` (any signed-in user could
    then fetch any other user's file by its path). Files elsewhere are linked (or copied) into a
    private temp folder first.
    """
    path = Path(path).resolve()
    for base in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if path.is_relative_to(base):
            return str(path)
    stat = path.stat()
    key = hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / "faceswap-studio-publish"
    sweep_published(root)
    target = root / key / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return str(target)


PUBLISHED_KEEP_S = 3600  # Gradio copies a returned file into its own cache at once: an hour is ample
_swept = [0.0]


def sweep_published(root: Path, now: float | None = None) -> int:
    """Remove published links older than PUBLISHED_KEEP_S (at most once a minute): a face removed from a
    set, or a deleted render, does not live on here. -> how many were removed."""
    import time

    now = time.time() if now is None else now
    if now - _swept[0] < 60:
        return 0
    _swept[0] = now
    removed = 0
    for folder in root.glob("*") if root.is_dir() else []:
        try:
            if now - folder.stat().st_mtime > PUBLISHED_KEEP_S:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def waiting_view(studio: Studio, job: Job | None, starting: str) -> tuple[str, str] | None:
    """Bar and status while a job has nothing of its own to show (none, queued, starting), else None."""
    if job is None:
        return progress_bar(0, "idle"), ""
    if job.state == QUEUED:
        place = studio.jobs.position(job)
        return progress_bar(0, f"queued: {ordinal(place)} in line"), f"waiting for {place - 1} job(s) ahead"
    if job.state == RUNNING and job.progress is None:
        return progress_bar(0, f"starting: {starting}"), ""
    return None


def job_controls(prefix: str, label: str) -> tuple[gr.Button, gr.Button, gr.HTML, gr.Markdown]:
    """A media tab's Start and Stop buttons, progress bar and status line (elem ids `PREFIX-start`, ...)."""
    with gr.Row():
        start = gr.Button(label, variant="primary", elem_id=f"{prefix}-start")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    return start, stop, gr.HTML(progress_bar(0, "idle"), elem_id=f"{prefix}-bar"), gr.Markdown("", elem_id=f"{prefix}-status")


def active_view(studio: Studio, job: Job | None, starting: str, unit: str) -> tuple[str, str] | None:
    """Bar and status while a job waits, starts or runs (`unit` N/M with the ETA); None once it ended."""
    waiting = waiting_view(studio, job, starting)
    if waiting is not None:
        return waiting
    return (running_bar(job, unit), "") if job.state == RUNNING else None


def running_bar(job: Job, unit: str) -> str:
    """The bar of a running job: its message and `unit` N/M with the ETA (Evaluate and Export)."""
    event = job.progress
    text = event.message or "working"
    if event.total:
        text += f": {unit} {event.step}/{event.total}" + (f", ETA {format_eta(event.eta_s)}" if event.eta_s else "")
    return progress_bar(event.fraction or 0, text)


def folder_mb(folder: Path) -> float:
    """Disk taken by the files under `folder`, in MB (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we counted
    return total / 1e6


def newly_done(job: Job | None, seen: dict) -> bool:
    """Whether a poll meets this finished job's result for the first time (shown once, not at every tick)."""
    return job is not None and job.state == DONE and job.result is not None and seen.get("shown") != job.id


def progress_bar(fraction: float | None, text: str) -> str:
    """An HTML progress bar (jobs run outside requests, so Gradio's own request bars do not apply)."""
    pct = 0.0 if fraction is None else max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="job-bar"><div class="job-bar-fill" style="width:{pct:.1f}%"></div>'
            f'<span class="job-bar-text">{html.escape(text)}</span></div>')


CSS = """
.job-bar { position: relative; height: 1.6rem; border-radius: 6px; overflow: hidden;
           background: var(--neutral-200); margin: 4px 0; }
.job-bar-fill { position: absolute; inset: 0 auto 0 0; background: var(--primary-400); transition: width .5s; }
.job-bar-text { position: relative; padding-left: 8px; line-height: 1.6rem; font-size: .9rem;
                color: var(--neutral-900); }
"""
