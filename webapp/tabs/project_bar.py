"""The project bar above the tabs: create a project or reopen one; every tab follows `project`.

The open project's name lives in a per-page `gr.State` (tabs listen to its change event) and in the
browser's local storage, so a reload reopens it. A page opened elsewhere (no local storage yet)
opens the project with a running job, else the most recently used one.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from engine.errors import UserError
from webapp.state import Studio


def render(studio: Studio) -> SimpleNamespace:
    with gr.Row(equal_height=False):
        choose = gr.Dropdown(label="Project", choices=[], value=None, interactive=True, scale=3,
                             elem_id="project-choose",
                             info="a folder holding face sets A and B, the model and the outputs")
        # both wait for the page's load event (on_load enables them): a project created before it lands
        # had its list overwritten by the load's older, empty one, and the page said "Error"
        name = gr.Textbox(label="New project", placeholder="e.g. talk-to-carell", scale=3,
                          elem_id="project-name", interactive=False)
        create = gr.Button("Create", variant="primary", scale=1, elem_id="project-create", size="md",
                           interactive=False)
    where = gr.Markdown("No project open: create one, or pick one from the list.", elem_id="project-where")
    return SimpleNamespace(choose=choose, name=name, create=create, where=where, project=gr.State(None),
                           last=gr.BrowserState(None, storage_key="faceswap-studio-project"))


def listen(studio: Studio, ui: SimpleNamespace, demo: gr.Blocks) -> None:
    def on_load(last: str | None, request: gr.Request):
        owner = studio.owner(request)
        names = studio.workspace.projects(owner)
        running = [j.project for j in studio.jobs.active_jobs(owner)]
        pick = last if last in names else next((n for n in running if n in names), names[0] if names else None)
        ready = gr.update(interactive=True)
        return gr.update(choices=names, value=pick), pick, ready, ready

    def on_choose(name: str | None, request: gr.Request):
        if not name:
            return gr.skip(), gr.skip()
        project = studio.project(request, name)
        return name, _where(studio, project.name, request)

    def on_create(name: str, request: gr.Request):
        owner = studio.owner(request)
        try:
            project = studio.workspace.create(owner, name)
        except UserError as err:
            raise gr.Error(str(err)) from err
        names = studio.workspace.projects(owner)
        return gr.update(choices=names, value=project.name), "", project.name

    demo.load(on_load, inputs=ui.last, outputs=[ui.choose, ui.project, ui.name, ui.create])
    ui.choose.change(on_choose, inputs=ui.choose, outputs=[ui.project, ui.where])
    ui.create.click(on_create, inputs=ui.name, outputs=[ui.choose, ui.name, ui.project])
    ui.name.submit(on_create, inputs=ui.name, outputs=[ui.choose, ui.name, ui.project])
    ui.project.change(lambda name: name, inputs=ui.project, outputs=ui.last)


def _where(studio: Studio, name: str, request: gr.Request) -> str:
    owner = studio.owner(request)
    who = f" (signed in as **{owner}**)" if studio.auth else ""
    return f"Project **{name}**{who}"
