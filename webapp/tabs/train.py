"""Train tab: pick a preset, Start / Stop / Resume, and watch the run live.

The run is `engine.train.trainer.train` inside a job on the `train` lane, so one training uses
the GPU (or CPU) at a time and later ones queue. A timer polls the job: iteration, examples/s,
ETA, the loss chart (from the job's loss curve, or from the model folder's history once no job is
left in memory) and the preview grid. The model archive (download / upload to continue elsewhere)
lives here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from engine.errors import UserError
from engine.faces.faceset import face_count
from engine.models import PRESETS, default_preset
from engine.models import folder as model_folder
from engine.precision import NAMES, PRECISIONS
from engine.precision import check as check_precision
from engine.train.config import TrainConfig
from webapp import tasks
from webapp.jobs import QUEUED, RUNNING, Job, format_eta, ordinal
from webapp.projects import Project, export_model, import_model
from webapp.settings_form import SettingsForm
from webapp.state import Studio, progress_bar, publish

POLL_S = 2.0
WARP_CHOICES = {"auto": None, "on": True, "off": False}  # TrainConfig.warp: None is auto
WARP_NAMES = {value: name for name, value in WARP_CHOICES.items()}


RECIPE = "the training recipe bench/likeness.py picked (docs/benchmarks.md); the CLI changes it for experiments"
COLOUR_NET = "the colour network is trained from the CLI (`train --color-net`)"
SNAPSHOTS = "numbered snapshots are for benchmarks (bench/likeness.py); the page keeps the latest save"
NOT_SHOWN = {
    "resolution": "the preset's: the page trains the presets as they are", "learn_mask": "as resolution",
    "lr": RECIPE, "beta1": RECIPE, "warmup": RECIPE, "loss": RECIPE, "eye_mouth_weight": RECIPE,
    "background_weight": RECIPE, "id_weight": RECIPE, "id_robust": RECIPE, "id_ceiling": RECIPE, "color_jitter": RECIPE,
    "ema": RECIPE,
    "snapshot_minutes": SNAPSHOTS, "snapshot_every": SNAPSHOTS,
    "init_from": "a model from elsewhere comes in through the model archive (Import model)",
    "prior": "auto: the preset's shipped prior, which the preset's description names",
    "preview_rows": "the preview grid is sized for the page", "compile": "torch.compile: slow to start, a CLI experiment",
    "color_net": COLOUR_NET, "color_scale": COLOUR_NET, "color_iterations": COLOUR_NET, "color_gan": COLOUR_NET,
    "color_minutes": COLOUR_NET,
    "report_every": "the engine picks it for the device (each report syncs a GPU)",
    "seed": "fixed, so that runs compare", "max_rewinds": "the engine's guard against NaN/Inf losses",
    "spike": "the engine's guard against a loss that blows up (rewinds and halves the rate)",
}
GIVEN = {"faces_a": "the project's face set A", "faces_b": "the project's face set B",
         "model_dir": "the project's model folder", "device": "the server's --device",
         "resume": "the button pressed: Start or Resume"}


def render(studio: Studio) -> SimpleNamespace:
    from engine.device import pick_device

    form = SettingsForm(TrainConfig, not_shown=NOT_SHOWN, given=GIVEN)
    preset_name = default_preset(pick_device(studio.device).type)
    with gr.Row():
        with gr.Column(scale=2):
            form.add("preset", gr.Dropdown, choices=list(PRESETS), value=preset_name, label="Preset",
                     elem_id="train-preset")
            preset_info = gr.Markdown(_preset_text(preset_name), elem_id="train-preset-info")
        form.add("batch_size", gr.Slider, minimum=1, maximum=64, step=1, label="Batch size",
                 info="faces per side per step", elem_id="train-batch")
        form.add("iterations", gr.Number, precision=0, minimum=1, label="Iteration target",
                 info="training stops here; Resume continues towards a raised target", elem_id="train-iterations")
        form.add("minutes", gr.Number, show=lambda m: m or 0, parse=lambda m: float(m or 0) or None, precision=1,
                 minimum=0, label="Time budget (minutes)",
                 info="training time to stop at (all runs of the model together); 0: no limit",
                 elem_id="train-minutes")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            form.add("preview_every", gr.Number, precision=0, minimum=1, label="Preview every N iterations",
                     elem_id="train-preview-every")
            form.add("save_every", gr.Number, precision=0, minimum=1, label="Save every N iterations",
                     elem_id="train-save-every")
            form.add("precision", gr.Dropdown, choices=list(PRECISIONS), label="Precision",
                     info="auto: bf16 where it is measured faster on this machine, else float32",
                     elem_id="train-precision")
            form.add("warp", gr.Dropdown, choices=list(WARP_CHOICES), show=WARP_NAMES.get,
                     parse=WARP_CHOICES.get, label="Random warp",
                     info="warp each input face so the model learns to rebuild faces, not copy them; auto: off "
                          "from the shipped prior (closer to B sooner), on from random weights",
                     elem_id="train-warp")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop (saves)", variant="stop", elem_id="train-stop")
        resume = gr.Button("Resume", elem_id="train-resume")
    bar = gr.HTML(progress_bar(0, "idle"), elem_id="train-bar")
    status = gr.Markdown("", elem_id="train-status")
    with gr.Row():
        # no empty DataFrame as the first value: its float "side" column would fix the colour scale as
        # numeric in the browser, and later data would draw no lines
        chart = gr.LinePlot(None, x="iteration", y="loss", color="side", title="Loss (A and B)", height=360,
                            elem_id="train-chart")
        preview = gr.Image(label="Preview: A, A→A, A→B, B, B→B, B→A", interactive=False, height=360,
                           elem_id="train-preview")
    with gr.Accordion("Model archive: download, or upload one to continue here", open=False):
        with gr.Row():
            export = gr.Button("Prepare model download (.zip)", elem_id="train-export")
            exported = gr.File(label="Model archive", interactive=False, elem_id="train-exported")
        with gr.Row():
            upload = gr.File(label="Model archive to import (.zip)", file_types=[".zip"],
                             elem_id="train-import-file")
            do_import = gr.Button("Import model", elem_id="train-import")
    timer = gr.Timer(POLL_S)
    return SimpleNamespace(form=form, preset_info=preset_info, start=start, stop=stop, resume=resume, bar=bar,
                           status=status, chart=chart, preview=preview, export=export, exported=exported,
                           upload=upload, do_import=do_import, timer=timer, seen=gr.State({}))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    form = ui.form

    def launch(name, settings, resume: bool, request: gr.Request):
        proj = studio.project(request, name)
        try:
            config = _config(studio, proj, settings, resume)
            info = {field: getattr(config, field) for field in form.names}  # the form shows them after a reload
            info["preset"] = config.preset or model_folder.summary(proj.model_dir)["preset"]
            job = studio.submit(proj, "train", tasks.train_task(config), lane="train", info=info)
        except UserError as err:
            raise gr.Error(str(err)) from err
        place = studio.jobs.position(job)
        if place > 1:
            gr.Info(f"training queued: {ordinal(place)} in line (one training runs at a time)")
        return {}

    def stop(name, request: gr.Request):
        job = studio.stop_job(request, name, "train")
        if job is not None:
            gr.Info("stopping: the model is saved at the current iteration" if job.state == RUNNING
                    else "taken out of the queue")

    def poll(name, seen, request: gr.Request):
        if not name:
            return progress_bar(0, "no project open"), "", gr.skip(), gr.skip(), {}
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, "train")
        bar, status = _status(studio, proj, job)
        key = (name, job.id if job else None, job.version if job else model_folder.stamp(proj.model_dir))
        if seen.get("key") == list(key):
            return bar, status, gr.skip(), gr.skip(), seen
        # a job run by another process (`--worker external`) has no live curve here: the saved history then
        points = (job.loss_points() if job is not None else []) or model_folder.loss_history(proj.model_dir)
        chart = _chart(points)
        preview_key = (name, job.id, job.preview_version) if job is not None and job.preview is not None else (
            name, "file", model_folder.stamp(proj.model_dir))
        preview = gr.skip()
        if seen.get("preview") != list(preview_key):
            preview = job.preview if job is not None and job.preview is not None else _latest_preview(proj)
        return bar, status, chart, preview, {"key": list(key), "preview": list(preview_key)}

    def shown_settings(name, request: gr.Request):
        """The settings of the project's newest run (or its saved model), so a reload shows what runs."""
        if not name:
            return form.show({})
        proj = studio.project(request, name)
        job = studio.jobs.find(proj.owner, proj.name, "train")
        if job is not None:
            return form.show(job.info)
        summary = model_folder.summary(proj.model_dir) or {}
        return form.show({k: summary[k] for k in ("preset", "batch_size") if summary.get(k)
                          and (k != "preset" or summary[k] in PRESETS)})

    def export(name, request: gr.Request):
        proj = studio.project(request, name)
        try:
            return publish(export_model(proj))
        except UserError as err:
            raise gr.Error(str(err)) from err

    def do_import(name, archive, request: gr.Request):
        proj = studio.project(request, name)
        if not archive:
            raise gr.Error("choose a model .zip to import first")
        job = studio.jobs.find(proj.owner, proj.name, "train")
        if job is not None and job.active:
            raise gr.Error("a training is queued or running for this project: stop it before importing a model")
        try:
            gr.Info(import_model(proj, archive))
        except UserError as err:
            raise gr.Error(str(err)) from err
        return None, {}

    @form.takes
    def start(name, settings: Callable[..., TrainConfig], request: gr.Request):
        return launch(name, settings, False, request)

    @form.takes
    def resume(name, settings: Callable[..., TrainConfig], request: gr.Request):
        return launch(name, settings, True, request)

    settings = form.components
    poll_io = dict(inputs=[project, ui.seen], outputs=[ui.bar, ui.status, ui.chart, ui.preview, ui.seen])
    preset = form.controls["preset"].component
    preset.change(_preset_text, inputs=preset, outputs=ui.preset_info)
    # the API's parameters are the settings' field names, in the page's order (tests/test_restart.py calls it)
    ui.start.click(start, inputs=[project, *settings], outputs=ui.seen, api_name="train_start").then(poll, **poll_io)
    ui.resume.click(resume, inputs=[project, *settings], outputs=ui.seen, api_name="train_resume").then(poll, **poll_io)
    ui.stop.click(stop, inputs=project, api_name="train_stop").then(poll, **poll_io)
    ui.timer.tick(poll, **poll_io, show_progress="hidden", concurrency_limit=None)
    project.change(lambda: {}, outputs=ui.seen).then(poll, **poll_io).then(shown_settings, inputs=project,
                                                                           outputs=settings)
    ui.export.click(export, inputs=project, outputs=ui.exported)
    ui.do_import.click(do_import, inputs=[project, ui.upload], outputs=[ui.upload, ui.seen]).then(poll, **poll_io)


def _preset_text(name: str) -> str:
    info = PRESETS.get(name)
    if not info:
        return ""
    return (f"{info.description}. **Cost:** {info.cost}; {info.resolution} px faces. "
            f"**Starts from:** {_prior_text(name, info.resolution)}.")


def _prior_text(preset: str, resolution: int) -> str:
    """Where a new model of the preset starts (engine.models.prior): the shipped prior, or random weights."""
    from engine.models import prior

    path = prior.resolve("auto", preset, resolution)
    if path is None:
        return "random weights (no prior ships for this preset)"
    try:
        return prior.describe(path, prior.read_card(path))
    except UserError as err:
        return f"random weights: {err}"


def _config(studio: Studio, proj: Project, settings: Callable[..., TrainConfig], resume: bool) -> TrainConfig:
    """The run the page asked for (`settings`: the form's TrainConfig still to be given the project's paths),
    checked against the project's model and the server's limits."""
    for side in ("A", "B"):
        if face_count(proj.faces(side)) == 0:
            raise UserError(f"face set {side} is empty: extract faces of {side} first (Face sets tab)")
    config = settings(faces_a=str(proj.faces("A")), faces_b=str(proj.faces("B")), model_dir=str(proj.model_dir),
                      device=studio.device, resume=resume)
    summary = model_folder.summary(proj.model_dir)
    iterations, minutes = config.iterations, config.minutes or 0.0
    if resume and summary is None:
        raise UserError("there is no model to resume in this project: press Start")
    if not resume and summary is not None:
        raise UserError(f"this project has a model at iteration {summary['iteration']}: press Resume to "
                        "continue it (raise the iteration target first), or create a new project")
    if resume and iterations <= summary["iteration"]:
        raise UserError(f"the model is at iteration {summary['iteration']} already: raise the iteration "
                        "target above that, then Resume")
    if iterations < 1 or config.batch_size < 1:
        raise UserError("iteration target and batch size must be at least 1")
    if minutes < 0:
        raise UserError("the time budget must be 0 (no limit) or more minutes")
    spent = (summary or {}).get("minutes") or 0.0
    if resume and minutes and minutes <= spent:
        raise UserError(f"the model has trained {spent:.1f} minutes already: raise the time budget above that "
                        "(or set it to 0), then Resume")
    limits = studio.limits
    if limits.iterations and iterations > limits.iterations:
        raise UserError(f"iteration target {iterations}: this server allows at most {limits.iterations} "
                        f"(--max-iterations); lower the target")
    if limits.train_minutes:
        allowed = spent + limits.train_minutes  # the budget counts every run of the model; this job adds the cap
        if not minutes or minutes > allowed:
            raise UserError(f"time budget {minutes or 'none'}: this server lets one training run for at most "
                            f"{limits.train_minutes:g} minutes (--max-train-minutes); set the time budget to "
                            f"{allowed:.1f} minutes or less")
    return replace(config, preset=None if resume else config.preset,  # a resumed model keeps its own preset
                   preview_every=max(1, config.preview_every), save_every=max(1, config.save_every),
                   precision=check_precision(config.precision or "auto"))


def _status(studio: Studio, proj: Project, job: Job | None) -> tuple[str, str]:
    summary = model_folder.summary(proj.model_dir)
    saved = f"saved model: {summary['preset']}, iteration {summary['iteration']}" if summary else "no model yet"
    if summary and summary.get("precision"):  # the first save records the precision the run computes in
        saved += f", {_precision_text(summary)}"
    if job is None:
        return progress_bar(0, "idle"), saved
    event = job.progress
    if job.state == QUEUED:
        place = studio.jobs.position(job)
        return (progress_bar(0, f"queued: {ordinal(place)} in line"),
                f"**queued**, {ordinal(place)} in line: one training runs at a time on this machine")
    if job.state == RUNNING and event is None:
        return progress_bar(0, "starting: loading face sets and building the model"), "**starting**"
    if event is None:
        return progress_bar(0, job.state), f"**{job.state}**: {job.message} ({saved})"
    speed = event.metrics.get("examples_per_s")
    left = event.time_left_s
    parts = [f"iteration **{event.step}** / {event.total}",
             f"{speed:.1f} examples/s" if speed else None,
             f"ETA {format_eta(event.eta_s)}" if job.state == RUNNING else None,
             f"{format_eta(left)} of the time budget left" if left is not None and job.state == RUNNING else None,
             f"loss A {event.metrics['loss_a']:.4f}, B {event.metrics['loss_b']:.4f}"
             if event.metrics.get("loss_a") is not None else None,
             _precision_text(summary) if summary and summary.get("precision") and job.state == RUNNING else None]
    line = " · ".join(p for p in parts if p)
    head = "**running**" if job.state == RUNNING else f"**{job.state}**: {job.message}"
    text = f"{event.step}/{event.total} it" + (f", ETA {format_eta(event.eta_s)}" if job.state == RUNNING else "")
    fraction = event.fraction
    budget = 60.0 * float(job.info.get("minutes") or 0)
    if left is not None and budget > 0:  # the sooner of the two ends decides how full the bar is
        fraction = max(fraction or 0.0, 1.0 - left / budget)
        text += f", {format_eta(left)} left" if job.state == RUNNING else ""
    return progress_bar(fraction, text), f"{head} — {line}" + ("" if job.state == RUNNING else f" ({saved})")


def _precision_text(summary: dict) -> str:
    """"in float32 (this CPU has no bf16 units)": what the run computes in and why."""
    name = NAMES.get(summary["precision"], summary["precision"])
    return f"in {name}" + (f" ({summary['precision_reason']})" if summary.get("precision_reason") else "")


def _chart(points: list[tuple[float, float, float]]) -> pd.DataFrame | None:
    if not points:
        return None
    rows = [(it, a, "A") for it, a, _ in points] + [(it, b, "B") for it, _, b in points]
    return pd.DataFrame(rows, columns=["iteration", "loss", "side"])


def _latest_preview(proj: Project):
    path = model_folder.latest_preview(proj.model_dir)
    return publish(path) if path is not None else None
