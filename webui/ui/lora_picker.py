"""The LoRA picker under each generation tab's settings: choose a LoRA, see its preview, family and trigger words,
and insert `<lora:name:1>` into the prompt (the prompt tag is what applies it; the picker only writes it).
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext


def lora_tag(name: str, weight: float = 1.0) -> str:
    """AUTOMATIC1111's prompt tag for a LoRA."""
    text = f"{weight:g}"
    return f"<lora:{name}:{text}>"


def insert_tag(prompt: str | None, name: str | None) -> str:
    """The prompt with `<lora:name:1>` appended (once: a LoRA already in the prompt is left as it is)."""
    prompt = prompt or ""
    if not name:
        return prompt
    if f"<lora:{name}:" in prompt or f"<lora:{name}>" in prompt:
        return prompt
    tag = lora_tag(name)
    return f"{prompt.rstrip()} {tag}".strip()


def describe(entry: Any) -> str:
    """One line about a LoRA: family, rank, short hash and trigger words."""
    parts = [getattr(entry, "arch_label", str(getattr(entry, "arch", "")))]
    if getattr(entry, "rank", None):
        parts.append(f"rank {entry.rank}")
    if getattr(entry, "short_hash", None):
        parts.append(f"hash {entry.short_hash}")
    words = getattr(entry, "trigger_words", ())
    if words:
        parts.append("trigger: " + ", ".join(words))
    return " · ".join(p for p in parts if p)


def build_lora_picker(ui: UIContext, mode: str, prompt: Any) -> None:
    """A collapsed accordion with a LoRA dropdown, its preview and an Add button that writes the tag."""
    manager = ui.easel.manager

    def names() -> list[str]:
        return [entry.name for entry in manager.loras()]

    def entry_for(name: str | None) -> Any:
        return next((e for e in manager.loras() if e.name == name), None)

    with gr.Accordion("LoRA", open=False, elem_id=f"{mode}_lora"):
        with gr.Row():
            choice = gr.Dropdown(choices=names(), value=None, label="LoRA", scale=4, min_width=160,
                                 elem_id=f"{mode}_lora_choice", allow_custom_value=False)
            add = gr.Button("Add to prompt", size="sm", scale=1, min_width=80, elem_id=f"{mode}_lora_add")
            refresh = gr.Button("\U0001f504", size="sm", scale=0, min_width=40, elem_id=f"{mode}_lora_refresh")
        about = gr.Markdown("", elem_id=f"{mode}_lora_about")
        preview = gr.Image(label="Preview", type="pil", interactive=False, visible=False, height=128,
                           elem_id=f"{mode}_lora_preview")

    @guard
    def on_choose(name: str | None) -> tuple[Any, Any]:
        entry = entry_for(name)
        if entry is None:
            return gr.update(value=""), gr.update(value=None, visible=False)
        image = manager.lora_preview(entry.name)
        return gr.update(value=describe(entry)), gr.update(value=image, visible=image is not None)

    @guard
    def on_add(current: str | None, name: str | None) -> str:
        return insert_tag(current, name)

    @guard
    def on_refresh() -> Any:
        manager.refresh_loras()
        return gr.update(choices=names())

    choice.change(on_choose, inputs=[choice], outputs=[about, preview], show_progress="hidden")
    add.click(on_add, inputs=[prompt, choice], outputs=[prompt], show_progress="hidden")
    refresh.click(on_refresh, outputs=[choice], show_progress="hidden")
