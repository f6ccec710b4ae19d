"""The terminal bar: what it says follows the job's events (the same events the web page shows)."""

from __future__ import annotations

import io

from engine.progress import Progress, TqdmListener


def test_the_bar_shows_a_note_once_then_its_plain_name_again():
    out = io.StringIO()
    bar = TqdmListener(desc="train", file=out)
    bar(Progress(job="train", step=1, total=10, message="bfloat16: measured faster here"))
    assert bar.bar.desc == "train: bfloat16: measured faster here"
    bar(Progress(job="train", step=2, total=10, metrics={"loss_a": 0.25}))
    assert bar.bar.desc == "train"  # the note does not stick to the rest of the run
    bar(Progress(job="extract", step=3, total=10, message="photo.jpg"))
    assert bar.bar.desc == "train: photo.jpg"
    bar(Progress(job="train", step=10, total=10, done=True))
    assert bar.bar is None and "loss_a=0.25" in out.getvalue()
