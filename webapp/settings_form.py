"""A tab's settings as one engine dataclass: controls declared by field name, the dataclass read back in one call.

Why: the tabs listed their controls positionally, repeated that list in every handler's signature and
rebuilt the engine's dataclass field by field, so a setting could be dropped on the way with nothing
failing (the Swap tab's mark checkbox was). Here a control is made for a named field (its default, and
its range where the field's metadata gives one, come from the dataclass), every other field is listed
with the reason the page does not show it, and a handler wrapped by `takes` receives the dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.errors import UserError

PARAMETER = "settings"  # the handler parameter `takes` fills with the dataclass


@dataclass(frozen=True)
class Control:
    component: Any  # a Gradio component
    parse: Callable[[Any], Any]  # the page's value -> the field's
    show: Callable[[Any], Any]  # the field's value -> the page's


class SettingsForm:
    """The controls of one engine dataclass, keyed by its field names, in the order they were added.

    `not_shown`: field -> why the page leaves it at its default. `given`: field -> why the handler fills
    it (a project's paths, the server's device); a form with given fields hands its handlers the
    dataclass still to be called with them (a `functools.partial`), one without hands the instance.
    """

    def __init__(self, cls: type, *, not_shown: dict[str, str] | None = None,
                 given: dict[str, str] | None = None) -> None:
        self.cls = cls
        self.fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        self.not_shown = dict(not_shown or {})
        self.given = dict(given or {})
        self.controls: dict[str, Control] = {}
        for name in (*self.not_shown, *self.given):
            self._field(name)
        self._types = typing.get_type_hints(cls)

    def _field(self, name: str) -> dataclasses.Field:
        if name not in self.fields:
            raise ValueError(f"{self.cls.__name__} has no field {name!r}")
        return self.fields[name]

    def default(self, name: str) -> Any:
        f = self._field(name)
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return None

    def add(self, name: str, component: type, *, parse: Callable[[Any], Any] | None = None,
            show: Callable[[Any], Any] | None = None, **kwargs) -> Any:
        """Make `component` for field `name`: its value is the field's default (through `show`), a Slider's
        or Number's minimum and maximum the field's metadata "range" unless given."""
        f = self._field(name)
        if name in self.controls or name in self.not_shown or name in self.given:
            raise ValueError(f"{self.cls.__name__}.{name} is declared twice in the form")
        show = show or _same
        kwargs.setdefault("value", show(self.default(name)))
        low, high = f.metadata.get("range", (None, None))
        accepts = inspect.signature(component).parameters
        if low is not None and "minimum" in accepts:
            kwargs.setdefault("minimum", low)
        if high is not None and "maximum" in accepts:
            kwargs.setdefault("maximum", high)
        made = component(**kwargs)
        self.controls[name] = Control(made, parse or functools.partial(_coerce, self._types[name]), show)
        return made

    @property
    def names(self) -> list[str]:
        return list(self.controls)

    @property
    def components(self) -> list:
        return [c.component for c in self.controls.values()]

    def missing(self) -> list[str]:
        """Fields neither shown, nor given, nor listed as not shown: each one a setting the page would drop."""
        return [n for n in self.fields if n not in self.controls and n not in self.not_shown and n not in self.given]

    def values(self, page_values: Sequence) -> dict:
        """{field: value} of the controls' values (in the order of `components`); UserError for an empty box."""
        if len(page_values) != len(self.controls):
            raise ValueError(f"{len(page_values)} values for the {len(self.controls)} controls of "
                             f"{self.cls.__name__}")
        out = {}
        for (name, control), value in zip(self.controls.items(), page_values, strict=True):
            if value is None and not _optional(self._types[name]):
                label = getattr(control.component, "label", None) or name
                raise UserError(f"{label}: the box is empty; fill it in")
            out[name] = control.parse(value)
        return out

    def read(self, page_values: Sequence, **given) -> Any:
        """The dataclass of the controls' values, the `given` fields and every other field's default."""
        return self.cls(**self.values(page_values), **given)

    def show(self, settings: Any) -> list:
        """The page's values for the fields of `settings` (a dataclass or a {field: value} dict):
        `gr.skip()` for those it lacks."""
        get = settings.get if isinstance(settings, dict) else (lambda n, d: getattr(settings, n, d))
        skip = object()
        shown = []
        for name, control in self.controls.items():
            value = get(name, skip)
            shown.append(gr.skip() if value is skip else control.show(value))
        return shown

    def takes(self, fn: Callable) -> Callable:
        """`fn` with its parameter `settings` replaced by one input per control, for Gradio's positional
        inputs `[..., *form.components, ...]`: `fn` receives the dataclass (a partial of it when fields
        are given), and the API endpoint's parameters are the field names. gr.Request and the like are
        still passed, as Gradio reads them from the signature."""
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        at = next((i for i, p in enumerate(params) if p.name == PARAMETER), None)
        if at is None:
            raise ValueError(f"{fn.__qualname__} has no parameter {PARAMETER!r} for the {self.cls.__name__}")
        count = len(self.controls)

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            values = args[at:at + count]
            try:
                settings = (functools.partial(self.cls, **self.values(values)) if self.given
                            else self.read(values))
            except UserError as err:
                raise gr.Error(str(err)) from err
            return fn(*args[:at], settings, *args[at + count:], **kwargs)

        fields = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in self.controls]
        wrapped.__signature__ = signature.replace(parameters=[*params[:at], *fields, *params[at + 1:]])
        wrapped.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != PARAMETER}
        return wrapped


def _same(value: Any) -> Any:
    return value


def _optional(kind: Any) -> bool:
    return type(None) in typing.get_args(kind)


def _base(kind: Any) -> Any:
    """int for `int | None`, tuple for `tuple[str, ...]`: the type a page value is turned into."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if _optional(kind) and len(args) == 1:
        kind = args[0]
    return typing.get_origin(kind) or kind


def _coerce(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    base = _base(kind)
    if base is bool:
        return bool(value)
    if base is int:
        return int(round(float(value)))
    if base is float:
        return float(value)
    if base in (str, tuple):
        return base(value)
    return value
