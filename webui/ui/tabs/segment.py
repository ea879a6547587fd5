"""The Segment tab: type what to segment, get a mask, an overlay and a cutout, and pass them on.

The user uploads an image, writes one query per line ("the red circle", "the star on the left") and picks a
model: an edit-capable checkpoint (segmentation as editing: the referent is repainted in the highlight colour
and the mask read off the change) or a text-prompted segmenter (CLIPSeg, SAM 3). Segment builds a
`SegmentRequest` from the controls and runs it through the engine queue like every other job, streaming its
progress. Each query gives an edited image, a mask (white = object, also offered as a PNG download), a cutout
with transparency and a message (an absent referent gives an empty mask and says so); one overlay shows every
query in its own colour. "Send to Inpaint" opens the Inpaint tab with the image and the mask as its mask;
"Send cutout to img2img" sends the cutout over white. The handlers are module functions over plain values, so
tests call them directly.
"""
from __future__ import annotations

import html
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import anyio.to_thread
import gradio as gr
from PIL import Image

from webui.requests import SegmentRequest
from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.controls import Control, ControlSet, build_request, field_control
from webui.ui.generation import load_image, send_updates, status_html
from webui.ui.tab_jobs import follow_job, raise_if_failed, send_targets, wire_interrupt, wire_refresh

REFRESH = "\u21BB"  # ↻
EXAMPLE_QUERIES = "the red circle\nthe star on the left"


@dataclass
class SegmentTab:
    """The Segment tab's components (tests stand hashable placeholders in for them)."""

    controls: ControlSet
    image: Any
    progress: Any
    message: Any
    show: Any  # which query's outputs are shown
    edited: Any
    mask: Any
    overlay: Any
    cutout: Any
    mask_files: Any
    info: Any
    state: Any  # gr.State: {"items": [query outputs], "infotexts": [...], "overlay": image | None}
    job: Any  # gr.State: id of this browser tab's running job
    generative: list[Any] = field(default_factory=list)  # controls only edit-capable models use
    segmenter_only: list[Any] = field(default_factory=list)  # controls only CLIPSeg / SAM 3 use


def empty_state() -> dict[str, Any]:
    return {"items": [], "infotexts": [], "overlay": None}


# Building the request -------------------------------------------------------------------------------
def segment_request(values: dict[str, Any]) -> SegmentRequest:
    """The request from the tab's field values ({field name: UI value}); RequestError names a bad field."""
    values = {**values, "image": load_image(values.get("image"))}
    return build_request(SegmentRequest, values)  # type: ignore[arg-type, return-value]


def model_kind(ui: UIContext, model: str | None) -> str:
    """"segmenter" for CLIPSeg / SAM 3, "edit" for an editing checkpoint, "" when nothing is picked."""
    if not model:
        return ""
    return "segmenter" if ui.easel.manager.find_segmenter(model) is not None else "edit"


def model_updates(ui: UIContext, model: str | None) -> tuple[str, list[Any], list[Any]]:
    """(template, visibility of generative controls, of segmenter controls) for a picked model."""
    kind = model_kind(ui, model)
    template = ui.easel.segment_template(model) if kind == "edit" else ""
    return template, [kind != "segmenter"], [kind == "segmenter"]


# Running and showing results -------------------------------------------------------------------------
def results_state(job: Any) -> dict[str, Any]:
    """What the tab keeps of a finished job: each query's outputs, the infotexts, the overlay."""
    result = job.result
    if result is None:
        return empty_state()
    items = []
    payloads = result.info.get("items") or []
    for index, payload in enumerate(payloads):
        items.append({
            "query": payload["query"], "found": bool(payload["found"]), "message": payload["message"],
            "edited": result.images[index] if index < len(result.images) else None,
            "mask": payload["mask"], "cutout": payload["cutout"],
            "mask_path": _mask_path(result, index, payload),
        })
    overlay = payloads[0].get("overlay") if payloads else None
    return {"items": items, "infotexts": list(result.infotexts), "overlay": overlay}


def _mask_path(result: Any, index: int, payload: dict[str, Any]) -> str:
    """The saved mask PNG beside the output, or a named copy in a temporary folder when outputs are not saved."""
    if index < len(result.paths):
        saved = Path(result.paths[index])
        saved = saved.with_name(saved.stem + "-mask.png")
        if saved.is_file():
            return str(saved)
    slug = re.sub(r"[^a-z0-9]+", "-", payload["query"].lower()).strip("-")[:48] or "query"
    target = Path(tempfile.mkdtemp(prefix="easel-segment-")) / f"{index + 1:02d}-{slug}-mask.png"
    payload["mask"].save(target)
    return str(target)


def message_html(state: dict[str, Any]) -> str:
    """One line per query: found or not, and what the segmentation said."""
    items = state.get("items") or []
    if not items:
        return ""
    lines = []
    for item in items:
        mark, kind = ("\u2714", "found") if item["found"] else ("\u2718", "missing")
        lines.append(f'<div class="easel-segment-{kind}">{mark} <b>{html.escape(item["query"])}</b>: '
                     f'{html.escape(item["message"])}</div>')
    return "".join(lines)


def shown_outputs(state: dict[str, Any], query: str | None) -> tuple[Any, Any, Any, str]:
    """(edited image, mask, cutout, parameters text) of the query picked in "Show" (the first by default)."""
    items = state.get("items") or []
    if not items:
        return None, None, None, ""
    index = next((i for i, item in enumerate(items) if item["query"] == query), 0)
    texts = state.get("infotexts") or []
    item = items[index]
    return item["edited"], item["mask"], item["cutout"], texts[index] if index < len(texts) else ""


def final_updates(tab: SegmentTab, job: Any, state: dict[str, Any]) -> dict[Any, Any]:
    queries = [item["query"] for item in state["items"]]
    edited, mask, cutout, text = shown_outputs(state, None)
    return {
        tab.progress: status_html(job), tab.job: None, tab.state: state, tab.message: message_html(state),
        tab.show: gr.Radio(choices=queries, value=queries[0] if queries else None, visible=len(queries) > 1),
        tab.edited: edited, tab.mask: mask, tab.cutout: cutout, tab.overlay: state["overlay"],
        tab.mask_files: [item["mask_path"] for item in state["items"]] or None, tab.info: text,
    }


async def stream_segmentation(ui: UIContext, tab: SegmentTab,
                              request: SegmentRequest) -> AsyncIterator[dict[Any, Any]]:
    """Queue `request`, yield its queue position and progress, then every output (or raise a gr.Error). Waiting
    for the job holds no thread; the results (masks written as files) are gathered on one."""
    job = await anyio.to_thread.run_sync(lambda: ui.easel.engine.submit(request, source="ui"))
    async for update in follow_job(ui, job, tab.progress, {tab.job: job.id, tab.message: ""}):
        yield update
    state = await anyio.to_thread.run_sync(results_state, job)
    yield final_updates(tab, job, state)
    raise_if_failed(job)


# Sending results on ----------------------------------------------------------------------------------
def picked(state: dict[str, Any], query: str | None) -> dict[str, Any]:
    items = state.get("items") or []
    if not items:
        raise ValueError("there is no segmentation to send yet; press Segment first")
    return next((item for item in items if item["query"] == query), items[0])


def inpaint_updates(ui: UIContext, state: dict[str, Any], query: str | None, source: Any,
                    checkpoint: str | None) -> dict[Any, Any]:
    """Open the Inpaint tab with the source image in its editor and the picked query's mask as its uploaded mask.

    The mask goes to the tab's "Upload a mask instead" box (opened), where it is visible and used as is; the
    editor holds the clean picture (Gradio's editor does not show layers sent from the server)."""
    item = picked(state, query)
    image = load_image(source)
    if image is None:
        raise ValueError("image: the source image is gone; upload it again")
    image = image.convert("RGB")
    mask = item["mask"].convert("L")
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.NEAREST)
    if mask.getbbox() is None:
        raise ValueError(f"the mask of {item['query']!r} is empty; there is nothing to inpaint")
    tab = ui.generation["inpaint"]
    updates = send_updates(ui, "inpaint", "", image, checkpoint)
    if "mask_upload" not in tab.controls:
        raise ValueError("the Inpaint tab takes no uploaded mask; paint the mask there instead")
    upload = tab.controls["mask_upload"]
    updates[upload] = mask
    box = getattr(upload, "parent", None)
    if isinstance(box, gr.Accordion):
        updates[box] = gr.Accordion(open=True)
    return updates


def cutout_on_white(cutout: Image.Image) -> Image.Image:
    background = Image.new("RGBA", cutout.size, (255, 255, 255, 255))
    background.alpha_composite(cutout.convert("RGBA"))
    return background.convert("RGB")


def img2img_updates(ui: UIContext, state: dict[str, Any], query: str | None, checkpoint: str | None
                    ) -> dict[Any, Any]:
    """Open img2img with the picked query's cutout (over white) as its image."""
    item = picked(state, query)
    if not item["found"]:
        raise ValueError(f"nothing was found for {item['query']!r}; there is no cutout to send")
    return send_updates(ui, "img2img", "", cutout_on_white(item["cutout"]), checkpoint)


# Layout -------------------------------------------------------------------------------------------------
def build(ui: UIContext) -> None:
    build_tab(ui)


def build_tab(ui: UIContext) -> SegmentTab:
    easel, limits = ui.easel, ui.limits
    model = easel.default_segment_model() or None
    kind = model_kind(ui, model)
    controls = ControlSet(SegmentRequest)  # type: ignore[arg-type]
    generative: list[Any] = []
    segmenter_only: list[Any] = []

    with gr.Tab("Segment", id="segment", elem_id="tab_segment"):
        with gr.Row(equal_height=False, elem_classes="easel-main-row"):
            with gr.Column(scale=1, min_width=300, elem_classes="easel-settings"):
                image = gr.Image(label="Image", type="pil", image_mode="RGB", sources=["upload", "clipboard"],
                                 height=320, elem_id="segment_image")
                ui.segment_image = image
                controls.add(Control("image", image))
                with gr.Row(equal_height=False):
                    controls.add(field_control(SegmentRequest, "query", limits, lines=3, max_lines=8,  # type: ignore[arg-type]
                                               placeholder=EXAMPLE_QUERIES, scale=4, min_width=200))
                    with gr.Column(scale=1, min_width=110, elem_classes="easel-actions"):
                        run = gr.Button("Segment", variant="primary", elem_id="segment_run", size="lg",
                                        elem_classes="easel-generate")
                        interrupt = gr.Button("Interrupt", size="sm", elem_id="segment_interrupt")
                with gr.Row(elem_classes="easel-seed-row"):
                    picker = gr.Dropdown(choices=easel.segment_model_choices(), value=model, label="Model",
                                         info="edit-capable checkpoints, then CLIPSeg / SAM 3",
                                         elem_id="segment_checkpoint", scale=4, min_width=200)
                    controls.add(Control("checkpoint", picker, to_field=lambda v: "" if v is None else str(v)))
                    refresh = gr.Button(REFRESH, elem_id="segment_refresh_models", elem_classes="easel-tool",
                                        scale=0, min_width=42)
                template = controls.add(field_control(
                    SegmentRequest, "template", limits, lines=2, max_lines=4,  # type: ignore[arg-type]
                    value=easel.segment_template(model) if kind == "edit" else "",
                    info="{query} is each line above, {colour} the highlight colour", visible=kind != "segmenter"))
                generative.append(template)
                controls.add(field_control(SegmentRequest, "highlight", limits))  # type: ignore[arg-type]
                with gr.Row():
                    threshold = controls.add(field_control(SegmentRequest, "threshold", limits,  # type: ignore[arg-type]
                                                           min_width=140, visible=kind != "segmenter"))
                    mask_threshold = controls.add(field_control(SegmentRequest, "mask_threshold", limits,  # type: ignore[arg-type]
                                                                min_width=140, visible=kind == "segmenter"))
                    generative.append(threshold)
                    segmenter_only.append(mask_threshold)
                controls.add(field_control(SegmentRequest, "keep_largest", limits))  # type: ignore[arg-type]
                with gr.Row():
                    steps = controls.add(field_control(SegmentRequest, "steps", limits, min_width=140,  # type: ignore[arg-type]
                                                       visible=kind != "segmenter"))
                    cfg = controls.add(field_control(SegmentRequest, "cfg_scale", limits, min_width=140,  # type: ignore[arg-type]
                                                     visible=kind != "segmenter"))
                    generative += [steps, cfg]
                seed = controls.add(field_control(SegmentRequest, "seed", limits, kind="number",  # type: ignore[arg-type]
                                                  visible=kind != "segmenter"))
                generative.append(seed)

            with gr.Column(scale=1, min_width=300, elem_classes="easel-results"):
                progress = gr.HTML(status_html(None), elem_id="segment_progress", padding=False)
                message = gr.HTML("", elem_id="segment_message", padding=False)
                show = gr.Radio(label="Show", choices=[], visible=False, elem_id="segment_show")
                with gr.Row():
                    edited = gr.Image(label="Edited", type="pil", interactive=False, format="png", height=220,
                                      elem_id="segment_edited")
                    mask = gr.Image(label="Mask (white = object)", type="pil", image_mode="L", interactive=False,
                                    format="png", height=220, elem_id="segment_mask")
                with gr.Row():
                    overlay = gr.Image(label="Overlay (a colour per query)", type="pil", interactive=False,
                                       format="png", height=220, elem_id="segment_overlay")
                    cutout = gr.Image(label="Cutout", type="pil", image_mode="RGBA", interactive=False,
                                      format="png", height=220, elem_id="segment_cutout")
                mask_files = gr.File(label="Mask PNGs", file_count="multiple", interactive=False, height=110,
                                     elem_id="segment_mask_files")
                with gr.Row(elem_classes="easel-send-row"):
                    to_inpaint = gr.Button("Send to Inpaint", size="sm", elem_id="segment_send_to_inpaint")
                    to_img2img = gr.Button("Send cutout to img2img", size="sm", elem_id="segment_send_to_img2img")
                info = gr.Textbox(label="Parameters", lines=2, max_lines=8, interactive=False, buttons=["copy"],
                                  elem_id="segment_info", elem_classes="easel-info")
        state = gr.State(empty_state())
        job = gr.State(None)

    tab = SegmentTab(controls, image, progress, message, show, edited, mask, overlay, cutout, mask_files, info,
                     state, job, generative, segmenter_only)
    outputs = [progress, message, show, edited, mask, overlay, cutout, mask_files, info, state, job]

    @guard
    async def on_segment(by_component: dict) -> AsyncIterator[dict]:
        request = segment_request(controls.field_values(by_component))
        async for update in stream_segmentation(ui, tab, request):
            yield update

    run.click(on_segment, inputs=controls.components(), outputs=outputs, concurrency_limit=None,
              show_progress="hidden")

    wire_interrupt(ui, interrupt, job)

    @guard
    def on_show(current: dict, query: str | None) -> tuple[Any, Any, Any, str]:
        return shown_outputs(current, query)

    show.change(on_show, inputs=[state, show], outputs=[edited, mask, cutout, info], show_progress="hidden")

    @guard
    def on_model(picked_model: str | None) -> list[Any]:
        text, on_generative, on_segmenter = model_updates(ui, picked_model)
        updates: list[Any] = [gr.Textbox(value=text, visible=on_generative[0])]
        updates += [gr.update(visible=on_generative[0]) for _ in generative[1:]]
        updates += [gr.update(visible=on_segmenter[0]) for _ in segmenter_only]
        return updates

    picker.change(on_model, inputs=picker, outputs=[*generative, *segmenter_only], show_progress="hidden")

    wire_refresh(ui, refresh, picker, easel.segment_model_choices, easel.default_segment_model)

    def wire_send() -> None:
        for button, target in ((to_inpaint, "inpaint"), (to_img2img, "img2img")):
            if target not in ui.generation:
                button.visible = False
                continue
            other = ui.generation[target]
            targets = send_targets(ui, other)
            if "mask_upload" in other.controls and isinstance(other.controls["mask_upload"].parent, gr.Accordion):
                targets.append(other.controls["mask_upload"].parent)
            targets = list(dict.fromkeys(targets))
            if target == "inpaint":
                @guard
                def send_inpaint(current: dict, query: str | None, source: Any, checkpoint: str | None) -> dict:
                    return inpaint_updates(ui, current, query, source, checkpoint)

                button.click(send_inpaint, inputs=[state, show, image, ui.checkpoint], outputs=targets,
                             show_progress="hidden")
            else:
                @guard
                def send_img2img(current: dict, query: str | None, checkpoint: str | None) -> dict:
                    return img2img_updates(ui, current, query, checkpoint)

                button.click(send_img2img, inputs=[state, show, ui.checkpoint], outputs=targets,
                             show_progress="hidden")

    ui.after_build(wire_send)
    return tab
