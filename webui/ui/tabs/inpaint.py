"""The Inpaint tab: paint over the area to repaint (or upload a mask), optionally extend the canvas.

The picture and the strokes come from a `gr.ImageEditor`; `webui.ui.masks` turns the strokes (any painted
pixel) or an uploaded mask into the request's mask. Mask blur, masked content, whole picture / only masked
(with padding), inpaint masked / not masked and outpainting by side map one-to-one to `InpaintRequest`.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from webui.requests import InpaintRequest
from webui.ui.context import UIContext
from webui.ui.controls import Control, ControlSet, bool_radio, field_control
from webui.ui.generation import build_panel
from webui.ui.masks import editor_image_and_mask
from webui.ui.tabs.img2img import wire_size_from_image

BRUSH_COLOR = ("#ffffff", 0.85)


def editor_value(image: Image.Image) -> dict[str, Any]:
    """What the editor shows for a picture sent from another tab: the picture, nothing painted yet."""
    return {"background": image, "layers": [], "composite": image}


def finalize(values: dict[str, Any]) -> dict[str, Any]:
    """Turn the editor and the uploaded mask into the request's init_image and mask."""
    values = dict(values)
    picture, mask = editor_image_and_mask(values.pop("editor", None), values.pop("mask_upload", None))
    values["init_image"], values["mask"] = picture, mask
    return values


def build(ui: UIContext) -> None:
    limits = ui.limits
    slots: dict[str, Any] = {}

    def source(controls: ControlSet) -> None:
        editor = gr.ImageEditor(
            label="Image: paint the area to repaint", type="pil", image_mode="RGBA",
            sources=["upload", "clipboard"], height=420, elem_id="inpaint_editor", layers=False,
            transforms=(), brush=gr.Brush(colors=[BRUSH_COLOR], default_color=BRUSH_COLOR, color_mode="fixed"),
            eraser=gr.Eraser(), format="png",
        )
        controls.add(Control("editor", editor))
        with gr.Accordion("Upload a mask instead", open=False, elem_id="inpaint_mask_upload_box"):
            controls.add(Control("mask_upload", gr.Image(label="Mask (white = repaint)", type="pil",
                                                         sources=["upload", "clipboard"], height=200,
                                                         elem_id="inpaint_mask_upload")))
        slots["editor"] = editor

    def options(controls: ControlSet) -> None:
        with gr.Row():
            controls.add(field_control(InpaintRequest, "denoising_strength", limits, min_width=140))
            controls.add(field_control(InpaintRequest, "mask_blur", limits, min_width=140))
        controls.add(field_control(InpaintRequest, "inpainting_fill", limits))
        controls.add(bool_radio(InpaintRequest, "inpainting_mask_invert", "Inpaint not masked", "Inpaint masked",
                                label="Mask mode"))
        with gr.Row():
            controls.add(bool_radio(InpaintRequest, "inpaint_full_res", "Only masked", "Whole picture",
                                    label="Inpaint area", min_width=140))
            controls.add(field_control(InpaintRequest, "inpaint_full_res_padding", limits, min_width=140))
        controls.add(field_control(InpaintRequest, "resize_mode", limits))
        with gr.Accordion("Outpainting: extend the canvas", open=False, elem_id="inpaint_outpaint") as outpaint:
            with gr.Row():
                for side in ("left", "right"):
                    controls.add(field_control(InpaintRequest, f"outpaint_{side}", limits, min_width=140))
            with gr.Row():
                for side in ("top", "bottom"):
                    controls.add(field_control(InpaintRequest, f"outpaint_{side}", limits, min_width=140))
        slots["outpaint"] = outpaint

    with gr.Tab("Inpaint", id="inpaint", elem_id="tab_inpaint"):
        tab, _ = build_panel(ui, "inpaint", InpaintRequest, source=source, options=options, finalize=finalize)
    tab.image_input = slots["editor"]
    tab.receive_image = editor_value
    tab.reveal.update({f"outpaint_{side}": slots["outpaint"] for side in ("left", "right", "top", "bottom")})
    wire_size_from_image(ui, slots["editor"], tab.controls)
    ui.register(tab)
