"""Gradio controls made from the request declarations, and the two-way mapping between them and requests.

A `Control` ties one request field (or a helper value such as the inpaint editor) to a component, with the
conversions each way: UI value → request value (`to_field`) and request value → UI value (`to_ui`).
`field_control` builds the component from the field's `FieldSpec` (label, minimum, the maximum from the
running settings' limits, step, choices), so a field declared once in `webui.requests` appears in the UI
with the same name, limits and defaults as in the API and the infotext.

A `ControlSet` is what a tab hands to Gradio as a *set* of inputs: the handler receives one dict keyed by
component, and `ControlSet.field_values` turns it into `{field name: value}`. `build_request` then makes the
typed request, raising `RequestError` naming the field when a value is of the wrong kind; the engine checks
the limits. `infotext_values` is the reverse path used by PNG Info and "Send to": parameters text → field
values, and `ControlSet.ui_updates` turns those into component values (clamped to each control's range).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import gradio as gr

from webui.infotext import parse_infotext, request_updates
from webui.requests import FieldSpec, GenerationRequest, Limits, RequestError, field_specs


def _identity(value: Any) -> Any:
    return value


@dataclass
class Control:
    """One component and how its value maps to a request field."""

    name: str  # the request field it fills, or a helper name the tab resolves itself
    component: Any  # a gradio component
    to_field: Callable[[Any], Any] = _identity
    to_ui: Callable[[Any], Any] = _identity
    minimum: float | None = None  # range the component accepts; values sent to it are clamped
    maximum: float | None = None
    limit: str | None = None  # the Limits attribute giving `maximum`, so Settings can raise or lower it


class ControlSet:
    """The controls of one tab, by name; passed to Gradio as a set so a handler gets one dict."""

    def __init__(self, request_cls: type[GenerationRequest]) -> None:
        self.request_cls = request_cls
        self.controls: dict[str, Control] = {}

    def add(self, control: Control) -> Any:
        if control.name in self.controls:
            raise ValueError(f"control {control.name!r} is declared twice")
        self.controls[control.name] = control
        return control.component

    def __getitem__(self, name: str) -> Any:
        return self.controls[name].component

    def __contains__(self, name: object) -> bool:
        return name in self.controls

    def names(self) -> list[str]:
        return list(self.controls)

    def components(self) -> set[Any]:
        return {c.component for c in self.controls.values()}

    def field_values(self, by_component: dict[Any, Any]) -> dict[str, Any]:
        """`{name: request value}` from the dict Gradio passes for a set of inputs (other keys ignored)."""
        values: dict[str, Any] = {}
        for control in self.controls.values():
            if control.component in by_component:
                values[control.name] = control.to_field(by_component[control.component])
        return values

    def ui_updates(self, values: dict[str, Any]) -> dict[Any, Any]:
        """`{component: UI value}` for the named values this set has, clamped to each control's range."""
        updates: dict[Any, Any] = {}
        for name, value in values.items():
            control = self.controls.get(name)
            if control is None:
                continue
            ui_value = control.to_ui(value)
            if isinstance(ui_value, (int, float)) and not isinstance(ui_value, bool):
                if control.minimum is not None:
                    ui_value = max(ui_value, control.minimum)
                if control.maximum is not None:
                    ui_value = min(ui_value, control.maximum)
            updates[control.component] = ui_value
        return updates


# Building controls from FieldSpecs ---------------------------------------------------------------
def field_default(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def spec_maximum(s: FieldSpec, limits: Limits) -> float | None:
    return getattr(limits, s.limit) if s.limit else s.maximum


def field_control(cls: type[GenerationRequest], name: str, limits: Limits, *, kind: str | None = None,
                  value: Any = None, **kwargs: Any) -> Control:
    """A component for field `name` of `cls`, labelled and bounded by its FieldSpec.

    `kind` picks the component: "slider", "number", "textbox", "dropdown", "radio" or "checkbox"; by default
    booleans are checkboxes, text with choices a radio, other text a textbox and bounded numbers sliders.
    `value` overrides the declared default; other keyword arguments go to the component.
    """
    s = field_specs(cls)[name]
    default = field_default(cls, name)
    value = default if value is None else value
    top = spec_maximum(s, limits)
    kwargs.setdefault("label", s.label)
    kwargs.setdefault("elem_id", f"{field_default(cls, 'mode')}_{name}")
    if kind is None:
        if isinstance(default, bool):
            kind = "checkbox"
        elif isinstance(default, str):
            kind = "radio" if s.choices else "textbox"
        else:
            kind = "slider" if s.minimum is not None and top is not None else "number"
    if kind == "checkbox":
        return Control(name, gr.Checkbox(value=bool(value), **kwargs), to_field=_as_bool)
    if kind in ("radio", "dropdown"):
        choices = list(kwargs.pop("choices", None) or s.choices or [])
        maker = gr.Radio if kind == "radio" else gr.Dropdown
        return Control(name, maker(choices=choices, value=value, **kwargs), to_field=_as_text)
    if kind == "textbox":
        return Control(name, gr.Textbox(value=value, **kwargs), to_field=_as_text)
    is_int = isinstance(default, int)
    convert = _as_int(cls, name) if is_int else _as_float(cls, name)
    if kind == "slider":
        component = gr.Slider(minimum=s.minimum, maximum=top, step=s.step or (1 if is_int else 0.01), value=value,
                              **kwargs)
    elif kind == "number":
        component = gr.Number(value=value, precision=0 if is_int else None, minimum=s.minimum, maximum=top, **kwargs)
    else:
        raise ValueError(f"unknown control kind {kind!r}")
    return Control(name, component, to_field=convert, minimum=s.minimum, maximum=top, limit=s.limit)


def bool_choice(true_label: str, false_label: str) -> tuple[Callable[[Any], bool], Callable[[Any], str]]:
    """Conversions for a boolean field shown as a two-way radio."""
    return (lambda v: v == true_label), (lambda v: true_label if v else false_label)


def bool_radio(cls: type[GenerationRequest], name: str, true_label: str, false_label: str, **kwargs: Any) -> Control:
    to_field, to_ui = bool_choice(true_label, false_label)
    s = field_specs(cls)[name]
    kwargs.setdefault("label", s.label)
    kwargs.setdefault("elem_id", f"{field_default(cls, 'mode')}_{name}")
    radio = gr.Radio(choices=[false_label, true_label], value=to_ui(field_default(cls, name)), **kwargs)
    return Control(name, radio, to_field=to_field, to_ui=to_ui)


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _as_bool(value: Any) -> bool:
    return bool(value)


def _api_name(cls: type, name: str) -> str:
    s = field_specs(cls).get(name)
    return (s.api if s and s.api else None) or name


def _number(cls: type, name: str, value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RequestError(_api_name(cls, name), "is empty; enter a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(_api_name(cls, name), f"must be a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise RequestError(_api_name(cls, name), f"must be a finite number, got {value!r}")
    return number


def _as_int(cls: type, name: str) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = _number(cls, name, value)
        if not number.is_integer():
            raise RequestError(_api_name(cls, name), f"must be a whole number, got {value}")
        return int(number)

    return convert


def _as_float(cls: type, name: str) -> Callable[[Any], float]:
    return lambda value: _number(cls, name, value)


# Requests and infotext --------------------------------------------------------------------------
def build_request(cls: type[GenerationRequest], values: dict[str, Any]) -> GenerationRequest:
    """The typed request from `{field name: value}`; unknown names are a programming error (ValueError)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = known[name].default
        if isinstance(default, bool):
            kwargs[name] = bool(value)
        elif isinstance(default, int):
            kwargs[name] = _as_int(cls, name)(value)
        elif isinstance(default, float):
            kwargs[name] = _as_float(cls, name)(value)
        elif isinstance(default, str):
            kwargs[name] = _as_text(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def infotext_values(text: str, cls: type[GenerationRequest], known_styles: Iterable[Any] = ()) -> dict[str, Any]:
    """Field values of `cls` restored from a parameters text (Easel's or AUTOMATIC1111's); `known_styles` are
    found in the prompts of a text that has no `Styles array` (`webui.infotext.split_styles`)."""
    return request_updates(parse_infotext(text), cls, known_styles=known_styles) if text and text.strip() else {}


def only(values: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    wanted = set(names)
    return {k: v for k, v in values.items() if k in wanted}
