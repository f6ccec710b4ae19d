"""Swap tab: waits for the engine's swap pipeline (engine/swap/pipeline.py), which is being built.

Until it lands the tab says so instead of showing controls that could not work.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from webapp.state import Studio

TEXT = """### Swap

Swapping photos and videos arrives with the engine's swap pipeline, which is being assembled now.
Meanwhile the Train tab's preview grid shows what the model makes of A and B (columns A→B and B→A).
"""


def render(studio: Studio) -> SimpleNamespace:
    return SimpleNamespace(text=gr.Markdown(TEXT, elem_id="swap-text"))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    """Nothing to wire until the pipeline exists."""
