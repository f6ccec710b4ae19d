"""The tabs' settings travel by field name: every field of each engine dataclass is shown or listed as not
shown, every control's value arrives in the dataclass, and handlers receive the dataclass itself."""

from __future__ import annotations

import dataclasses
import inspect

import gradio as gr
import pytest

from engine.errors import UserError
from engine.swap.settings import SwapSettings, value_range
from webapp.projects import Workspace
from webapp.settings_form import SettingsForm
from webapp.state import Studio
from webapp.tabs import evaluate, export, faces, swap, train


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, SettingsForm]:
    """Each tab's form, rendered as the page renders it."""
    studio = Studio(Workspace(tmp_path_factory.mktemp("ws")))
    found = {}
    with gr.Blocks():
        for name, module in (("faces", faces), ("swap", swap), ("train", train), ("evaluate", evaluate),
                             ("export", export)):
            found[name] = module.render(studio).form
    studio.jobs.shutdown(timeout=10)
    return found


def other_value(control):
    """A page value for the control that differs from the one it starts with."""
    c = control.component
    start = c.value
    if isinstance(c, gr.Checkbox):
        return not start
    if isinstance(c, gr.CheckboxGroup):
        return [value for _, value in c.choices if value not in start][:1] + list(start)
    if isinstance(c, gr.Radio | gr.Dropdown):
        return next(value for _, value in c.choices if value != start)
    if isinstance(c, gr.Slider | gr.Number):
        step = getattr(c, "step", None) or 1
        maximum = c.maximum if c.maximum is not None else float("inf")
        return start + step if start + step <= maximum else start - step
    raise AssertionError(f"no other value known for a {type(c).__name__}")


def test_every_field_is_shown_given_or_listed_with_a_reason(forms):
    for tab, form in forms.items():
        assert not form.missing(), (f"the {tab} tab drops {form.cls.__name__} fields {form.missing()}: add a control "
                                    "for each (form.add) or list it in not_shown with the reason")
        assert all(reason.strip() for reason in {**form.not_shown, **form.given}.values())
        shown = set(form.controls) | set(form.not_shown) | set(form.given)
        assert shown == {f.name for f in dataclasses.fields(form.cls)}


def test_each_control_reaches_its_field(forms):
    for tab, form in forms.items():
        given = {name: f"<{name}>" for name in form.given}
        start = [c.component.value for c in form.controls.values()]
        for i, (name, control) in enumerate(form.controls.items()):
            values = list(start)
            values[i] = other_value(control)
            before = getattr(form.read(start, **given), name)
            after = getattr(form.read(values, **given), name)
            assert after == control.parse(values[i]) and after != before, (tab, name, before, after)


def test_the_page_starts_from_the_dataclass_defaults_and_limits(forms):
    form = forms["swap"]
    assert form.read([c.component.value for c in form.controls.values()]) == SwapSettings()
    for name in ("erode", "blur", "color_strength"):
        slider = form.controls[name].component
        assert (slider.minimum, slider.maximum) == value_range(SwapSettings(), name)
    train_form = forms["train"]
    minutes = train_form.controls["minutes"]
    assert minutes.component.value == 0 and minutes.parse(0) is None and minutes.parse(5) == 5.0


def test_the_unticked_mark_reaches_the_swap(forms):
    """The bug this design fixes: the Swap tab's checkbox never reached SwapSettings."""
    form = forms["swap"]
    seen = []

    @form.takes
    def handler(name, photo, settings: SwapSettings, request: gr.Request):
        seen.append((name, photo, settings, request))

    values = {n: c.component.value for n, c in form.controls.items()} | {"watermark": False}
    handler("proj", "photo.png", *values.values(), "the request")
    assert seen == [("proj", "photo.png", SwapSettings(watermark=False), "the request")]


def test_a_wrapped_handler_shows_gradio_the_field_names_and_the_request(forms):
    form = forms["swap"]

    @form.takes
    def handler(name, settings: SwapSettings, request: gr.Request):
        return settings

    params = list(inspect.signature(handler).parameters)
    assert params == ["name", *form.names, "request"]
    assert gr.utils.get_type_hints(handler) == {"request": gr.Request}  # Gradio passes the request by this


def test_a_form_with_given_fields_hands_over_the_dataclass_to_complete(forms):
    form = forms["train"]

    @form.takes
    def handler(settings):
        return settings(faces_a="a", faces_b="b", model_dir="m", device="cpu", resume=False)

    config = handler(*[c.component.value for c in form.controls.values()])
    assert config.faces_a == "a" and config.batch_size == 8 and config.minutes is None


def test_an_empty_box_is_refused_by_its_label(forms):
    form = forms["train"]
    values = [c.component.value for c in form.controls.values()]
    values[form.names.index("iterations")] = None
    with pytest.raises(UserError, match="Iteration target: the box is empty"):
        form.values(values)

    @form.takes
    def handler(settings):
        return settings

    with pytest.raises(gr.Error, match="Iteration target"):
        handler(*values)


def test_a_new_engine_field_shows_as_missing_until_the_page_declares_it():
    @dataclasses.dataclass(frozen=True)
    class Sharper(SwapSettings):
        sharpen: float = 0.0

    with gr.Blocks():
        form = SettingsForm(Sharper, not_shown={"min_score": "x"})
        for name in ("direction", "color", "color_strength", "detail", "feature_detail", "blend", "erode", "blur", "faces",
                     "watermark"):
            form.add(name, gr.Textbox)
        assert form.missing() == ["sharpen"]
        form.add("sharpen", gr.Slider, minimum=0, maximum=1)
    assert form.missing() == []
    with pytest.raises(ValueError, match="no field 'sharpness'"):
        SettingsForm(Sharper, not_shown={"sharpness": "typo"})
