"""The Edit tab: an image and an instruction in ("make the red circle blue"), the edited image out.

The image sits in an editor: strokes painted on it are the optional mask (the edit is kept inside them; every
pixel outside is the input's). Edit builds an `EditRequest` from the controls and runs it through the engine
queue like every other job, streaming its progress. The result shows in a before/after slider and becomes the
editor's image, so the next instruction edits the result; the history lists each step, and Undo goes back one
step (the slider and the editor return to what they were). The result can be sent to img2img, Inpaint or
Segment. Further reference images (up to two) go to models that take several (Qwen-Image-Edit Plus). The
handlers are module functions over plain values, so tests call them directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator

import anyio.to_thread
import gradio as gr
from PIL import Image

from webui.requests import EditRequest
from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.controls import Control, ControlSet, build_request, field_control
from webui.ui.generation import load_image, send_updates, status_html
from webui.ui.masks import layers_mask
from webui.ui.tab_jobs import follow_job, raise_if_failed, send_targets, wire_interrupt, wire_refresh

REFRESH = "\u21BB"  # ↻
BRUSH_COLOR = "#ffffff"
MAX_HISTORY = 20  # steps kept for Undo (each holds two images)


@dataclass
class EditTab:
    """The Edit tab's components (tests stand hashable placeholders in for them)."""

    controls: ControlSet
    editor: Any  # gr.ImageEditor: the image, and strokes = the mask
    progress: Any
    slider: Any  # gr.ImageSlider: (before, after)
    info: Any
    gallery: Any  # the history's results, oldest first
    history: Any  # gr.State: list of steps {"source", "result", "instruction", "infotext"}
    job: Any  # gr.State: id of this browser tab's running job


# Building the request -------------------------------------------------------------------------------
def editor_parts(value: Any) -> tuple[Image.Image | None, Image.Image | None]:
    """(image, mask) from the editor's value: the background as RGB, and white wherever a stroke was painted
    (None when nothing was painted, or when there is no image)."""
    if value is None:
        return None, None
    if isinstance(value, dict):
        background = load_image(value.get("background"))
        if background is None:
            background = load_image(value.get("composite"))
        if background is None:
            return None, None
        image = background.convert("RGB")
        return image, layers_mask(value.get("layers") or [], image.size)
    image = load_image(value)
    return (image.convert("RGB") if image is not None else None), None


def edit_request(values: dict[str, Any]) -> EditRequest:
    """The request from the tab's field values ({name: UI value}: `editor`, `reference_1`, `reference_2` and the
    request's own fields); RequestError names a bad field."""
    values = dict(values)
    image, mask = editor_parts(values.pop("editor", None))
    references = tuple(load_image(values.pop(name, None)) for name in ("reference_1", "reference_2"))
    fields = {**values, "image": image, "mask": mask,
              "references": tuple(r.convert("RGB") for r in references if r is not None)}
    return build_request(EditRequest, fields)  # type: ignore[arg-type, return-value]


def editor_value(image: Image.Image | None) -> dict[str, Any] | None:
    """An editor value holding `image` with no strokes."""
    if image is None:
        return None
    return {"background": image, "layers": [], "composite": image}


# Running and the history -----------------------------------------------------------------------------
def step_of(job: Any, source: Image.Image) -> dict[str, Any] | None:
    """The history step a finished job makes (None when it made no image)."""
    result = job.result
    if result is None or not result.images:
        return None
    payload = (result.info.get("items") or [{}])[0]
    return {"source": source, "result": result.images[0], "instruction": payload.get("instruction", ""),
            "infotext": result.infotexts[0] if result.infotexts else ""}


def gallery_items(history: list[dict[str, Any]]) -> list[tuple[Image.Image, str]]:
    return [(step["result"], f"{i + 1}. {step['instruction']}") for i, step in enumerate(history)]


def shown(tab: EditTab, history: list[dict[str, Any]]) -> dict[Any, Any]:
    """The slider, parameters and gallery for the last step (empty when there is none)."""
    last = history[-1] if history else None
    return {tab.slider: (last["source"], last["result"]) if last else None,
            tab.info: last["infotext"] if last else "", tab.gallery: gallery_items(history), tab.history: history}


async def stream_edit(ui: UIContext, tab: EditTab, request: EditRequest,
                      history: list[dict[str, Any]]) -> AsyncIterator[dict[Any, Any]]:
    """Queue `request`, yield its queue position and progress, then the result: a new history step, the slider,
    and the result as the editor's image (so the next edit starts from it); or raise a gr.Error."""
    job = await anyio.to_thread.run_sync(lambda: ui.easel.engine.submit(request, source="ui"))
    async for update in follow_job(ui, job, tab.progress, {tab.job: job.id}):
        yield update
    step = step_of(job, request.image) if request.image is not None else None
    updates: dict[Any, Any] = {tab.progress: status_html(job), tab.job: None}
    if step is not None:
        history = [*history, step][-MAX_HISTORY:]
        updates |= shown(tab, history)
        updates[tab.editor] = editor_value(step["result"])
    yield updates
    raise_if_failed(job)


def undo_updates(tab: EditTab, history: list[dict[str, Any]]) -> dict[Any, Any]:
    """Go back one step: the editor gets that step's input again, the slider shows the step before."""
    if not history:
        raise ValueError("there is no edit to undo")
    history = list(history)
    step = history.pop()
    return {**shown(tab, history), tab.editor: editor_value(step["source"])}


def last_result(history: list[dict[str, Any]]) -> Image.Image:
    if not history:
        raise ValueError("there is no edited image to send yet; press Edit first")
    return history[-1]["result"]


def segment_updates(ui: UIContext, history: list[dict[str, Any]]) -> dict[Any, Any]:
    """"Send to Segment": the last result becomes the Segment tab's image, and that tab opens."""
    return {ui.tabs: gr.Tabs(selected="segment"), ui.segment_image: last_result(history)}


# Layout -------------------------------------------------------------------------------------------------
def build(ui: UIContext) -> None:
    build_tab(ui)


def build_tab(ui: UIContext) -> EditTab:
    easel, limits = ui.easel, ui.limits
    controls = ControlSet(EditRequest)  # type: ignore[arg-type]

    with gr.Tab("Edit", id="edit", elem_id="tab_edit"):
        with gr.Row(equal_height=False, elem_classes="easel-main-row"):
            with gr.Column(scale=1, min_width=300, elem_classes="easel-settings"):
                editor = gr.ImageEditor(
                    label="Image (optional: paint where the edit may change it)", type="pil", image_mode="RGBA",
                    sources=["upload", "clipboard"], height=360, elem_id="edit_editor", layers=False,
                    transforms=(), brush=gr.Brush(colors=[BRUSH_COLOR], default_color=BRUSH_COLOR,
                                                  color_mode="fixed"),
                    eraser=gr.Eraser(), format="png")
                controls.add(Control("editor", editor))
                with gr.Row(equal_height=False):
                    controls.add(field_control(EditRequest, "instruction", limits, lines=2, max_lines=6,  # type: ignore[arg-type]
                                               placeholder="make the red circle blue", scale=4, min_width=200))
                    with gr.Column(scale=1, min_width=110, elem_classes="easel-actions"):
                        run = gr.Button("Edit", variant="primary", elem_id="edit_run", size="lg",
                                        elem_classes="easel-generate")
                        interrupt = gr.Button("Interrupt", size="sm", elem_id="edit_interrupt")
                with gr.Row(elem_classes="easel-seed-row"):
                    picker = gr.Dropdown(choices=easel.edit_model_choices(), value=easel.default_edit_model() or None,
                                         label="Model", info="edit-capable checkpoints", elem_id="edit_checkpoint",
                                         scale=4, min_width=200)
                    controls.add(Control("checkpoint", picker, to_field=lambda v: "" if v is None else str(v)))
                    refresh = gr.Button(REFRESH, elem_id="edit_refresh_models", elem_classes="easel-tool",
                                        scale=0, min_width=42)
                with gr.Row():
                    controls.add(field_control(EditRequest, "steps", limits, min_width=140))  # type: ignore[arg-type]
                    controls.add(field_control(EditRequest, "guidance", limits, min_width=140))  # type: ignore[arg-type]
                with gr.Row():
                    controls.add(field_control(EditRequest, "image_guidance", limits, min_width=140))  # type: ignore[arg-type]
                    controls.add(field_control(EditRequest, "seed", limits, kind="number", min_width=140))  # type: ignore[arg-type]
                with gr.Accordion("Reference images (Qwen-Image-Edit Plus)", open=False, elem_id="edit_references"):
                    with gr.Row():
                        for index in (1, 2):
                            controls.add(Control(f"reference_{index}", gr.Image(
                                label=f"Image {index + 1}", type="pil", image_mode="RGB", height=140,
                                sources=["upload", "clipboard"], elem_id=f"edit_reference_{index}")))

            with gr.Column(scale=1, min_width=300, elem_classes="easel-results"):
                progress = gr.HTML(status_html(None), elem_id="edit_progress", padding=False)
                slider = gr.ImageSlider(label="Before / after", type="pil", format="png", interactive=False,
                                        max_height=360, elem_id="edit_slider")
                with gr.Row(elem_classes="easel-send-row"):
                    undo = gr.Button("Undo", size="sm", elem_id="edit_undo")
                    to_img2img = gr.Button("Send to img2img", size="sm", elem_id="edit_send_to_img2img")
                    to_inpaint = gr.Button("Send to Inpaint", size="sm", elem_id="edit_send_to_inpaint")
                    to_segment = gr.Button("Send to Segment", size="sm", elem_id="edit_send_to_segment")
                gallery = gr.Gallery(label="History (each edit starts from the one before)", columns=6, height=190,
                                     object_fit="contain", interactive=False, preview=False, allow_preview=False,
                                     format="png", elem_id="edit_history")
                info = gr.Textbox(label="Parameters", lines=2, max_lines=8, interactive=False, buttons=["copy"],
                                  elem_id="edit_info", elem_classes="easel-info")
        history = gr.State([])
        job = gr.State(None)

    tab = EditTab(controls, editor, progress, slider, info, gallery, history, job)
    outputs = [progress, slider, info, gallery, history, job, editor]

    @guard
    async def on_edit(by_component: dict) -> AsyncIterator[dict]:
        request = edit_request(controls.field_values(by_component))
        async for update in stream_edit(ui, tab, request, by_component.get(history) or []):
            yield update

    run.click(on_edit, inputs={*controls.components(), history}, outputs=outputs, concurrency_limit=None,
              show_progress="hidden")

    wire_interrupt(ui, interrupt, job)

    @guard
    def on_undo(current: list) -> dict:
        return undo_updates(tab, current)

    undo.click(on_undo, inputs=history, outputs=[slider, info, gallery, history, editor], show_progress="hidden")

    wire_refresh(ui, refresh, picker, easel.edit_model_choices, easel.default_edit_model)

    def sender(target: str) -> Any:
        @guard
        def send(current: list, checkpoint: str | None) -> dict:
            return send_updates(ui, target, "", last_result(current), checkpoint)

        return send

    def wire_send() -> None:
        for button, target in ((to_img2img, "img2img"), (to_inpaint, "inpaint")):
            if target not in ui.generation:
                button.visible = False
                continue
            targets = list(dict.fromkeys(t for t in send_targets(ui, ui.generation[target]) if t is not None))

            button.click(sender(target), inputs=[history, ui.checkpoint], outputs=targets, show_progress="hidden")
        if ui.segment_image is None:
            to_segment.visible = False
        else:
            @guard
            def send_segment(current: list) -> dict:
                return segment_updates(ui, current)

            to_segment.click(send_segment, inputs=history, outputs=[ui.tabs, ui.segment_image],
                             show_progress="hidden")

    ui.after_build(wire_send)
    return tab
