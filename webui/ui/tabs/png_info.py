"""The PNG Info tab: read the parameters embedded in an image and send them to a generation tab.

Works on Easel's PNGs and on images AUTOMATIC1111, Forge and similar tools wrote (PNG text chunk, or the
EXIF UserComment of JPEG/WebP). "Send to" fills every control of the target tab that the parameters name,
sends the image along to img2img and Inpaint, and switches to that tab.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.generation import wire_send

TARGETS = {"txt2img": "Send to txt2img", "img2img": "Send to img2img", "inpaint": "Send to inpaint"}


def read_parameters(ui: UIContext, path: str | None) -> tuple[str, list[list[str]]]:
    """(parameters text, [[key, value], ...]) of the image at `path`; empty when it has none."""
    if not path:
        return "", []
    with Image.open(path) as image:
        text, fields = ui.easel.png_info(image)
    rows = [[key, value] for key, value in fields.items() if value != ""]
    return text, rows


def build(ui: UIContext) -> None:
    with gr.Tab("PNG Info", id="png_info", elem_id="tab_png_info"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=380,
                                 elem_id="png_info_image")
            with gr.Column(scale=1, min_width=300):
                text = gr.Textbox(label="Parameters", lines=4, max_lines=16, interactive=False, buttons=["copy"],
                                  elem_id="png_info_text", placeholder="Drop an image to read its parameters")
                table = gr.Dataframe(headers=["Field", "Value"], datatype=["str", "str"], interactive=False,
                                     label="Parsed fields", elem_id="png_info_fields", wrap=True, max_height=360)
                with gr.Row(elem_classes="easel-send-row"):
                    buttons = {target: gr.Button(label, size="sm", elem_id=f"png_info_send_to_{target}")
                               for target, label in TARGETS.items()}

        @guard
        def on_image(path: str | None) -> tuple[str, Any]:
            found, rows = read_parameters(ui, path)
            if path and not found:
                gr.Info("This image carries no generation parameters.")
            return found, rows

        image.change(on_image, inputs=image, outputs=[text, table], show_progress="hidden")

    def pick(path: str | None, found: str | None) -> tuple[Any, str]:
        if not path:
            raise ValueError("drop an image first")
        return path, found or ""

    def wire() -> None:
        for target, button in buttons.items():
            if target not in ui.generation:
                button.visible = False
                continue
            wire_send(ui, button, target, [image, text], pick)

    ui.after_build(wire)

