"""The txt2img tab: a prompt becomes images, with an optional hires fix (upscale, then denoise again)."""
from __future__ import annotations

import gradio as gr

from webui.requests import Txt2ImgRequest
from webui.ui.context import UIContext
from webui.ui.controls import ControlSet, field_control
from webui.ui.generation import build_panel

UPSCALERS = ["Lanczos", "Nearest"]


def known_upscaler(name: str) -> str:
    """An upscaler Easel has, for a name from an infotext (other tools' upscalers become Lanczos)."""
    return next((u for u in UPSCALERS if u.lower() == str(name).lower()), UPSCALERS[0])


def build(ui: UIContext) -> None:
    limits = ui.limits
    hires: dict[str, gr.Accordion] = {}

    def options(controls: ControlSet) -> None:
        with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires") as accordion:
            controls.add(field_control(Txt2ImgRequest, "enable_hr", limits, label="Enable hires. fix"))
            with gr.Row():
                upscaler = field_control(Txt2ImgRequest, "hr_upscaler", limits, kind="dropdown",
                                         choices=UPSCALERS, min_width=140)
                upscaler.to_ui = known_upscaler
                controls.add(upscaler)
                controls.add(field_control(Txt2ImgRequest, "hr_scale", limits, min_width=140))
            with gr.Row():
                controls.add(field_control(Txt2ImgRequest, "hr_second_pass_steps", limits, min_width=140))
                controls.add(field_control(Txt2ImgRequest, "hr_denoising_strength", limits, min_width=140))
        hires["enable_hr"] = accordion

    with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
        tab, _ = build_panel(ui, "txt2img", Txt2ImgRequest, options=options)
    tab.reveal.update(hires)
    ui.register(tab)
