"""The "Regional prompts" accordion on txt2img: the image cut into columns or rows, a prompt for each.

On Generate its values become `alwayson_scripts["regional prompter"]` arguments (the grid form: `divide`,
`ratios`, `prompts`, `base_weight`), checked by the parser the API uses (`webui.engine.regional`), so a bad value
is reported naming the field; the main prompt is the base prompt. Unticked, it sends nothing. Regional prompts run
on the built-in model; other models refuse them with a message saying so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

REGIONAL_NAME = "regional prompter"  # the request-argument name the engine reads (webui.engine.regional)


@dataclass
class RegionalInputs:
    """The accordion's components and how their values become the arguments (as `ExtensionInputs`)."""

    components: list[Any]
    to_args: Callable[..., Any]


def region_prompts(text: str) -> list[str]:
    """One prompt per line, or separated by BREAK as Regional Prompter writes them; blank ones dropped."""
    return [part.strip() for part in re.split(r"\n|\bBREAK\b", text or "") if part.strip()]


def build_regional_accordion(mode: str) -> list[tuple[str, RegionalInputs]]:
    with gr.Accordion("Regional prompts (built-in model)", open=False, elem_id=f"{mode}_regional"):
        enable = gr.Checkbox(False, label="A prompt per region", elem_id=f"{mode}_regional_enable")
        with gr.Row():
            divide = gr.Radio(["Columns", "Rows"], value="Columns", label="Divide into",
                              elem_id=f"{mode}_regional_divide")
            ratios = gr.Textbox("1,1", label="Ratios (one per region)", max_lines=1,
                                elem_id=f"{mode}_regional_ratios")
        prompts = gr.Textbox("", label="Region prompts (one per line, or separated by BREAK; left to right / top "
                                       "to bottom)", lines=3, max_lines=8, elem_id=f"{mode}_regional_prompts")
        base = gr.Slider(0.0, 2.0, value=0.2, step=0.05, label="Base prompt weight (the main prompt, everywhere)",
                         elem_id=f"{mode}_regional_base")

    def to_args(on: bool, direction: str, ratio_text: str, text: str, base_weight: float) -> dict[str, Any]:
        if not on:
            return {"enabled": False}
        return {"divide": str(direction or "Columns").lower(), "ratios": ratio_text or "",
                "prompts": region_prompts(text), "base_weight": float(base_weight)}

    return [(REGIONAL_NAME, RegionalInputs([enable, divide, ratios, prompts, base], to_args))]
