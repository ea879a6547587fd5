"""The img2img tab: an input image is partly noised and denoised again towards the prompt."""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from webui.requests import Img2ImgRequest
from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.controls import Control, ControlSet, field_control
from webui.ui.generation import build_panel, snap_size
from webui.ui.tabs.txt2img import refiner_accordion


def build(ui: UIContext) -> None:
    limits = ui.limits
    slots: dict[str, Any] = {}
    reveal: dict[str, Any] = {}

    def source(controls: ControlSet) -> None:
        image = gr.Image(label="Image", type="pil", image_mode="RGB", sources=["upload", "clipboard"],
                         height=320, elem_id="img2img_image")
        controls.add(Control("init_image", image))
        slots["image"] = image

    def options(controls: ControlSet) -> None:
        controls.add(field_control(Img2ImgRequest, "denoising_strength", limits))
        controls.add(field_control(Img2ImgRequest, "resize_mode", limits))
        reveal["refiner_checkpoint"] = refiner_accordion(ui, controls, Img2ImgRequest, "img2img")

    with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
        tab, _ = build_panel(ui, "img2img", Img2ImgRequest, source=source, options=options)
    tab.reveal.update(reveal)
    tab.image_input = slots["image"]
    tab.receive_image = lambda image: image
    wire_size_from_image(ui, slots["image"], tab.controls)
    ui.register(tab)


def wire_size_from_image(ui: UIContext, image_input: Any, controls: ControlSet) -> None:
    """When an image is uploaded, set width and height to its size (multiples of 8, within the limits)."""

    @guard
    def on_upload(value: Any) -> tuple[Any, Any]:
        image = value.get("background") if isinstance(value, dict) else value
        if not isinstance(image, Image.Image):
            return gr.skip(), gr.skip()
        return snap_size(image.size, ui.limits.max_side)

    image_input.upload(on_upload, inputs=image_input, outputs=[controls["width"], controls["height"]],
                       show_progress="hidden")
