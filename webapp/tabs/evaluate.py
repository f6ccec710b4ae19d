"""Evaluate tab: holds the place of the quality report, which arrives with the evaluation issue."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from webapp.state import Studio

TEXT = """### Quality report

The quality report (identity similarity, expression and pose fidelity, temporal stability of a
swapped video) arrives with the evaluation issue. Until then, judge a model by the Train tab's
preview grid and by swapping a few photos.
"""


def render(studio: Studio) -> SimpleNamespace:
    return SimpleNamespace(text=gr.Markdown(TEXT, elem_id="evaluate-text"))


def listen(studio: Studio, ui: SimpleNamespace, project: gr.State) -> None:
    """Nothing to wire yet: the tab only explains what will come."""
