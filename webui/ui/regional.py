"""The "Regional prompts" accordion on txt2img, img2img and inpaint: a prompt per region of the image, the regions
as columns or rows of a grid or painted on layers.

On Generate its values become `alwayson_scripts["regional prompter"]` arguments (the grid form: `divide`,
`ratios`, `prompts`, `base_weight`; the painted form: `masks`, `prompts`, `base_weight`), checked by the parser the
API uses (`webui.engine.regional`), so a bad value is reported naming the field; the main prompt is the base
prompt. Unticked, it sends nothing. Regional prompts run on SD 1.x, SD 2.x and SDXL (txt2img, img2img, inpaint on
the whole picture) and on the built-in model (txt2img); other models refuse them with a message naming the family.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
from PIL import Image

REGIONAL_NAME = "regional prompter"  # the request-argument name the engine reads (webui.engine.regional)
PAINTED = "Painted masks"
LAYER_COLOURS = ["#ff4040", "#40a0ff", "#40d040", "#ffd040", "#d040ff", "#40ffff", "#ff9040", "#ffffff"]


@dataclass
class RegionalInputs:
    """The accordion's components and how their values become the arguments (as `ExtensionInputs`)."""

    components: list[Any]
    to_args: Callable[..., Any]


def region_prompts(text: str) -> list[str]:
    """One prompt per line, or separated by BREAK as Regional Prompter writes them; blank ones dropped."""
    return [part.strip() for part in re.split(r"\n|\bBREAK\b", text or "") if part.strip()]


def painted_layers(editor: Any) -> list[Image.Image]:
    """The editor's layers that hold paint (their alpha is the region), top layer list order kept."""
    layers = editor.get("layers") if isinstance(editor, dict) else None
    painted = []
    for layer in layers or []:
        if isinstance(layer, Image.Image) and layer.mode == "RGBA" and layer.getchannel("A").getbbox():
            painted.append(layer)
    return painted


def build_regional_accordion(mode: str) -> list[tuple[str, RegionalInputs]]:
    with gr.Accordion("Regional prompts", open=False, elem_id=f"{mode}_regional"):
        gr.Markdown("SD 1.x, SD 2.x and SDXL (txt2img, img2img, inpaint on the whole picture); the built-in model "
                    "in txt2img. The main prompt is the base prompt, everywhere.")
        enable = gr.Checkbox(False, label="A prompt per region", elem_id=f"{mode}_regional_enable")
        with gr.Row():
            divide = gr.Radio(["Columns", "Rows", PAINTED], value="Columns", label="Regions",
                              elem_id=f"{mode}_regional_divide")
            ratios = gr.Textbox("1,1", label="Ratios (one per region; columns and rows)", max_lines=1,
                                elem_id=f"{mode}_regional_ratios")
        prompts = gr.Textbox("", label="Region prompts (one per line, or separated by BREAK; left to right / top "
                                       "to bottom / layer by layer)", lines=3, max_lines=8,
                             elem_id=f"{mode}_regional_prompts")
        base = gr.Slider(0.0, 2.0, value=0.2, step=0.05, label="Base prompt weight (the main prompt, everywhere)",
                         elem_id=f"{mode}_regional_base")
        with gr.Accordion("Painted masks: one layer per region prompt, in order", open=False,
                          elem_id=f"{mode}_regional_paint_box"):
            editor = gr.ImageEditor(
                label="Paint each region on its own layer (stretched to the image's size)", type="pil",
                image_mode="RGBA", sources=["upload", "clipboard"], height=360, canvas_size=(512, 512),
                layers=gr.LayerOptions(allow_additional_layers=True, layers=["Region 1", "Region 2"]),
                brush=gr.Brush(colors=LAYER_COLOURS, default_color=LAYER_COLOURS[0]), eraser=gr.Eraser(),
                transforms=(), format="png", elem_id=f"{mode}_regional_paint")

    def to_args(on: bool, direction: str, ratio_text: str, text: str, base_weight: float,
                painted: Any = None) -> dict[str, Any]:
        if not on:
            return {"enabled": False}
        if direction == PAINTED:
            return {"masks": painted_layers(painted), "prompts": region_prompts(text),
                    "base_weight": float(base_weight)}
        return {"divide": str(direction or "Columns").lower(), "ratios": ratio_text or "",
                "prompts": region_prompts(text), "base_weight": float(base_weight)}

    return [(REGIONAL_NAME, RegionalInputs([enable, divide, ratios, prompts, base, editor], to_args))]
