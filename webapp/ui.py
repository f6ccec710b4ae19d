"""Builds the Gradio page. Until the studio tabs land, it says what the engine can already do."""

from __future__ import annotations

import gradio as gr

INTRO = """
# Face-swap studio

The browser studio (face sets, training with live progress, interactive swap previews) is being
built. The engine already works from the command line:

```
python -m engine extract PHOTOS_OR_VIDEOS... --out faces/A     # detect, align, build a face set
python -m engine weights                                       # fetch RetinaFace weights (optional)
python -m engine --help
```
"""


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Face-swap studio") as demo:
        gr.Markdown(INTRO)
    return demo
