"""Builds the studio page from the tab modules and serves it.

Layout: the project bar, then the tabs Face sets, Train, Swap, Evaluate, Verify (and Export). Each tab module renders
its components and wires its events; this file only places them and starts the server.
"""

from __future__ import annotations

import logging
import signal
import warnings
from pathlib import Path

import gradio as gr

from webapp.projects import Workspace
from webapp.state import CSS, Studio
from webapp.tabs import evaluate, export, faces, project_bar, swap, train, verify

log = logging.getLogger(__name__)

TITLE = "Face-swap studio"
TABS = (("Face sets", faces), ("Train", train), ("Swap", swap), ("Evaluate", evaluate), ("Verify", verify),
        ("Export", export))


def build_app(studio: Studio | None = None) -> gr.Blocks:
    studio = studio or Studio(Workspace("workspace"))
    with gr.Blocks(title=TITLE, delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(f"# {TITLE}")
        bar = project_bar.render(studio)
        rendered = []
        with gr.Tabs():
            for label, module in TABS:
                with gr.Tab(label, id=label.lower().replace(" ", "-")):
                    rendered.append((module, module.render(studio)))
        project_bar.listen(studio, bar, demo)
        for module, ui in rendered:
            module.listen(studio, ui, bar.project)
    return demo


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 7860, credentials: dict[str, str] | None = None,
          root_path: str | None = None) -> None:
    """Launch and block; on Ctrl-C or SIGTERM every job is stopped (trainings save) before exiting."""
    from PIL import Image
    from starlette.middleware import Middleware

    import engine.media  # noqa: F401 - sets PIL's pixel limit to the studio's
    from engine.device import pick_device
    from webapp.access import Guard

    # Gradio decodes photos itself (gr.Image) and PIL only warns between its pixel limit (engine.media sets it)
    # and twice that: in the server a warning is a refusal, made before the pixels are allocated
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    log.info("workspace %s; jobs run on %s", studio.workspace.root, pick_device(studio.device))
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=4)
    signal.signal(signal.SIGTERM, _interrupt)
    # with sign-in, webapp.access.Guard keeps each user's files, sessions and sign-in attempts their own
    app_kwargs = {"middleware": [Middleware(Guard)]} if credentials else {}
    try:
        demo.launch(server_name=host, server_port=port, auth=_checker(credentials) if credentials else None,
                    auth_message="Sign in to your face-swap studio" if credentials else None,
                    root_path=root_path or None, max_file_size=f"{studio.max_upload_mb}mb", css=CSS,
                    theme=gr.themes.Soft(), footer_links=["settings"], show_error=True, ssr_mode=False,
                    app_kwargs=app_kwargs)
    finally:
        studio.jobs.shutdown(timeout=120)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # Gradio's launch loop closes the server on it, then `serve` stops the jobs


def _checker(credentials: dict[str, str]):
    import hmac

    def check(user: str, password: str) -> bool:
        expected = credentials.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), (password or "").encode())
    return check


def read_credentials(pairs: list[str], file: str | Path | None) -> dict[str, str]:
    """USER:PASS pairs from --auth flags and from an --auth-file (one a line, '#' comments)."""
    from engine.errors import UserError
    from webapp.projects import check_name

    lines = list(pairs or [])
    if file:
        try:
            lines += [ln.strip() for ln in Path(file).read_text(encoding="utf-8-sig").splitlines()
                      if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as err:
            raise UserError(f"cannot read --auth-file {file}: {err}") from err
        except UnicodeDecodeError as err:
            raise UserError(f"--auth-file {file} is not UTF-8 text ({err.reason} at byte {err.start}): "
                            "write it as USER:PASS lines in UTF-8") from err
    credentials = {}
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not password:
            raise UserError(f"credentials must be USER:PASS, got {user!r} without a password")
        credentials[check_name(user, "user name")] = password
    return credentials
