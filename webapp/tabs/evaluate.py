"""Evaluate tab: measure the project's model on a video of A and show the quality report.

The job is `engine.evaluate.run.evaluate` (the same code as `python -m engine evaluate`) on the
`media` lane, with the project's face sets as identity references. Each report stays in
`outputs/evaluations/<video>-<time>/` (report.json, report.html, PNGs, swapped.mp4), so reports of
earlier models remain there to compare. The tab shows the picked report's own page (report.html
with its images inlined, engine.evaluate.report.standalone_html), so the browser and the CLI user
read the same report.
"""

from __future__ import annotations

import html
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from engine.errors import UserError
from engine.evaluate.options import EvaluateOptions
from engine.evaluate.report import SavedReport, format_value, read_report, standalone_html
from webapp import tasks
from webapp.jobs import DONE, Job, describe
from webapp.projects import Project, keep_uploads, split_uploads
from webapp.settings_form import SettingsForm
from webapp.state import Studio, active_view, job_controls, newly_done, progress_bar, publish

POLL_S = 2.0
DEFAULT_FRAMES = 120
PAGE_HEIGHT = 1400  # px of the report's iframe (it scrolls inside)


NOT_SHOWN = {"strip": "the report's strip of pairs is sized for its page",
             "smooth": "the swap's default smoothing (placement and Poisson colour), as the Swap tab renders videos",
             "detector": "auto: the detector extraction would pick",
             "settings": "the swap's default settings, so that reports of different models compare"}
GIVEN = {"model": "the project's model", "video": "the uploaded or picked video", "out": "a new report folder",
         "faces_a": "the project's face set A", "faces_b": "the project's face set B",
         "device": "the server's --device"}


def render(studio: Studio) -> SimpleNamespace:
    form = SettingsForm(EvaluateOptions, not_shown=NOT_SHOWN, given=GIVEN)
    gr.Markdown("Swap a video of **A** with the project's model and measure the result: is the face B's, "
                "are A's expression and head pose kept, is it sharp, is the seam visible, does it flicker, "
                "how fast is it. The face sets A and B of the project are the identity references.")
    with gr.Row():
        video = gr.Video(label="Video of A", sources=["upload"], height=300, elem_id="evaluate-video")
        with gr.Column():
            known = gr.Dropdown([], value=None, label="... or a video this project already has",
                                elem_id="evaluate-known")
            # the page's sample (the engine's default, None, is the whole video: slow on a CPU)
            form.add("frames", gr.Number, value=DEFAULT_FRAMES, show=lambda n: n or 0,
                     parse=lambda n: int(n or 0) or None, precision=0, minimum=0, label="Frames to measure",
                     info="a sample spread over the video, in runs of 5 consecutive frames; "
                          "0 = the whole video through the full render (decode, swap, encode)",
                     elem_id="evaluate-frames")
            form.add("reference_faces", gr.Slider, minimum=10, maximum=300, step=10,
                     label="Reference faces per face set", info="faces of A and of B embedded for the identity means",
                     elem_id="evaluate-references")
    start, stop, bar, status = job_controls("evaluate", "Evaluate")
    report = gr.Dropdown([], value=None, label="Report", info="newest first", elem_id="evaluate-report")
    page = gr.HTML("", elem_id="evaluate-page")
    with gr.Row():
        swapped = gr.Video(label="Swapped video (whole-video evaluations)", interactive=False, height=300,
                           elem_id="evaluate-swapped")
        files = gr.File(label="Download the report (zip: its page with the images, and every figure as JSON)",
                        interactive=False, elem_id="evaluate-files")
    return SimpleNamespace(form=form, video=video, known=known, start=start, stop=stop,
                           bar=bar, status=status, report=report, page=page, swapped=swapped, files=files,
                           timer=gr.Timer(POLL_S), seen=gr.State({}))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    shown = [ui.page, ui.swapped, ui.files]

    @ui.form.takes
    def start(name, video, known, settings: Callable[..., EvaluateOptions], request: gr.Request):
        proj = studio.project(request, name)
        try:
            source = _pick_video(proj, video, known)
            options = settings(model=proj.model_dir, video=source, out=tasks.report_folder(proj, source),
                               faces_a=proj.faces("A"), faces_b=proj.faces("B"), device=studio.device)
            if options.frames is not None and options.frames < 2:
                raise UserError(f"frames to measure: {options.frames}; use 2 or more, or 0 for the whole video")
            studio.submit(proj, "evaluate", tasks.evaluate_task(proj, options), lane="media")
        except UserError as err:
            raise gr.Error(str(err)) from err
        return {}

    def stop(name, request: gr.Request):
        studio.stop_job(request, name, "evaluate")

    def poll(name, seen, request: gr.Request):
        if not name:
            return progress_bar(0, "no project open"), "", gr.skip(), gr.skip(), {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, "evaluate")
        bar, status = _job_view(studio, job)
        if not newly_done(job, seen):
            return bar, status, gr.skip(), gr.skip(), seen
        # the new report is shown; a video uploaded for it joins the project's list for the next run
        return (bar, status, _report_choices(proj, Path(job.result).name), _video_choices(proj),
                {"shown": job.id})

    def opened(name, request: gr.Request):
        """A project opened: its videos, its reports (the newest shown); the job already seen is not re-shown."""
        if not name:
            return gr.update(choices=[], value=None), gr.update(choices=[], value=None), {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, "evaluate")
        seen = {"shown": job.id} if job is not None and job.state == DONE else {}
        return _video_choices(proj), _report_choices(proj), seen

    def show(name, folder, request: gr.Request):
        if not name or not folder:
            return "", None, None
        proj = studio.project(request, name)
        path = proj.evaluations / Path(folder).name  # a name from the page, never a path
        try:
            return report_view(read_report(path))
        except UserError as err:
            raise gr.Error(str(err)) from err

    poll_io = dict(inputs=[project, ui.seen], outputs=[ui.bar, ui.status, ui.report, ui.known, ui.seen])
    ui.start.click(start, inputs=[project, ui.video, ui.known, *ui.form.components],
                   outputs=ui.seen).then(poll, **poll_io)
    ui.stop.click(stop, inputs=project).then(poll, **poll_io)
    ui.timer.tick(poll, **poll_io, show_progress="hidden", concurrency_limit=None)
    ui.video.upload(lambda: gr.update(value=None), outputs=ui.known)  # the upload is the video now
    project.change(opened, inputs=project, outputs=[ui.known, ui.report, ui.seen]).then(poll, **poll_io)
    ui.report.change(show, inputs=[project, ui.report], outputs=shown)


def _pick_video(proj: Project, upload: str | None, known: str | None) -> Path:
    """The uploaded video (kept in the project) or one the project has; never a path the page made up."""
    if upload:
        usable, refused = split_uploads([upload])
        if refused:
            raise UserError(refused[0])
        return keep_uploads(proj, "evaluate", usable)[0]
    if known:
        for path in proj.videos():
            if str(path.relative_to(proj.path)) == known:
                return path
        raise UserError(f"the project has no video {known!r} any more: upload it again")
    raise UserError("upload a video of A (or pick one the project has) first")


def _job_view(studio: Studio, job: Job | None) -> tuple[str, str]:
    active = active_view(studio, job, "loading the model", "step")
    if active is not None:
        return active
    if job.state == DONE and job.result is not None:
        return progress_bar(1.0, "done"), f"**done**: report `{Path(job.result).name}` (shown below)"
    return progress_bar(0, job.state), f"**{describe(job.kind)} {job.state}**: {job.message}"


def _video_choices(proj: Project):
    choices = [(f"{p.name} ({p.parent.name})", str(p.relative_to(proj.path))) for p in proj.videos()]
    return gr.update(choices=choices, value=None)


def _report_choices(proj: Project, pick: str | None = None):
    """The project's reports as (label, folder name), newest first; `pick` (or the newest) selected."""
    choices = []
    for folder in proj.reports():
        try:
            summary = read_report(folder).report["summary"]
        except UserError:
            continue
        choices.append((f"{folder.name}: retrieval {format_value(summary.get('id_retrieval'))}, verified as B "
                        f"{format_value(summary.get('id_verified'))}, flicker {format_value(summary.get('flicker'))}",
                        folder.name))
    names = [value for _, value in choices]
    return gr.update(choices=choices, value=pick if pick in names else (names[0] if names else None))


def report_view(saved: SavedReport) -> tuple[str, str | None, str]:
    """What the tab shows of a report: the report page itself (in an iframe), the swapped video, the zip."""
    frame = (f'<iframe title="quality report" srcdoc="{html.escape(standalone_html(saved))}" '
             f'style="width:100%;height:{PAGE_HEIGHT}px;border:1px solid var(--border-color-primary);'
             f'border-radius:6px;background:white"></iframe>')
    video = publish(saved.video) if saved.video else None
    return frame, video, publish(report_archive(saved))


def report_archive(saved: SavedReport) -> Path:
    """report.zip beside the report: the page, its images and report.json (the video stays out: size)."""
    from engine.atomic import write_with

    target = saved.folder / "report.zip"
    if target.is_file() and target.stat().st_mtime >= saved.figures.stat().st_mtime:
        return target
    root = saved.folder.name

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [saved.page, saved.figures, *saved.plots,
                         *saved.reconstructions.values(), *(p for _, p in saved.pairs)]:
                zf.write(path, f"{root}/{path.relative_to(saved.folder)}")
    write_with(target, write)
    return target
