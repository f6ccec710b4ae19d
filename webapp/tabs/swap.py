"""Swap tab: swap a photo with live settings, preview video frames, render a whole video in the background.

Photos and frame previews go through the project's cached `engine.swap.pipeline.Swapper`
(studio.swappers): a settings change calls `Swapper.update` and re-renders from the faces already
found, so the preview follows a slider within a second on a CPU. A full video is
`engine.swap.video.swap_video` in a job with its own Swapper (settings frozen for the render), so
the photo preview stays usable while it runs; the result plays back with its sound and downloads.
"""

from __future__ import annotations

import base64
import functools
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np

from engine.errors import UserError
from engine.swap.blend import BLEND_MODES
from engine.swap.color import COLOR_MODES
from engine.swap.settings import SwapSettings
from webapp import tasks
from webapp.jobs import DONE, RUNNING, Job, describe, format_eta
from webapp.projects import keep_uploads, split_uploads
from webapp.settings_form import SettingsForm
from webapp.state import Studio, newly_done, progress_bar, publish, waiting_view

POLL_S = 2.0
DIRECTIONS = [("A → B: A's faces become B (the usual)", "a2b"), ("B → A: B's faces become A", "b2a")]


def render(studio: Studio) -> SimpleNamespace:
    form = SettingsForm(SwapSettings, not_shown={
        "min_score": "the detector score extraction keeps faces at, so swapped faces pass the trained ones' bar"})
    gr.Markdown("Swap with the project's trained model. Every change of a setting re-renders the preview.")
    with gr.Row():
        form.add("direction", gr.Radio, choices=DIRECTIONS, label="Direction", elem_id="swap-direction")
        form.add("faces", gr.Radio, choices=[("largest face", "largest"), ("all faces", "all")],
                 label="Which faces", elem_id="swap-faces")
    with gr.Row():
        form.add("color", gr.Dropdown, choices=["auto", *COLOR_MODES], label="Colour matching",
                 elem_id="swap-color")
        form.add("color_strength", gr.Slider, step=0.05, label="Colour strength", elem_id="swap-strength")
        form.add("detail", gr.Slider, step=0.05, label="Frame detail",
                 info="the frame's own skin texture and grain, finer than the model's pixels", elem_id="swap-detail")
        form.add("feature_detail", gr.Slider, step=0.05, label="Feature detail",
                 info="the frame's finest detail on the eyes, nose and mouth, where the face's edges are",
                 elem_id="swap-feature-detail")
        form.add("blend", gr.Dropdown, choices=list(BLEND_MODES), label="Blending", elem_id="swap-blend")
        form.add("erode", gr.Slider, step=1, label="Mask erosion (px)",
                 info="positive shrinks the pasted area, negative grows it", elem_id="swap-erode")
        form.add("blur", gr.Slider, step=1, label="Edge blur (px)", elem_id="swap-blur")
    form.add("watermark", gr.Checkbox, label="Mark the swapped faces (invisible provenance watermark)",
             info="turn off only for a research protocol that needs unmarked pixels; the saved "
                  "file's metadata says it is synthetic either way", elem_id="swap-watermark")
    with gr.Tabs():
        with gr.Tab("Photo"):
            with gr.Row():
                photo = gr.Image(label="Photo", type="numpy", sources=["upload", "clipboard"], height=420,
                                 elem_id="swap-photo")
                result = gr.Image(label="Swapped", type="numpy", format="png", interactive=False, height=420,
                                  elem_id="swap-result")
            photo_status = gr.Markdown("", elem_id="swap-photo-status")
            with gr.Row():
                save = gr.Button("Save swapped photo", variant="primary", elem_id="swap-save")
                saved = gr.File(label="Swapped photo", interactive=False, elem_id="swap-saved")
        with gr.Tab("Video"):
            with gr.Row():
                video = gr.Video(label="Video", sources=["upload"], height=360, elem_id="swap-video")
                frame_view = gr.Image(label="Swapped frame", type="numpy", interactive=False, height=360,
                                      elem_id="swap-frame")
            frame = gr.Slider(0, 1, value=0, step=1, label="Preview frame", elem_id="swap-frame-index")
            with gr.Row():
                start = gr.Button("Render the whole video", variant="primary", elem_id="swap-render")
                stop = gr.Button("Stop", variant="stop", elem_id="swap-render-stop")
            bar = gr.HTML(progress_bar(0, "idle"), elem_id="swap-bar")
            video_status = gr.Markdown("", elem_id="swap-video-status")
            with gr.Row():
                output = gr.Video(label="Swapped video (with its sound)", interactive=False, height=360,
                                  elem_id="swap-output")
                download = gr.File(label="Download", interactive=False, elem_id="swap-download")
    return SimpleNamespace(form=form, photo=photo, result=result, photo_status=photo_status, save=save,
                           saved=saved, video=video, frame=frame, frame_view=frame_view, start=start, stop=stop,
                           bar=bar, video_status=video_status, output=output, download=download,
                           timer=gr.Timer(POLL_S), seen=gr.State({}))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    form = ui.form

    def swap_rgb(name, rgb: np.ndarray, settings: SwapSettings, request: gr.Request) -> tuple[np.ndarray, str]:
        proj = studio.project(request, name)
        try:
            loaded = studio.swappers.get(proj, studio.device)
            with loaded.lock:
                t0 = time.perf_counter()
                loaded.swapper.update(settings)
                landmarks = loaded.landmarks(rgb)
                out = loaded.swapper.swap_at_landmarks([rgb], [landmarks])[0][0]
                ms = (time.perf_counter() - t0) * 1000
        except UserError as err:
            raise gr.Error(str(err)) from err
        found = f"{len(landmarks)} face(s) swapped" if landmarks else "no face found: the photo is unchanged"
        return out, f"{found} in {ms:.0f} ms (model at iteration {loaded.swapper.meta.get('iteration', '?')})"

    @form.takes
    def photo_preview(name, photo, settings: SwapSettings, request: gr.Request):
        rgb = _photo(photo)
        if rgb is None:
            return None, ""
        return swap_rgb(name, rgb, settings, request)

    @form.takes
    def save_photo(name, photo, settings: SwapSettings, request: gr.Request):
        rgb = _photo(photo)
        if rgb is None:
            raise gr.Error("upload a photo first")
        out, _ = swap_rgb(name, rgb, settings, request)
        from engine.provenance.metadata import write_image

        proj = studio.project(request, name)
        path = proj.outputs / f"photo-{time.strftime('%Y%m%d-%H%M%S')}-{settings.direction}.png"
        write_image(path, out, studio.swappers.get(proj, studio.device).swapper.provenance(None))
        return publish(path)

    def video_loaded(video):
        if not video:
            return gr.update(maximum=1, value=0), None
        try:
            frames = _video_info(video).frames
        except UserError as err:
            raise gr.Error(str(err).replace(video, Path(video).name)) from err
        return gr.update(maximum=max(1, frames - 1), value=0, label=f"Preview frame (of {frames})"), None

    @form.takes
    def frame_preview(name, video, index, settings: SwapSettings, request: gr.Request):
        if not video:
            return None
        rgb = _read_frame(video, int(index))
        return swap_rgb(name, rgb, settings, request)[0]

    @form.takes
    def render_video(name, video, settings: SwapSettings, request: gr.Request):
        proj = studio.project(request, name)
        if not video:
            raise gr.Error("upload a video first")
        usable, refused = split_uploads([video])
        if refused:
            raise gr.Error(refused[0])
        try:
            settings.check()
            source = keep_uploads(proj, "swap", usable)[0]
            out = proj.outputs / f"{source.stem}-{settings.direction}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"
            studio.submit(proj, "render", tasks.render_task(proj, source, out, settings, studio.device),
                               lane="media")
        except UserError as err:
            raise gr.Error(str(err)) from err
        return {}

    def stop(name, request: gr.Request):
        studio.stop_job(request, name, "render")

    def poll(name, seen, request: gr.Request):
        if not name:
            return progress_bar(0, "no project open"), "", gr.skip(), gr.skip(), {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, "render")
        bar, status = _render_view(studio, job)
        if not newly_done(job, seen):
            return bar, status, gr.skip(), gr.skip(), seen
        path = publish(job.result)
        return bar, status, path, path, {"shown": job.id}

    # preprocess=False: the photo arrives as the uploaded file (FileData) and the engine decodes it, with
    # its limits and messages (Gradio's decoder would answer a broken photo with its internals)
    inputs = [project, ui.photo, *form.components]
    for component in (ui.photo, *form.components):  # always_last: a dragged slider renders its latest value
        component.change(photo_preview, inputs=inputs, outputs=[ui.result, ui.photo_status],
                         trigger_mode="always_last", show_progress="minimal", preprocess=False)
    ui.save.click(save_photo, inputs=inputs, outputs=ui.saved, preprocess=False)
    frame_inputs = [project, ui.video, ui.frame, *form.components]
    ui.frame.change(frame_preview, inputs=frame_inputs, outputs=ui.frame_view, trigger_mode="always_last")
    # one chain, in order: the new video's slider and a cleared view, then its first swapped frame (two
    # events on the upload raced, and a fast preview was wiped by the slower probe's cleared view)
    ui.video.upload(video_loaded, inputs=ui.video, outputs=[ui.frame, ui.frame_view]).then(
        frame_preview, inputs=frame_inputs, outputs=ui.frame_view)
    ui.video.clear(video_loaded, inputs=ui.video, outputs=[ui.frame, ui.frame_view])
    poll_io = dict(inputs=[project, ui.seen], outputs=[ui.bar, ui.video_status, ui.output, ui.download, ui.seen])
    ui.start.click(render_video, inputs=[project, ui.video, *form.components], outputs=ui.seen).then(poll, **poll_io)
    ui.stop.click(stop, inputs=project).then(poll, **poll_io)
    ui.timer.tick(poll, **poll_io, show_progress="hidden", concurrency_limit=None)
    project.change(lambda: {}, outputs=ui.seen).then(poll, **poll_io)


def _photo(payload: dict | None) -> np.ndarray | None:
    """The photo input's raw value (FileData of an upload, or a data: URL) decoded to RGB by the engine."""
    if not payload:
        return None
    from engine.media import decode_image

    name = Path(payload.get("orig_name") or "the photo").name
    try:
        url = payload.get("url") or ""
        if not payload.get("path") and url.startswith("data:"):
            data = base64.b64decode(url.partition(",")[2], validate=False)
        else:
            data = Path(payload["path"]).read_bytes()
        return decode_image(data, name)
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise gr.Error(f"{name}: the upload cannot be read ({type(err).__name__}); upload the photo again") from err
    except UserError as err:
        raise gr.Error(str(err)) from err


def _read_frame(video: str, index: int) -> np.ndarray:
    """Frame `index` of the video, found by seeking (engine.video_reader.read_frame); the slider's last frame
    if the video holds fewer."""
    from engine.video_reader import read_frame

    try:
        info = _video_info(video)
        return read_frame(info, min(index, info.frames - 1))
    except UserError as err:
        raise gr.Error(str(err).replace(video, Path(video).name)) from err


@functools.lru_cache(maxsize=4)
def _video_info(video: str):
    """The probed video with its frame times, kept while its frames are previewed (an upload's path is its own)."""
    from engine.video_reader import probe_video

    info = probe_video(video)
    if info.frames == 0:
        raise UserError(f"{video}: the video has no frames to preview")
    return info


def _render_view(studio: Studio, job: Job | None) -> tuple[str, str]:
    waiting = waiting_view(studio, job, "loading the model and the detector")
    if waiting is not None:
        return waiting
    event = job.progress
    if job.state == RUNNING:
        fps = event.metrics.get("fps")
        text = (f"{event.step}/{event.total} frames" + (f", {fps:.1f} frames/s" if fps else "")
                + f", ETA {format_eta(event.eta_s)}")
        return progress_bar(event.fraction, text), ""
    if job.state == DONE and job.result is not None:
        frames = event.step if event else "?"
        return progress_bar(1.0, "done"), f"**done**: {frames} frames swapped, saved as `{Path(job.result).name}`"
    return progress_bar(0, job.state), f"**{describe(job.kind)} {job.state}**: {job.message}"
