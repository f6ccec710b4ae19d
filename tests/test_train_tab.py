"""The Train tab's time budget: asked for in the form, checked against the model, shown while it runs."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest

from engine.errors import UserError
from engine.progress import Progress
from engine.train.config import TrainConfig
from webapp.jobs import RUNNING, Limits
from webapp.tabs import train as train_tab


def page(minutes=None, precision="auto", iterations=100):
    """The form's settings as the Train tab's handlers receive them: a TrainConfig still to be given its paths."""
    return partial(TrainConfig, preset="lite", batch_size=8, iterations=iterations, minutes=minutes, preview_every=10,
                   save_every=10, precision=precision)


def running_job(minutes: float, left_s: float, step: int = 50, total: int = 100_000):
    event = Progress(job="train", step=step, total=total, eta_s=left_s, time_left_s=left_s,
                     metrics={"loss_a": 0.1, "loss_b": 0.2, "examples_per_s": 90.0})
    return SimpleNamespace(state=RUNNING, progress=event, info={"minutes": minutes}, message="")


def test_the_bar_fills_with_the_time_budget_and_says_what_is_left(tmp_path):
    proj = SimpleNamespace(model_dir=tmp_path / "model")
    bar, status = train_tab._status(None, proj, running_job(minutes=10, left_s=150))
    assert "2 min 30 s of the time budget left" in status
    assert "width:75.0%" in bar and "2 min 30 s left" in bar
    bar, status = train_tab._status(None, proj, running_job(minutes=0, left_s=None, step=50, total=100))
    assert "width:50.0%" in bar and "time budget" not in status


def test_the_form_turns_minutes_into_the_run_budget(faceset_a, faceset_b, tmp_path):
    sets = {"A": faceset_a, "B": faceset_b}
    proj = SimpleNamespace(faces=sets.__getitem__, model_dir=tmp_path / "model")
    studio = SimpleNamespace(device="cpu", limits=Limits())  # no per-user limits: tests/test_quota.py has those
    assert train_tab._config(studio, proj, page(minutes=5.0), False).minutes == 5.0
    assert train_tab._config(studio, proj, page(), False).minutes is None
    with pytest.raises(UserError, match="time budget"):
        train_tab._config(studio, proj, page(minutes=-1.0), False)


def test_the_precision_field_reaches_the_run_and_the_status_says_what_ran(faceset_a, faceset_b, tmp_path):
    sets = {"A": faceset_a, "B": faceset_b}
    proj = SimpleNamespace(faces=sets.__getitem__, model_dir=tmp_path / "model")
    studio = SimpleNamespace(device="cpu", limits=Limits())
    assert train_tab._config(studio, proj, page(), False).precision == "auto"
    assert train_tab._config(studio, proj, page(precision="fp32"), False).precision == "fp32"
    with pytest.raises(UserError, match="auto, bf16, fp32"):
        train_tab._config(studio, proj, page(precision="fp16"), False)
    text = train_tab._precision_text({"precision": "fp32", "precision_reason": "this CPU has no bf16 units"})
    assert text == "in float32 (this CPU has no bf16 units)"


def test_the_preset_says_whether_a_new_model_starts_from_the_shipped_prior(tmp_path, monkeypatch):
    from engine.models import build_model, prior

    monkeypatch.setattr(prior, "SHIPPED", tmp_path)
    assert "**Starts from:** random weights (no prior ships" in train_tab._preset_text("lite")
    prior.write(prior.shipped_path("lite", 64), build_model("lite"),
                {"data": {"faces": 23004, "identities": 15526}, "minutes": 60.0})
    assert "**Starts from:** the shipped prior (lite 64 px, 23,004 faces of 15,526+ people, 60 min pretraining)" \
        in train_tab._preset_text("lite")
