"""Prompt styles on each generation tab: a Styles multi-select beside the prompt, and a small editor.

The selected styles go into the request (`styles`); the engine applies them when the job runs, so the prompt
boxes and the infotext keep the prompt as typed. "Apply styles to prompt" writes the styles' texts into the
prompt boxes instead and clears the selection. The editor (an accordion under the settings) picks a style to
change or takes a new name, copies the tab's prompts into it, and saves or deletes the style in `styles.csv`
(`webui.styles.StyleStore`: atomic writes, a backup of the previous file); every tab's lists follow at once.
Errors name the field: `style name`, `style prompt`, or the style file and its line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.controls import Control

REFRESH = "\u21bb"  # ↻ (renders without an emoji font)


@dataclass
class StyleWidgets:
    """One tab's style components."""

    mode: str
    selected: Any  # gr.Dropdown, multiselect: the request's `styles`
    apply: Any
    refresh: Any
    name: Any  # the editor: gr.Dropdown with custom values (pick a style, or type a new name)
    prompt: Any
    negative: Any
    copy: Any
    save: Any
    delete: Any


def styles_control(ui: UIContext, mode: str) -> Control:
    """The Styles multi-select, as the `styles` control of a tab (a list in the UI, a tuple in the request).

    A value sent to it (pasted parameters) keeps only the styles that exist here, and refreshes its choices."""
    store = ui.easel.styles
    dropdown = gr.Dropdown(choices=store.names(), value=[], multiselect=True, label="Styles",
                           elem_id=f"{mode}_styles", elem_classes="easel-styles", min_width=150)

    def to_ui(names: Iterable[str]) -> Any:
        known = store.names()
        return selection(known, names)

    return Control("styles", dropdown, to_field=lambda value: tuple(value or ()), to_ui=to_ui)


def selection(known: list[str], names: Iterable[str]) -> Any:
    """An update of a Styles multi-select: the choices `known`, the selected `names` that are among them."""
    return gr.Dropdown(choices=known, value=[n for n in names if n in known], multiselect=True)


def missing_styles(ui: UIContext, names: Iterable[str]) -> list[str]:
    """The names a pasted text gives that no style file here has."""
    known = set(ui.easel.styles.names())
    return [name for name in names if name not in known]


def build_style_buttons(mode: str) -> tuple[Any, Any]:
    """"Apply styles to prompt" and the refresh button, under the Styles multi-select."""
    with gr.Row(elem_classes="easel-styles-row"):
        apply = gr.Button("Apply styles to prompt", size="sm", elem_id=f"{mode}_styles_apply", min_width=100,
                          scale=4)
        refresh = gr.Button(REFRESH, size="sm", elem_id=f"{mode}_styles_refresh", min_width=36, scale=0)
    return apply, refresh


def build_style_editor(ui: UIContext, mode: str) -> tuple[Any, ...]:
    """The collapsed editor: name (pick or type), prompt, negative prompt; copy, save, delete."""
    store = ui.easel.styles
    with gr.Accordion("Styles editor", open=False, elem_id=f"{mode}_styles_editor"):
        name = gr.Dropdown(choices=store.names(), value=None, allow_custom_value=True, label="Style name",
                           info="Pick a style to change it, or type a new name", elem_id=f"{mode}_style_name")
        prompt = gr.Textbox(label="Style prompt", lines=2, max_lines=6, elem_id=f"{mode}_style_prompt",
                            placeholder="Text added after the prompt, or with {prompt} where the prompt goes")
        negative = gr.Textbox(label="Style negative prompt", lines=1, max_lines=6, elem_id=f"{mode}_style_negative")
        with gr.Row():
            copy = gr.Button("Copy main prompts", size="sm", elem_id=f"{mode}_style_copy", min_width=80)
            save = gr.Button("Save style", size="sm", variant="primary", elem_id=f"{mode}_style_save", min_width=80)
            delete = gr.Button("Delete style", size="sm", variant="stop", elem_id=f"{mode}_style_delete",
                               min_width=80)
    return name, prompt, negative, copy, save, delete


def wire_styles(ui: UIContext, widgets: StyleWidgets, prompt: Any, negative_prompt: Any) -> None:
    """The handlers of one tab's style components; saving and deleting update every tab's lists."""
    store = ui.easel.styles

    @guard
    def on_apply(text: str, negative: str, names: list[str] | None) -> tuple[str, str, Any]:
        styled, styled_negative = store.apply(text or "", negative or "", tuple(names or ()))
        return styled, styled_negative, selection(store.names(), ())

    widgets.apply.click(on_apply, inputs=[prompt, negative_prompt, widgets.selected],
                        outputs=[prompt, negative_prompt, widgets.selected], show_progress="hidden")

    @guard
    def on_refresh(names: list[str] | None, picked: str | None) -> tuple[Any, Any]:
        for problem in store.errors():
            gr.Warning(f"Styles: {problem}")
        known = store.names()
        return selection(known, names or ()), gr.Dropdown(choices=known, value=picked)

    widgets.refresh.click(on_refresh, inputs=[widgets.selected, widgets.name],
                          outputs=[widgets.selected, widgets.name], show_progress="hidden")

    @guard
    def on_pick(evt: gr.SelectData) -> tuple[Any, Any]:
        style = store.get(str(evt.value or ""))
        if style is None:  # a new name: keep what is typed in the boxes
            return gr.skip(), gr.skip()
        return style.prompt, style.negative_prompt

    widgets.name.select(on_pick, inputs=None, outputs=[widgets.prompt, widgets.negative], show_progress="hidden")
    widgets.copy.click(lambda text, negative: (text or "", negative or ""), inputs=[prompt, negative_prompt],
                       outputs=[widgets.prompt, widgets.negative], show_progress="hidden")

    def wire_edits() -> None:
        tabs = [tab.styles for tab in ui.generation.values() if getattr(tab, "styles", None) is not None]
        selections = [w.selected for w in tabs]
        outputs = [*selections, *[w.name for w in tabs]]

        def updates(current: tuple[Any, ...], picked: str | None) -> tuple[Any, ...]:
            known = store.names()
            kept = [selection(known, names or ()) for names in current]
            names = [gr.Dropdown(choices=known, value=picked) if w is widgets else gr.Dropdown(choices=known)
                     for w in tabs]
            return (*kept, *names)

        @guard
        def on_save(name: str | None, text: str, negative: str, *current: Any) -> tuple[Any, ...]:
            style = store.save(name or "", text or "", negative or "")
            gr.Info(f"Style {style.name!r} saved in {store.path.name}")
            return updates(current, style.name)

        @guard
        def on_delete(name: str | None, *current: Any) -> tuple[Any, ...]:
            store.delete(name or "")
            gr.Info(f"Style {name.strip()!r} deleted from {store.path.name}")
            return (*updates(current, None), "", "")

        widgets.save.click(on_save, inputs=[widgets.name, widgets.prompt, widgets.negative, *selections],
                           outputs=outputs, show_progress="hidden")
        widgets.delete.click(on_delete, inputs=[widgets.name, *selections],
                             outputs=[*outputs, widgets.prompt, widgets.negative], show_progress="hidden")

    ui.after_build(wire_edits)
