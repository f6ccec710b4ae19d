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
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from engine.errors import UserError
from webapp.jobs import JobManager
from webapp.projects import Project, Workspace


@dataclass
class Studio:
    workspace: Workspace
    jobs: JobManager = field(default_factory=JobManager)
    auth: bool = False
    max_upload_mb: int = 2048
    device: str = "auto"

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
    target = Path(tempfile.gettempdir()) / "faceswap-studio-publish" / key / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return str(target)


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
