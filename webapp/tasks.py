"""What each job does (extract, train, render, evaluate, export), apart from the page that asks for it.

Why a module of its own: a job runs in the web server's worker or in `python -m webapp.worker` (another
process, maybe another machine), which finds a job body by its name in the job's row; neither needs
Gradio, and a body that lived in a tab made the worker import the whole page. Each `*_task` checks what
it can before the job is queued (UserError) and returns the `Task`; the function it names is the body.
No Gradio here (tests/test_architecture.py).
"""

from __future__ import annotations

import shutil
import time
import zipfile
from dataclasses import replace
from pathlib import Path

from engine.errors import UserError
from engine.evaluate.options import EvaluateOptions
from engine.export.options import ExportOptions
from engine.faces.extract import ExtractOptions
from engine.faces.faceset import face_count
from engine.progress import Progress
from engine.swap.settings import SwapSettings
from engine.train.config import TrainConfig
from webapp.jobs import Job, Task
from webapp.projects import Project

EXPORT = "export"  # the export job's kind, which its progress events carry
STORED = {".mp4", ".png"}  # compressed already: stored as they are in a zip, which keeps zipping fast


def extract_task(project: Project, side: str, inputs: list[Path], opts: ExtractOptions) -> Task:
    return Task(extract, {"project": project, "side": side, "inputs": list(inputs), "opts": opts})


def extract(job: Job, project: Project, side: str, inputs: list[Path], opts: ExtractOptions):
    from engine.faces.extract import extract as extract_faces

    return extract_faces(inputs, project.faces(side), opts, listeners=[job.listen], stop=job.stop)


def train_task(config: TrainConfig) -> Task:
    """The training as a task that survives a restart: after an interruption it resumes from its last save."""
    return Task(train, {"config": config}, resume={"config": replace(config, resume=True)})


def train(job: Job, config: TrainConfig) -> dict:
    from engine.models import folder as model_folder
    from engine.models import is_model_dir
    from engine.train.trainer import train as train_model

    if config.resume and not is_model_dir(config.model_dir):  # interrupted before its first save
        config = replace(config, resume=False)
    if config.resume:
        job.add_losses(model_folder.loss_history(config.model_dir))  # the chart goes on where it ended
    result = train_model(config, listeners=[job.listen], stop=job.stop)
    if result.status == "diverged":
        raise UserError(f"training diverged (loss became NaN/Inf) at iteration {result.iteration}: the model "
                        "keeps its last good save; lower the learning rate or the batch size and Resume")
    return {"status": result.status, "iteration": result.iteration}  # not the model: free its memory


def render_task(project: Project, source: Path, out: Path, settings: SwapSettings, device: str) -> Task:
    return Task(render, {"project": project, "source": source, "out": out, "settings": settings, "device": device})


def render(job: Job, project: Project, source: Path, out: Path, settings: SwapSettings, device: str) -> Path | None:
    from engine.swap.pipeline import Swapper
    from engine.swap.video import swap_video

    swapper = Swapper(project.model_dir, settings, device=device)  # its own: settings fixed for the render
    return swap_video(swapper, source, out, listeners=[job.listen], stop=job.stop).out


def report_folder(project: Project, source: Path) -> Path:
    """Where a new evaluation of `source` writes its report: its own folder, so earlier reports stay."""
    return project.evaluations / f"{source.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def evaluate_task(project: Project, options: EvaluateOptions) -> Task:
    _need_model(project)
    for side in ("A", "B"):
        if face_count(project.faces(side)) == 0:
            raise UserError(f"face set {side} is empty: extract faces of {side} first (Face sets tab)")
    return Task(evaluate, {"options": options})


def evaluate(job: Job, options: EvaluateOptions) -> Path | None:
    from engine.evaluate.run import evaluate as evaluate_model

    finished = False
    try:
        finished = evaluate_model(options, listeners=[job.listen], stop=job.stop)["status"] == "done"
    finally:
        if not finished:  # stopped or failed: no half report left to be mistaken for a whole one
            shutil.rmtree(options.out, ignore_errors=True)
    return options.out if finished else None


def exports_dir(project: Project) -> Path:
    return project.outputs / "exports"


def exports(project: Project) -> list[Path]:
    """The project's finished export zips, newest first."""
    folder = exports_dir(project)
    found = [p for p in folder.glob("*.zip") if not p.name.startswith(".")] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def export_task(project: Project, videos: list[Path], settings: ExportOptions) -> Task:
    """The job: export with the project's model (named after the project), zip, keep only the zip."""
    _need_model(project)
    return Task(export, {"proj": project, "videos": list(videos), "settings": settings})


def export(job: Job, proj: Project, videos: list[Path], settings: ExportOptions) -> dict | None:
    from engine.export.options import ModelInput, VideoInput
    from engine.export.run import export_dataset

    out = exports_dir(proj) / f"dataset-{time.strftime('%Y%m%d-%H%M%S')}"
    options = replace(settings, videos=[VideoInput(v) for v in videos],
                      models=[ModelInput(proj.model_dir, proj.name)], out=out)
    try:
        report = export_dataset(options, listeners=[job.listen], stop=job.stop)
        if report.status != "done":
            return None
        last = job.progress
        job.listen(Progress(EXPORT, last.step if last else 0, last.total if last else None,
                            message="zipping the dataset"))
        target = zip_folder(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    fakes = sum(r["label"] == "fake" for r in report.rows)
    return {"zip": str(target), "real": len(report.rows) - fakes, "fake": fakes, "crops": report.crops,
            "skipped": report.skipped, "notes": report.notes}


def zip_folder(folder: Path) -> Path:
    """`folder` as `<folder>.zip` beside it (members under `<folder name>/`), written under a temporary name."""
    from engine.atomic import write_with

    target = folder.with_suffix(".zip")

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}",
                         compress_type=zipfile.ZIP_STORED if path.suffix in STORED else zipfile.ZIP_DEFLATED)
    write_with(target, write)
    return target


def _need_model(project: Project) -> None:
    from engine.models import is_model_dir

    if not is_model_dir(project.model_dir):
        raise UserError("this project has no trained model yet: train one first (Train tab)")
