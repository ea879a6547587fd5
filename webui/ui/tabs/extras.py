"""The Extras tab: upscale one image with a chosen upscaler, by a factor or to a width and height, and restore
its faces with GFPGAN and CodeFormer (each by its visibility; `webui.engine.face_restore`) before upscaling.

The work is an upscale job on the engine's worker (`Easel.upscale`), queued behind any generation so it never
races one for the device; the result is shown with its parameters and saved under `outputs/extras-images/`
(when saving is on in the settings). A second upscaler can be blended over the first, as in AUTOMATIC1111.
The upscaler list (Lanczos, Nearest, then the models in `models/ESRGAN/`) is read when the tab is opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.ui.bridge import guard, job_failed
from webui.ui.context import UIContext

BUILTIN = ["Lanczos", "Nearest"]
NONE = "None"
MAX_SCALE = 8.0
BY_SCALE, TO_SIZE = "Scale by", "Scale to"


@dataclass(frozen=True)
class ExtrasResult:
    image: Any  # PIL image
    infotext: str
    path: str | None  # where it was saved, or None when saving is off


def upscale(ui: UIContext, image: Any, upscaler: str | None, resize: str, scale: float, width: float | None,
            height: float | None, crop: bool, upscaler_2: str | None, visibility: float,
            gfpgan_visibility: float = 0.0, codeformer_visibility: float = 0.0, codeformer_weight: float = 0.5,
            timeout: float | None = None) -> ExtrasResult:
    """Run one upscale job (and the face restorers with a visibility) and wait for it; ValueError names the
    control that is wrong."""
    if image is None:
        raise ValueError("image: drop an image to upscale")
    restoring = (gfpgan_visibility or 0) > 0 or (codeformer_visibility or 0) > 0
    if (not upscaler or upscaler == NONE) and not restoring:
        raise ValueError("upscaler_1: pick an upscaler (or a face restorer's visibility)")
    by_size = resize == TO_SIZE
    w, h = (int(width or 0), int(height or 0)) if by_size else (0, 0)
    if by_size and (w < 1 or h < 1):
        raise ValueError("upscaling_resize_w: enter the width and height to scale to")
    job = ui.easel.upscale(image, upscaler or NONE, float(scale), w, h, bool(crop), upscaler_2 or NONE,
                           float(visibility or 0.0) if upscaler_2 and upscaler_2 != NONE else 0.0,
                           gfpgan_visibility=float(gfpgan_visibility or 0.0),
                           codeformer_visibility=float(codeformer_visibility or 0.0),
                           codeformer_weight=float(codeformer_weight if codeformer_weight is not None else 0.5))
    if not job.wait(timeout):
        raise job_failed(f"the upscale did not finish within {timeout:.0f} s")
    if job.error:
        raise job_failed(job.error)
    result = job.result
    if result is None or not result.images:
        raise job_failed("the upscale was interrupted")
    path = str(result.paths[0]) if result.paths else None
    return ExtrasResult(result.images[0], result.infotexts[0], path)


def build(ui: UIContext) -> None:
    with gr.Tab("Extras", id="extras", elem_id="tab_extras") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                source = gr.Image(label="Image", type="pil", sources=["upload", "clipboard"], height=320,
                                  elem_id="extras_image")
                ui.extras_image = source
                with gr.Row():
                    upscaler = gr.Dropdown(choices=BUILTIN, value=BUILTIN[0], label="Upscaler",
                                           elem_id="extras_upscaler", scale=3, min_width=160)
                    refresh = gr.Button("\u21BB", elem_id="extras_refresh", elem_classes="easel-tool", scale=0,
                                        min_width=42)
                resize = gr.Radio([BY_SCALE, TO_SIZE], value=BY_SCALE, label="Resize", elem_id="extras_resize")
                scale = gr.Slider(1.0, MAX_SCALE, value=2.0, step=0.25, label="Scale", elem_id="extras_scale")
                with gr.Row():
                    width = gr.Number(value=1024, precision=0, label="Width", elem_id="extras_width", min_width=100)
                    height = gr.Number(value=1024, precision=0, label="Height", elem_id="extras_height",
                                       min_width=100)
                    crop = gr.Checkbox(value=True, label="Crop to fit", elem_id="extras_crop", min_width=100)
                with gr.Accordion("Second upscaler", open=False, elem_id="extras_second"):
                    upscaler_2 = gr.Dropdown(choices=[NONE, *BUILTIN], value=NONE, label="Upscaler 2",
                                             elem_id="extras_upscaler_2")
                    visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Upscaler 2 visibility",
                                           elem_id="extras_visibility")
                with gr.Accordion("Face restoration", open=False, elem_id="extras_faces"):
                    gr.Markdown("GFPGAN and CodeFormer on the faces found (weights in `models/GFPGAN/` and "
                                "`models/Codeformer/`; faces found as the detail fixer finds them), before "
                                "upscaling. 0 = off. Scale 1 with Lanczos only restores faces.", elem_classes="easel-note")
                    gfpgan = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="GFPGAN visibility",
                                       elem_id="extras_gfpgan_visibility")
                    codeformer = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="CodeFormer visibility",
                                           elem_id="extras_codeformer_visibility")
                    codeformer_weight = gr.Slider(0.0, 1.0, value=0.5, step=0.05,
                                                  label="CodeFormer weight (0 = most restored, 1 = least)",
                                                  elem_id="extras_codeformer_weight")
                run = gr.Button("Upscale", variant="primary", elem_id="extras_run")
            with gr.Column(scale=1, min_width=300):
                output = gr.Image(label="Result", type="pil", interactive=False, format="png", height=420,
                                  elem_id="extras_result")
                info = gr.Textbox(label="Parameters", lines=2, interactive=False, elem_id="extras_info")
                saved = gr.Markdown("", elem_id="extras_saved")

    @guard
    def on_upscale(*values: Any) -> tuple[Any, str, str]:
        done = upscale(ui, *values)
        where = f"Saved to `{done.path}`" if done.path else "Not saved (saving is off in the settings)"
        return done.image, done.infotext, where

    def choices(rescan: bool, first: str | None, second: str | None) -> tuple[Any, Any]:
        names = ui.easel.upscaler_choices(rescan)
        return (gr.Dropdown(choices=names, value=first if first in names else names[0]),
                gr.Dropdown(choices=[NONE, *names], value=second if second in names else NONE))

    @guard
    def on_show(first: str | None, second: str | None) -> tuple[Any, Any]:
        return choices(False, first, second)

    @guard
    def on_rescan(first: str | None, second: str | None) -> tuple[Any, Any]:
        return choices(True, first, second)

    run.click(on_upscale, inputs=[source, upscaler, resize, scale, width, height, crop, upscaler_2, visibility,
                                  gfpgan, codeformer, codeformer_weight],
              outputs=[output, info, saved])
    tab.select(on_show, inputs=[upscaler, upscaler_2], outputs=[upscaler, upscaler_2], show_progress="hidden")
    refresh.click(on_rescan, inputs=[upscaler, upscaler_2], outputs=[upscaler, upscaler_2], show_progress="hidden")
