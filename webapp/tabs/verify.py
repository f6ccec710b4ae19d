"""Verify tab: is a photo or video a swap made here? Reads the provenance metadata and the face mark.

The same `engine.provenance.verify.verify_file` as `python -m engine verify`; it needs no project
(a visitor checks any file), runs while the page waits (a few seconds a file on a CPU) and keeps
nothing: the uploads stay in Gradio's cache, which expires them.
"""

from __future__ import annotations

import functools
import html
from types import SimpleNamespace

import gradio as gr

from webapp.projects import split_uploads
from webapp.state import Studio

MAX_FILES = 8  # a page waits on them: more belong to the command line


def render(studio: Studio) -> SimpleNamespace:
    gr.Markdown("Check photos and videos for the studio's provenance: the record in the file's metadata "
                "(who made it, with which model, from which source, when) and the invisible mark in the "
                "swapped faces, which survives re-encoding, scaling and cropping that strip the metadata.")
    files = gr.File(label="Photos or videos to check", file_count="multiple", file_types=["image", "video"],
                    elem_id="verify-upload", height=140)
    check = gr.Button("Verify", variant="primary", elem_id="verify-start")
    result = gr.HTML("", elem_id="verify-result")
    return SimpleNamespace(files=files, check=check, result=result)


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    def verify(files):
        from engine.provenance.verify import verify_file

        usable, refused = split_uploads(files or [])
        if not usable and not refused:
            raise gr.Error("upload a photo or a video first")
        if len(usable) > MAX_FILES:
            raise gr.Error(f"{len(usable)} files: check at most {MAX_FILES} at once here, or use "
                           "`python -m engine verify FILE...`")
        verdicts = [verify_file(path, _detector(studio.device)) for path in usable]
        return _table(verdicts, refused)

    ui.check.click(verify, inputs=ui.files, outputs=ui.result)


@functools.cache
def _detector(device: str):
    from engine.device import pick_device
    from engine.faces.detectors import build_detector

    return build_detector("mtcnn", device=pick_device(device))


def _table(verdicts, refused: list[str]) -> str:
    rows = []
    for v in verdicts:
        accuracy = "" if v.bit_accuracy is None else f"{v.bit_accuracy:.2f}"
        confidence = f"{v.confidence:.6f}" if v.marked else ""  # of a mark found: nothing to be sure of otherwise
        verdict = "synthetic" if v.synthetic else ("unreadable" if v.error else "no mark found")
        message = v.message().removeprefix(f"{v.path}: ")
        rows.append(f"<tr class='verify-row'><td>{html.escape(v.path.name)}</td><td><b>{verdict}</b></td>"
                    f"<td>{'yes' if v.marked else 'no'}</td><td>{accuracy}</td><td>{confidence}</td>"
                    f"<td>{html.escape(message)}</td></tr>")
    rows += [f"<tr class='verify-row'><td colspan=6>refused: {html.escape(line)}</td></tr>" for line in refused]
    return ("<table id='verify-table'><tr><th>file</th><th>verdict</th><th>pixel mark</th><th>bit accuracy</th>"
            "<th>confidence</th><th>what it says</th></tr>" + "".join(rows) + "</table>")
