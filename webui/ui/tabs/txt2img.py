"""The txt2img tab: a prompt becomes images, with an optional hires fix (upscale the image or its latents, then
denoise again, with its own sampler, schedule, prompts and checkpoint if set) and an optional refiner."""
from __future__ import annotations

from typing import Any

import gradio as gr

from webui.requests import (LATENT_UPSCALERS, NO_REFINER, SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER,
                            SCHEDULE_LABELS, Txt2ImgRequest)
from webui.ui.context import UIContext
from webui.ui.controls import ControlSet, field_control
from webui.ui.generation import build_panel
from webui.ui.seed_walk import build_seed_walk

UPSCALERS = ["Lanczos", "Nearest"]


def known_upscaler(name: str, choices: list[str] | None = None) -> str:
    """An upscaler Easel has, for a name from an infotext (other tools' upscalers become Lanczos)."""
    return next((u for u in (choices or [*LATENT_UPSCALERS, *UPSCALERS]) if u.lower() == str(name).lower()),
                UPSCALERS[0])


def upscaler_choices(ui: UIContext) -> list[str]:
    """The latent upscalers, Lanczos, Nearest and the installed upscaler models."""
    upscalers = getattr(ui.easel.engine, "upscalers", None)
    return upscalers.hires_names() if upscalers is not None else [*LATENT_UPSCALERS, *UPSCALERS]


def refiner_accordion(ui: UIContext, controls: ControlSet, cls: type, prefix: str) -> gr.Accordion:
    """The Refiner accordion (txt2img and img2img): a checkpoint ("None": no refiner) and where it takes over."""
    with gr.Accordion("Refiner", open=False, elem_id=f"{prefix}_refiner") as accordion:
        with gr.Row():
            controls.add(field_control(cls, "refiner_checkpoint", ui.limits, kind="dropdown",
                                       choices=[NO_REFINER, *ui.easel.checkpoint_choices()], allow_custom_value=True,
                                       min_width=160))
            controls.add(field_control(cls, "refiner_switch_at", ui.limits, min_width=140))
    return accordion


def build(ui: UIContext) -> None:
    limits = ui.limits
    hires: dict[str, Any] = {}

    def options(controls: ControlSet) -> None:
        with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires") as accordion:
            controls.add(field_control(Txt2ImgRequest, "enable_hr", limits, label="Enable hires. fix"))
            choices = upscaler_choices(ui)
            with gr.Row():
                upscaler = field_control(Txt2ImgRequest, "hr_upscaler", limits, kind="dropdown",
                                         choices=choices, min_width=140)
                upscaler.to_ui = lambda name: known_upscaler(name, choices)
                controls.add(upscaler)
                controls.add(field_control(Txt2ImgRequest, "hr_scale", limits, min_width=140))
            with gr.Row():
                controls.add(field_control(Txt2ImgRequest, "hr_second_pass_steps", limits, min_width=140))
                controls.add(field_control(Txt2ImgRequest, "hr_denoising_strength", limits, min_width=140))
            with gr.Row():
                controls.add(field_control(Txt2ImgRequest, "hr_checkpoint_name", limits, kind="dropdown",
                                           choices=[SAME_CHECKPOINT, *ui.easel.checkpoint_choices()],
                                           allow_custom_value=True, min_width=140))
                controls.add(field_control(Txt2ImgRequest, "hr_sampler_name", limits, kind="dropdown",
                                           choices=[SAME_SAMPLER, *ui.easel.sampler_choices()],
                                           allow_custom_value=True, min_width=140))
                controls.add(field_control(Txt2ImgRequest, "hr_scheduler", limits, kind="dropdown",
                                           choices=[SAME_SCHEDULER, *SCHEDULE_LABELS], min_width=140))
            with gr.Row():
                controls.add(field_control(Txt2ImgRequest, "hr_prompt", limits, lines=2, min_width=140,
                                           placeholder="Empty: the prompt above"))
                controls.add(field_control(Txt2ImgRequest, "hr_negative_prompt", limits, lines=2, min_width=140,
                                           placeholder="Empty: the negative prompt above"))
        hires["enable_hr"] = accordion
        hires["refiner_checkpoint"] = refiner_accordion(ui, controls, Txt2ImgRequest, "txt2img")
        build_seed_walk(ui, controls)  # StyleGAN generators only

    with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
        tab, _ = build_panel(ui, "txt2img", Txt2ImgRequest, options=options)
    tab.reveal.update(hires)
    ui.register(tab)

