"""Face sets tab: upload photos, zips or videos for A and B, extract in the background, prune bad faces.

Extraction is `engine.faces.extract` run as a job (webapp.jobs), one per side at a time; the page
polls the job for its progress bar. The gallery pages through the aligned faces; clicking a face
marks it, and "Remove marked" deletes the marked faces through `FaceSet.remove`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from engine.errors import UserError
from engine.faces.detectors import DETECTORS, choose_detector
from engine.faces.extract import ExtractOptions
from engine.faces.faceset import FaceSet, faceset_stamp
from webapp import tasks
from webapp.jobs import DONE, RUNNING, STOPPED, Job, describe
from webapp.projects import SIDES, Project, keep_uploads, split_uploads
from webapp.settings_form import SettingsForm
from webapp.state import Studio, progress_bar, publish, waiting_view

PAGE = 60  # faces per gallery page
POLL_S = 2.0
ROLE = {"A": "the face that gets replaced (e.g. the person in the video you will swap)",
        "B": "the identity put in (e.g. many photos of the new person)"}


NOT_SHOWN = {"coverage": "the face sets' one geometry, which training and swapping assume",
             "min_blur": "blurred faces are pruned by hand in the gallery", "batch_size": "the engine's",
             "pad": "for tight crops such as LFW's: a CLI option", "person_from_folder": "LFW's layout: a CLI option"}
GIVEN = {"device": "the server's --device"}


def render(studio: Studio) -> SimpleNamespace:
    form = SettingsForm(ExtractOptions, not_shown=NOT_SHOWN, given=GIVEN)
    detector, why = choose_detector("auto")
    gr.Markdown("Upload photos, videos or .zip archives of each person, then **Extract**: faces are "
                "found, aligned and added to the project's face set. Click faces to mark bad ones "
                "(wrong person, half a face, blur), then **Remove marked**.")
    with gr.Accordion("Detection settings", open=False):
        with gr.Row():
            form.add("detector", gr.Dropdown, choices=list(DETECTORS), label="Detector",
                     info=f"auto picks {detector} now: {why}")
            form.add("size", gr.Dropdown, choices=[128, 256, 384, 512], label="Face size (px)",
                     info="aligned crop side; a face set keeps one size")
            form.add("select", gr.Radio, choices=["largest", "all"], label="Faces per photo or frame")
        with gr.Row():
            form.add("every", gr.Slider, minimum=1, maximum=30, step=1, label="Keep every Nth video frame",
                     info="2-5 for long videos: neighbouring frames look alike", elem_id="faces-every")
            form.add("min_face", gr.Slider, minimum=16, maximum=256, step=4, label="Smallest face (px)")
            form.add("min_score", gr.Slider, minimum=0.5, maximum=0.99, step=0.01, label="Lowest detector score")
    sides = {}
    with gr.Row():
        for side in SIDES:
            with gr.Column():
                sides[side] = _render_side(side)
    timer = gr.Timer(POLL_S)
    return SimpleNamespace(form=form, sides=sides, timer=timer)


def _render_side(side: str) -> SimpleNamespace:
    gr.Markdown(f"### Face set {side}\n{ROLE[side]}")
    files = gr.File(label=f"Photos, videos or zips of {side}", file_count="multiple",
                    file_types=["image", "video", ".zip"], elem_id=f"faces-upload-{side}", height=140)
    with gr.Row():
        extract = gr.Button(f"Extract faces of {side}", variant="primary", elem_id=f"faces-extract-{side}")
        stop = gr.Button("Stop", variant="stop", elem_id=f"faces-stop-{side}")
    bar = gr.HTML(progress_bar(0, "idle"), elem_id=f"faces-bar-{side}")
    status = gr.Markdown("", elem_id=f"faces-status-{side}")
    gallery = gr.Gallery(label=f"Face set {side}", columns=5, height=420, allow_preview=False,
                         object_fit="cover", elem_id=f"faces-gallery-{side}", interactive=False)
    with gr.Row():
        page = gr.Number(1, precision=0, minimum=1, label="Page", elem_id=f"faces-page-{side}", scale=1)
        marked = gr.Dropdown([], value=[], multiselect=True, label="Marked for removal (click faces)",
                             elem_id=f"faces-marked-{side}", scale=3)
    remove = gr.Button("Remove marked", variant="stop", elem_id=f"faces-remove-{side}")
    return SimpleNamespace(files=files, extract=extract, stop=stop, bar=bar, status=status, gallery=gallery,
                           page=page, marked=marked, remove=remove, shown=gr.State([]), seen=gr.State({}))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    for side, s in ui.sides.items():
        _listen_side(studio, side, s, ui, project)


def _listen_side(studio: Studio, side: str, s: SimpleNamespace, ui: SimpleNamespace, project: gr.State) -> None:
    kind = f"extract:{side}"

    @ui.form.takes
    def start(name, files, settings: Callable[..., ExtractOptions], request: gr.Request):
        proj = studio.project(request, name)
        usable, refused = split_uploads(files or [])
        for line in refused:
            gr.Warning(line)
        if not usable:
            raise gr.Error("no photos, videos or zips to extract from: add some above" if not refused
                           else "none of the uploads can be used (see the warnings)")
        opts = settings(device=studio.device)
        try:
            studio.check_quota(proj.owner)  # before the uploads are kept
            inputs = keep_uploads(proj, side, usable)
            studio.submit(proj, kind, tasks.extract_task(proj, side, inputs, opts), lane="media")
        except UserError as err:
            raise gr.Error(str(err)) from err
        return None

    def stop(name, request: gr.Request):
        studio.stop_job(request, name, kind)

    def poll(name, seen, page, request: gr.Request):
        """Redraw only what changed: the bar and status always, the gallery when the set changed."""
        if not name:
            return progress_bar(0, "no project open"), "", gr.skip(), gr.skip(), gr.skip(), {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, kind)
        bar, status = _job_view(studio, job, side)
        key = {"project": name, "stamp": faceset_stamp(proj.faces(side)), "page": page}
        if seen.get("key") == key:
            return bar, status, gr.skip(), gr.skip(), gr.skip(), seen
        gallery, page_update, shown = _gallery(proj, side, page)
        return bar, status, gallery, page_update, shown, {"key": key}

    def toggle(shown, marked, evt: gr.SelectData):
        if evt.index is None or not 0 <= evt.index < len(shown):
            return gr.skip()
        name = shown[evt.index]
        marked = [m for m in (marked or []) if m != name] if name in (marked or []) else [*(marked or []), name]
        return gr.update(choices=sorted(set(shown) | set(marked)), value=marked)

    def remove(name, marked, request: gr.Request):
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, kind)
        if job is not None and job.active:
            raise gr.Error(f"face set {side} is being extracted into: wait for it or stop it, then remove faces")
        if not marked:
            raise gr.Error("no faces marked: click the faces to remove in the gallery first")
        try:
            removed = FaceSet(proj.faces(side)).remove(list(marked))
        except UserError as err:
            raise gr.Error(str(err)) from err
        gr.Info(f"removed {removed} faces from face set {side}")
        return gr.update(choices=[], value=[]), {}

    poll_io = dict(inputs=[project, s.seen, s.page],
                   outputs=[s.bar, s.status, s.gallery, s.page, s.shown, s.seen])
    s.extract.click(start, inputs=[project, s.files, *ui.form.components], outputs=s.files).then(poll, **poll_io)
    s.stop.click(stop, inputs=project)
    ui.timer.tick(poll, **poll_io, show_progress="hidden", concurrency_limit=None)
    project.change(lambda: {}, outputs=s.seen).then(poll, **poll_io)
    s.page.change(poll, **poll_io)
    s.gallery.select(toggle, inputs=[s.shown, s.marked], outputs=s.marked)
    s.remove.click(remove, inputs=[project, s.marked], outputs=[s.marked, s.seen]).then(poll, **poll_io)


def _job_view(studio: Studio, job: Job | None, side: str) -> tuple[str, str]:
    """Progress bar and status text for the side's newest extraction job."""
    waiting = waiting_view(studio, job, "loading the detector")
    if waiting is not None:
        return waiting
    event = job.progress
    if job.state == RUNNING:
        faces = int(event.metrics.get("faces", 0))
        text = f"{event.step}/{event.total or '?'} {event.unit}s, {faces} faces"
        if event.message:
            text += f" ({event.message})"
        return progress_bar(event.fraction, text), ""
    report = job.result
    if job.state in (DONE, STOPPED) and report is not None:
        head = "stopped" if job.state == STOPPED else "done"
        lines = [f"**{head}**: {report.inputs_read} inputs read, {report.faces_kept} faces kept"
                 + (f" (detector: {report.detector})" if report.detector else "")
                 + (f", {report.inputs_already_done} inputs done before" if report.inputs_already_done else "")]
        lines += [f"- {n} faces dropped: {why}" for why, n in sorted(report.filtered.items())]
        lines += [f"- skipped `{Path(s.source.split('::')[0]).name}"
                  f"{'::' + s.source.split('::', 1)[1] if '::' in s.source else ''}`: {_named(s)}"
                  for s in report.skipped[:20]]
        if len(report.skipped) > 20:
            lines.append(f"- ... and {len(report.skipped) - 20} more skipped")
        fraction = 1.0 if job.state == DONE or event is None else event.fraction
        return progress_bar(fraction, head), "\n".join(lines)
    return progress_bar(0, job.state), f"**{describe(job.kind)} {job.state}**: {job.message}"


def _named(skipped) -> str:
    """A skipped input's reason with its server path (which FFmpeg's messages quote) cut to the file's name."""
    path = skipped.source.split("::")[0]
    return skipped.reason.replace(path, Path(path).name)


def _gallery(project: Project, side: str, page: float):
    """One page of the face set: (gallery update, page number update, file names shown)."""
    try:
        faceset = FaceSet(project.faces(side))
    except UserError:
        faceset = None
    count = len(faceset) if faceset is not None else 0
    if count == 0:
        return gr.update(value=[], label=f"Face set {side}: no faces yet"), gr.update(maximum=1, value=1), []
    pages = max(1, math.ceil(count / PAGE))
    page = min(max(1, int(page or 1)), pages)
    entries = faceset.entries[(page - 1) * PAGE: page * PAGE]
    names = [e["file"] for e in entries if (faceset.path / e["file"]).is_file()]
    label = f"Face set {side}: {count} faces" + (f" (page {page} of {pages})" if pages > 1 else "")
    return (gr.update(value=[publish(faceset.path / n) for n in names], label=label),
            gr.update(maximum=pages, value=page), names)
