"""The "Detail fixer" accordion on txt2img and img2img: one detection pass of the built-in detail fixer.

Its controls feed generation the way an extension's accordion does: on Generate their values become the
`alwayson_scripts["easel detail"]` arguments (one pass as a dict), checked by the same parser the API uses, so a
bad value is reported naming the field. Unticked, it sends nothing and the generation runs without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from webui.infotext import parse_infotext

DETAIL_NAME = "easel detail"  # the request-argument name the engine reads (webui.engine.detail_args)


@dataclass
class DetailInputs:
    """The accordion's components and how their values become the pass's arguments (as `ExtensionInputs`)."""

    components: list[Any]
    to_args: Callable[..., Any]


def build_detail_accordion(mode: str) -> tuple[list[tuple[str, DetailInputs]], dict[str, Any]]:
    """The accordion's controls as (argument name, inputs) for the generation panel, and its components by name
    (what "Send to" fills from an infotext, `detail_updates`)."""
    with gr.Accordion("Detail fixer", open=False, elem_id=f"{mode}_detail") as accordion:
        enable = gr.Checkbox(False, label="Fix details after generating", elem_id=f"{mode}_detail_enable")
        query = gr.Textbox("face", label="Find (any words: face, hands, the red circle)", max_lines=1,
                           elem_id=f"{mode}_detail_query")
        prompt = gr.Textbox("", label="Prompt (empty: the main prompt)", lines=1, max_lines=4,
                            elem_id=f"{mode}_detail_prompt")
        negative = gr.Textbox("", label="Negative prompt (empty: the main one)", lines=1, max_lines=4,
                              elem_id=f"{mode}_detail_negative")
        denoising = gr.Slider(0.0, 1.0, value=0.4, step=0.01, label="Denoising strength",
                              elem_id=f"{mode}_detail_denoising")
        with gr.Row():
            dilate = gr.Slider(-64, 64, value=4, step=1, label="Dilate (+) / erode (−), px",
                               elem_id=f"{mode}_detail_dilate")
            blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur (px)", elem_id=f"{mode}_detail_blur")

    def to_args(on: bool, find: str, text: str, negative_text: str, strength: float, grow: float,
                feather: float) -> dict[str, Any]:
        if not on:
            return {"enabled": False, "query": find or "-"}
        return {"query": find or "", "prompt": text or "", "negative_prompt": negative_text or "",
                "denoising_strength": float(strength), "dilate_erode": int(grow), "mask_blur": int(feather)}

    components = {"accordion": accordion, "enable": enable, "query": query, "prompt": prompt,
                  "negative_prompt": negative, "denoising": denoising, "dilate/erode": dilate, "mask blur": blur}
    inputs = DetailInputs([enable, query, prompt, negative, denoising, dilate, blur], to_args)
    return [(DETAIL_NAME, inputs)], components


def detail_updates(components: dict[str, Any], text: str) -> dict[Any, Any]:
    """Updates that fill the accordion from a parameters text's first pass (`Detail 1 …`), or untick it when the
    text has none."""
    if not components:
        return {}
    params = parse_infotext(text or "")
    if "Detail 1 query" not in params:
        return {components["enable"]: False}
    updates: dict[Any, Any] = {components["enable"]: True, components["accordion"]: gr.Accordion(open=True)}
    for key in ("query", "prompt", "negative prompt", "denoising", "dilate/erode", "mask blur"):
        name = "negative_prompt" if key == "negative prompt" else key
        value = params.get(f"Detail 1 {key}")
        if value is None and key in ("prompt", "negative prompt"):
            value = ""  # not written: the main prompt's
        if value is None:
            continue
        updates[components[name]] = value if key in ("query", "prompt", "negative prompt") else float(value)
    return updates
