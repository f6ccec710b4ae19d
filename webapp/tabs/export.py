"""Export tab: a deepfake-detector training set from the project's videos and model, as one zip.

The job is `engine.export.run.export_dataset` (the same code as `python -m engine export-dataset`) on
the `media` lane, with the project's model as the one model; the identity it puts in is named after
the project. The export is written to a temporary folder, zipped to `outputs/exports/<name>.zip`
under a temporary name and renamed, and the folder removed: the zip is the one thing kept and offered
for download, and a stopped or failed export leaves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from engine.errors import UserError
from engine.export.options import COMPRESSIONS, ExportOptions
from engine.media import is_video
from webapp import tasks
from webapp.jobs import DONE, Job, describe
from webapp.projects import Project, keep_uploads, split_uploads
from webapp.settings_form import SettingsForm
from webapp.state import Studio, active_view, job_controls, newly_done, progress_bar, publish

POLL_S = 2.0
KIND = tasks.EXPORT
DEFAULT_FRAMES = 300  # per clip: a dataset of long clips is a long job on a CPU
SPLIT_CHOICES = [
    ("by identity: nobody in two splits, the face put in included (one model: only train gets fakes)", "identity"),
    ("by source: the clips' people apart; the model's face appears in every split", "source"),
]


NOT_SHOWN = {"crop_scale": "the face box x1.3, as most detectors train on", "crop_every": "a crop of every frame",
             "split": "FaceForensics++'s 70/15/15", "seed": "fixed, so that an export can be made again",
             "detector": "auto: the detector extraction would pick"}
GIVEN = {"videos": "the picked and uploaded videos", "models": "the project's model, named after the project",
         "out": "a new dataset folder, zipped", "device": "the server's --device"}


def render(studio: Studio) -> SimpleNamespace:
    form = SettingsForm(ExportOptions, not_shown=NOT_SHOWN, given=GIVEN)
    gr.Markdown("Build a **deepfake-detector training set**: real clips and the project model's swaps of them, laid "
                "out as FaceForensics++ (original and manipulated videos at each compression, a binary mask per "
                "fake frame, a manifest, a train/val/test split), as one zip. For detector training only: every "
                "fake says in its metadata that it is synthetic.")
    with gr.Row():
        with gr.Column():
            known = gr.Dropdown([], value=[], multiselect=True, label="The project's videos",
                                info="each clip is taken as one person", elem_id="export-known")
            upload = gr.File(label="... and/or upload videos of real people", file_count="multiple",
                             file_types=["video"], height=140, elem_id="export-upload")
        with gr.Column():
            form.add("compressions", gr.CheckboxGroup, choices=list(COMPRESSIONS), show=list,
                     label="Compression (H.264 crf 0, 23, 40, as FF++)", elem_id="export-compressions")
            # the page's first N frames (the engine's default, None, is every frame: slow on a CPU)
            form.add("max_frames", gr.Number, value=DEFAULT_FRAMES, show=lambda n: n or 0,
                     parse=lambda n: int(n or 0) or None, precision=0, minimum=0, label="Frames per clip",
                     info="the first N frames of each clip; 0 = all", elem_id="export-frames")
            form.add("split_by", gr.Radio, choices=SPLIT_CHOICES, label="Split", elem_id="export-split-by")
            with gr.Row():
                form.add("crops", gr.Checkbox, label="Face crops too (PNG, face box x1.3)", elem_id="export-crops")
                form.add("balance", gr.Checkbox, label="Balance real and fake frames", elem_id="export-balance")
                form.add("watermark", gr.Checkbox, label="Watermark the swapped faces", elem_id="export-watermark")
    start, stop, bar, status = job_controls("export", "Export dataset")
    download = gr.File(label="Dataset (zip)", interactive=False, elem_id="export-download")
    return SimpleNamespace(form=form, known=known, upload=upload, start=start, stop=stop, bar=bar,
                           status=status, download=download, timer=gr.Timer(POLL_S), seen=gr.State({}))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    @ui.form.takes
    def start(name, known, uploads, settings: Callable[..., ExportOptions], request: gr.Request):
        proj = studio.project(request, name)
        try:
            videos = pick_videos(proj, known or [], uploads or [])
            # videos, models and out are the job's to fill: the uploads are kept first, the folder made last
            options = settings(videos=[], models=[], out=Path(), device=studio.device)
            if not options.compressions:
                raise UserError("tick at least one compression level")
            if options.max_frames is not None and options.max_frames < 0:
                raise UserError(f"frames per clip: {options.max_frames}; use 1 or more, or 0 for every frame")
            studio.submit(proj, KIND, tasks.export_task(proj, videos, options), lane="media")
        except UserError as err:
            raise gr.Error(str(err)) from err
        return {}

    def stop(name, request: gr.Request):
        studio.stop_job(request, name, KIND)

    def poll(name, seen, request: gr.Request):
        if not name:
            return progress_bar(0, "no project open"), "", gr.skip(), gr.skip(), {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, KIND)
        bar, status = _job_view(studio, job)
        if not newly_done(job, seen):
            return bar, status, gr.skip(), gr.skip(), seen
        return bar, status, publish(job.result["zip"]), _video_choices(proj), {"shown": job.id}

    def opened(name, request: gr.Request):
        """A project opened: its videos, its newest export; the job already seen is not re-shown."""
        if not name:
            return gr.update(choices=[], value=[]), None, {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, KIND)
        seen = {"shown": job.id} if job is not None and job.state == DONE else {}
        zips = tasks.exports(proj)
        return _video_choices(proj), publish(zips[0]) if zips else None, seen

    poll_io = dict(inputs=[project, ui.seen], outputs=[ui.bar, ui.status, ui.download, ui.known, ui.seen])
    ui.start.click(start, inputs=[project, ui.known, ui.upload, *ui.form.components],
                   outputs=ui.seen).then(poll, **poll_io)
    ui.stop.click(stop, inputs=project).then(poll, **poll_io)
    ui.timer.tick(poll, **poll_io, show_progress="hidden", concurrency_limit=None)
    project.change(opened, inputs=project, outputs=[ui.known, ui.download, ui.seen]).then(poll, **poll_io)


def pick_videos(proj: Project, known: list[str], uploads: list[str]) -> list[Path]:
    """The picked project videos (by their names on the page, never a path it made up) and the uploads,
    kept in the project."""
    by_name = {str(p.relative_to(proj.path)): p for p in proj.videos()}
    videos = []
    for name in known:
        if name not in by_name:
            raise UserError(f"the project has no video {name!r} any more: upload it again")
        videos.append(by_name[name])
    usable, refused = split_uploads(uploads)
    refused += [f"{p.name}: not a video; send mp4, mov, mkv, webm, ..." for p in usable if not is_video(p)]
    if refused:
        raise UserError(refused[0])
    videos += keep_uploads(proj, KIND, usable)
    if not videos:
        raise UserError("pick or upload at least one video of a real person first")
    return list(dict.fromkeys(videos))


def _job_view(studio: Studio, job: Job | None) -> tuple[str, str]:
    active = active_view(studio, job, "loading the model, checking the videos for faces", "frame")
    if active is not None:
        return active
    if job.state == DONE and job.result is not None:
        r = job.result
        lines = [f"**done**: `{Path(r['zip']).name}`, {r['real']} real and {r['fake']} fake videos"
                 + (f", {r['crops']} face crops" if r["crops"] else "") + " (download below)"]
        lines += [f"- skipped {s}" for s in r["skipped"]] + [f"- note: {n}" for n in r["notes"]]
        return progress_bar(1.0, "done"), "\n".join(lines)
    return progress_bar(0, job.state), f"**{describe(job.kind)} {job.state}**: {job.message}"


def _video_choices(proj: Project):
    choices = [(f"{p.name} ({p.parent.name})", str(p.relative_to(proj.path))) for p in proj.videos()]
    return gr.update(choices=choices, value=[])
