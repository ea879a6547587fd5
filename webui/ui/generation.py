"""The generation panel shared by txt2img, img2img and Inpaint, and the handler that streams a job.

`build_panel` lays out one tab: prompt and buttons on top, generation controls on the left (with slots for
the tab's own inputs and options), results on the right (progress bar, live preview, gallery, parameters
text, "Send to" buttons). Its Generate handler builds the typed request from the tab's `ControlSet`, submits
it to the engine and streams the job: an async generator, it awaits `Job.wait_for_update_async` (no thread is
held while the job waits or runs, however many tabs are waiting) and yields the queue position, progress and
preview as they change, then the saved images and their infotext.

`send_updates` fills a generation tab from a parameters text (and an image): it is what "Send to" does from
a gallery and from PNG Info.
"""
from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import anyio.to_thread
import gradio as gr
from PIL import Image

from webui.requests import GenerationRequest
from webui.ui.bridge import guard, job_failed
from webui.ui.context import GenerationTab, UIContext
from webui.ui.controls import ControlSet, build_request, field_control, infotext_values
from webui.ui.detail import build_detail_accordion, detail_updates
from webui.ui.regional import build_regional_accordion
from webui.ui.lora_picker import build_lora_picker
from webui.ui.scripts import build_script_picker
from webui.ui.styles import (StyleWidgets, build_style_buttons, build_style_editor, missing_styles, styles_control,
                             wire_styles)
from webui.ui.seed_extra import build_seed_extra

log = logging.getLogger(__name__)

DICE = "\u2684"  # ⚄ (a die face; renders without an emoji font)
RECYCLE = "\u267B"  # ♻
SEND_TARGETS = {"img2img": "Send to img2img", "inpaint": "Send to inpaint"}

Slot = Callable[[ControlSet], None]
Finalize = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class PanelOutputs:
    progress: Any
    preview: Any
    gallery: Any
    info: Any
    result: Any  # gr.State: {"images": [...], "infotexts": [...], "seeds": [...], "selected": int}
    job: Any  # gr.State: id of this browser tab's current job


def empty_result() -> dict[str, Any]:
    return {"images": [], "infotexts": [], "seeds": [], "selected": 0}


# Status line ---------------------------------------------------------------------------------------
def _state(job: Any) -> str:
    return str(getattr(job.state, "value", job.state))


def status_text(job: Any, position: int) -> str:
    state = _state(job)
    if state == "queued":
        return f"Waiting in queue: position {position}" if position else "Starting…"
    if state == "running":
        if not job.total_steps:
            return getattr(job, "stage", "") or "Loading the model…"
        text = f"Step {min(job.step, job.total_steps)}/{job.total_steps}"
        if job.batch_total > 1:
            text += f" · batch {job.batch_index + 1}/{job.batch_total}"
        if getattr(job, "stage", ""):  # the detail fixer's pass, ...
            text += f" · {job.stage}"
        return text + f" · {job.progress:.0%}"
    elapsed = (job.finished or time.time()) - (job.started or job.created)
    count = len(job.result.images) if job.result else 0
    if state == "done":
        return f"Done: {count} image{'s' if count != 1 else ''} in {elapsed:.1f} s"
    if state == "interrupted":
        return f"Interrupted at step {job.step}/{job.total_steps or '?'} ({count} image{'s' if count != 1 else ''} kept)"
    return f"Failed: {job.error or 'unknown error'}"


def status_html(job: Any | None, position: int = 0) -> str:
    if job is None:
        return '<div class="easel-progress idle"><span>Ready</span></div>'
    state = _state(job)
    percent = 100.0 if state == "done" else job.progress * 100
    return (f'<div class="easel-progress {state}" role="progressbar" aria-valuenow="{percent:.0f}" '
            f'aria-valuemin="0" aria-valuemax="100"><div class="easel-bar" style="width:{percent:.1f}%"></div>'
            f'<span>{html.escape(status_text(job, position))}</span></div>')


def understanding_note(infotexts: list[str]) -> str:
    """A short note for under the result naming the words the model did not understand (its infotext's "Words not
    understood", written by models that report them), or "" when there are none."""
    from webui.infotext import parse_infotext

    words: list[str] = []
    for text in infotexts:
        words += parse_infotext(text).get("Words not understood", "").split()
    words = list(dict.fromkeys(words))
    if not words:
        return ""
    return (f'<div class="easel-note" role="note">The model did not understand: {html.escape(", ".join(words))} '
            "(these words changed nothing in the image).</div>")


# Layout --------------------------------------------------------------------------------------------
def build_panel(ui: UIContext, mode: str, request_cls: type[GenerationRequest], *, source: Slot | None = None,
                options: Slot | None = None, finalize: Finalize | None = None) -> tuple[GenerationTab, PanelOutputs]:
    """Lay out a generation tab's controls and outputs and wire Generate / Interrupt / Skip / seed buttons.

    `source` adds the tab's own inputs (an image, an editor) at the top of the left column, `options` its own
    settings at the bottom; `finalize` turns helper controls into request fields before the request is built.
    """
    easel, limits = ui.easel, ui.limits
    checkpoint = easel.default_checkpoint()
    own = easel.model_defaults(checkpoint)  # size, steps, CFG, distilled guidance the model runs at
    hidden = easel.hidden_fields(checkpoint)  # controls the model's family does not use: hidden, not sent
    family_panels: dict[str, Any] = {}
    controls = ControlSet(request_cls)
    controls.add(_shared(ui.checkpoint, "checkpoint"))
    controls.add(_shared(ui.vae, "vae"))

    with gr.Row(elem_classes="easel-prompt-row", equal_height=False):
        with gr.Column(scale=5, min_width=260):
            prompt = controls.add(field_control(request_cls, "prompt", limits, lines=3, max_lines=12,
                                                show_label=False, placeholder="Prompt (Ctrl+Enter to generate)",
                                                elem_classes="easel-prompt"))
            negative_prompt = controls.add(field_control(request_cls, "negative_prompt", limits, lines=1, max_lines=8,
                                                         show_label=False, placeholder="Negative prompt",
                                                         elem_classes="easel-prompt",
                                                         visible="negative_prompt" not in hidden))
        with gr.Column(scale=1, min_width=150, elem_classes="easel-actions"):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{mode}_generate", size="lg",
                                 elem_classes="easel-generate")
            with gr.Row(elem_classes="easel-stop-row"):
                interrupt = gr.Button("Interrupt", size="sm", elem_id=f"{mode}_interrupt", min_width=60)
                skip = gr.Button("Skip", size="sm", elem_id=f"{mode}_skip", min_width=60)
            styles = controls.add(styles_control(ui, mode))  # prompt styles: the selection, apply, refresh
            style_apply, style_refresh = build_style_buttons(mode)

    with gr.Row(equal_height=False, elem_classes="easel-main-row"):
        with gr.Column(scale=1, min_width=300, elem_classes="easel-settings"):
            if source is not None:
                source(controls)
            with gr.Row():
                controls.add(field_control(request_cls, "sampler", limits, kind="dropdown",
                                           choices=easel.sampler_choices(checkpoint),
                                           value=easel.default_sampler(checkpoint), min_width=140,
                                           visible="sampler" not in hidden))
                controls.add(field_control(request_cls, "scheduler", limits, kind="dropdown", min_width=140,
                                           visible="scheduler" not in hidden))
                controls.add(field_control(request_cls, "steps", limits, value=own.steps, min_width=140,
                                           visible="steps" not in hidden))
            with gr.Row():
                controls.add(field_control(request_cls, "width", limits, value=own.width, min_width=140))
                controls.add(field_control(request_cls, "height", limits, value=own.height, min_width=140))
            with gr.Row():
                controls.add(field_control(request_cls, "batch_count", limits, min_width=140))
                controls.add(field_control(request_cls, "batch_size", limits, min_width=140))
            with gr.Row():
                controls.add(field_control(request_cls, "cfg_scale", limits, value=own.cfg_scale, min_width=140,
                                           visible="cfg_scale" not in hidden))
                controls.add(field_control(request_cls, "distilled_cfg_scale", limits, min_width=140,
                                           value=own.distilled_cfg_scale,
                                           visible=own.distilled_cfg_scale is not None))
                controls.add(field_control(request_cls, "clip_skip", limits, min_width=140,
                                           visible="clip_skip" not in hidden))
            with gr.Row():
                controls.add(field_control(request_cls, "tiling", limits, visible="tiling" not in hidden))
                if mode in ("txt2img", "img2img", "inpaint"):  # GFPGAN / CodeFormer as Settings picks (face_restoration_model)
                    controls.add(field_control(request_cls, "restore_faces", limits))
            if mode in ("txt2img", "img2img", "inpaint"):  # denoise in overlapping latent tiles (webui.engine.tiling)
                with gr.Accordion("Tiled Diffusion", open=False, elem_id=f"{mode}_tiled_diffusion",
                                  visible="tiled_diffusion" not in hidden) as tiled_panel:
                    family_panels["tiled_diffusion"] = tiled_panel
                    controls.add(field_control(request_cls, "tiled_diffusion", limits))
                    with gr.Row():
                        for name in ("tiled_diffusion_tile_width", "tiled_diffusion_tile_height",
                                     "tiled_diffusion_overlap"):
                            controls.add(field_control(request_cls, name, limits, min_width=120))
            # fields only some families use (Stable unCLIP's noise level, DeepFloyd IF's stage steps, StyleGAN's ψ and
            # class)
            family_fields = {"img2img": ("noise_level",), "inpaint": ("noise_level",),
                             "txt2img": ("stage2_steps", "stage3_steps", "truncation_psi", "class_label")}
            with gr.Row():
                for name in family_fields.get(mode, ()):
                    controls.add(field_control(request_cls, name, limits, min_width=140, visible=name not in hidden))
            with gr.Row(elem_classes="easel-seed-row"):
                seed = controls.add(field_control(request_cls, "seed", limits, kind="number", min_width=120, scale=4))
                dice = gr.Button(DICE, elem_id=f"{mode}_random_seed", elem_classes="easel-tool", scale=0,
                                 min_width=40)
                recycle = gr.Button(RECYCLE, elem_id=f"{mode}_reuse_seed", elem_classes="easel-tool", scale=0,
                                    min_width=40)
            # variation seeds and seed resize: txt2img builds its starting noise (webui.engine.noise)
            seed_extra = build_seed_extra(controls, request_cls, limits, mode) if mode == "txt2img" else {}
            if options is not None:
                options(controls)
            if mode in ("txt2img", "img2img", "inpaint"):
                build_lora_picker(ui, mode, prompt)
            style_editor = build_style_editor(ui, mode)
            extension_inputs = build_extension_accordions(ui, mode)
            detail_components: dict[str, Any] = {}
            if mode in ("txt2img", "img2img"):  # the built-in detail fixer feeds requests as accordions do
                detail_inputs, detail_components = build_detail_accordion(mode)
                extension_inputs = [*detail_inputs, *extension_inputs]
            if mode in ("txt2img", "img2img", "inpaint"):  # regional prompts feed requests as accordions do
                extension_inputs = [*build_regional_accordion(mode), *extension_inputs]
            scripts = build_script_picker(ui, mode) if mode in ("txt2img", "img2img") else None

        with gr.Column(scale=1, min_width=300, elem_classes="easel-results"):
            progress = gr.HTML(status_html(None), elem_id=f"{mode}_progress", padding=False)
            preview = gr.Image(label="Preview", type="pil", interactive=False, visible=False, height=256,
                               elem_id=f"{mode}_preview", elem_classes="easel-preview", buttons=[])
            gallery = gr.Gallery(label="Output", columns=2, height=420, format="png", object_fit="contain",
                                 elem_id=f"{mode}_gallery", elem_classes="easel-gallery", interactive=False,
                                 preview=False)
            with gr.Row(elem_classes="easel-send-row"):
                send_buttons = {target: gr.Button(label, size="sm", elem_id=f"{mode}_send_to_{target}")
                                for target, label in SEND_TARGETS.items()}
                to_segment = gr.Button("Send to Segment", size="sm", elem_id=f"{mode}_send_to_segment")
            info = gr.Textbox(label="Parameters", lines=3, max_lines=12, interactive=False, buttons=["copy"],
                              elem_id=f"{mode}_info", elem_classes="easel-info")
    result = gr.State(empty_result())
    job_id = gr.State(None)
    outputs = PanelOutputs(progress, preview, gallery, info, result, job_id)
    tab = GenerationTab(mode, request_cls, controls, detail=detail_components, family_panels=family_panels)
    tab.styles = StyleWidgets(mode, styles, style_apply, style_refresh, *style_editor)
    wire_styles(ui, tab.styles, prompt, negative_prompt)
    tab.reveal.update(seed_extra)

    def submit_request(by_component: dict) -> Any:
        values = controls.field_values(by_component)
        hidden_now = easel.hidden_fields(values.get("checkpoint") or None)
        for name in hidden_now:  # hidden controls are not sent
            values.pop(name, None)
        if "sampler" in hidden_now:  # a model without samplers (StyleGAN): its own "Default", as the API's default
            values["sampler"] = easel.default_sampler(values.get("checkpoint") or None)
        if finalize is not None:
            values = finalize(values)
        request = build_request(request_cls, values)
        if extension_inputs:
            raw = {name: inputs.to_args(*[by_component.get(c) for c in inputs.components])
                   for name, inputs in extension_inputs}
            request = request.replace(extension_args=easel.registry.parse_request_args(raw))
        chosen = scripts.chosen(by_component) if scripts is not None else None
        if chosen is not None:  # a script: its many generations as one job (grids first in the gallery)
            return easel.engine.submit(easel.script_job(chosen[0], request, chosen[1]), source="ui")
        return easel.engine.submit(request, source="ui")

    # Generate: an async generator that streams the job's progress. Building the request (images, masks) runs
    # on a thread for its own duration; waiting for the job holds none.
    @guard
    async def on_generate(by_component: dict) -> AsyncIterator[dict]:
        job = await anyio.to_thread.run_sync(submit_request, by_component)
        async for update in stream_job(ui, job, outputs):
            yield update

    extension_components = {c for _, inputs in extension_inputs for c in inputs.components}
    if scripts is not None:
        extension_components |= scripts.components()
    generate.click(on_generate, inputs=controls.components() | extension_components,
                   outputs=[progress, preview, gallery, info, result, job_id],
                   concurrency_limit=None, show_progress="hidden")

    @guard
    def on_interrupt(current: str | None) -> None:
        easel.engine.worker.interrupt(current or None)

    @guard
    def on_skip(current: str | None) -> None:
        easel.engine.worker.skip(current or None)  # the job this page runs (with replicas, one of several)

    interrupt.click(on_interrupt, inputs=job_id, outputs=None, concurrency_limit=None, show_progress="hidden")
    skip.click(on_skip, inputs=job_id, outputs=None, concurrency_limit=None, show_progress="hidden")

    dice.click(lambda: -1, inputs=None, outputs=seed, show_progress="hidden")

    @guard
    def reuse_seed(state: dict, current: Any) -> Any:
        seeds = state.get("seeds") or []
        index = state.get("selected", 0)
        return seeds[index] if 0 <= index < len(seeds) else current

    recycle.click(reuse_seed, inputs=[result, seed], outputs=seed, show_progress="hidden")

    @guard
    def on_select(state: dict, evt: gr.SelectData) -> tuple[dict, str]:
        index = evt.index if isinstance(evt.index, int) else 0
        state = {**state, "selected": index}
        texts = state.get("infotexts") or []
        return state, texts[index] if 0 <= index < len(texts) else ""

    gallery.select(on_select, inputs=result, outputs=[result, info], show_progress="hidden")

    def wire_send_buttons() -> None:
        for target, button in send_buttons.items():
            if target in ui.generation:
                wire_send(ui, button, target, [result], result_picker)
            else:
                button.visible = False
        if ui.segment_image is not None:
            @guard
            def send_to_segment(state: dict) -> dict[Any, Any]:
                return segment_updates(ui, state)

            to_segment.click(send_to_segment, inputs=[result], outputs=[ui.tabs, ui.segment_image],
                             show_progress="hidden")
        else:
            to_segment.visible = False

    ui.after_build(wire_send_buttons)
    return tab, outputs


def build_extension_accordions(ui: UIContext, mode: str) -> list[tuple[str, Any]]:
    """Accordions extensions added to this mode's tab; one that fails is logged and shows its error.

    Returns (extension name, `ExtensionInputs`) for each accordion whose controls feed generation requests.
    """
    feeding: list[tuple[str, Any]] = []
    for contribution in ui.easel.registry.accordions:
        if contribution.mode != mode:
            continue
        with gr.Accordion(contribution.title, open=False):
            try:
                inputs = contribution.build()
                if inputs is not None and getattr(inputs, "components", None):
                    feeding.append((contribution.extension, inputs))
            except Exception as exc:  # noqa: BLE001 - one broken extension must not stop the UI
                log.exception("extension %s: its accordion %r failed to build", contribution.extension,
                              contribution.title)
                gr.Markdown(f"The extension **{contribution.extension}** failed to build this: "
                            f"`{type(exc).__name__}: {exc}`")
    return feeding


def _shared(component: Any, name: str) -> Any:
    from webui.ui.controls import Control

    return Control(name, component, to_field=lambda v: "" if v is None else str(v))


# Streaming a job -----------------------------------------------------------------------------------
async def stream_job(ui: UIContext, job: Any, out: PanelOutputs) -> AsyncIterator[dict]:
    """Yield UI updates while `job` waits and runs; end with its images and infotext. The queue position is
    looked at every half second (other jobs move it); the job's own changes wake the stream at once."""
    worker = ui.easel.engine.worker
    yield {out.job: job.id, out.preview: gr.Image(value=None, visible=False),
           out.progress: status_html(job, worker.position(job))}
    version = -1
    last_status = ""
    last_preview = None
    while True:
        done = job.finished_state
        updates: dict[Any, Any] = {}
        status = status_html(job, worker.position(job))
        if status != last_status:
            updates[out.progress] = status
            last_status = status
        preview = job.preview
        if preview is not None and preview is not last_preview and not done:
            updates[out.preview] = gr.Image(value=preview, visible=True)
            last_preview = preview
        if updates and not done:
            yield updates
        if done:
            break
        version = await job.wait_for_update_async(version, timeout=0.5)

    result = job.result
    images = list(result.images) if result else []
    paths = [str(p) for p in result.paths] if result else []
    shown: list[Any] = paths if paths and len(paths) == len(images) else images
    state = {"images": shown, "infotexts": list(result.infotexts) if result else [],
             "seeds": list(result.seeds) if result else [], "selected": 0}
    final = {out.progress: status_html(job) + understanding_note(state["infotexts"]),
             out.preview: gr.Image(value=None, visible=False), out.job: None}
    if images or _state(job) == "done":
        final.update({out.gallery: shown, out.result: state,
                      out.info: state["infotexts"][0] if state["infotexts"] else ""})
    yield final
    if _state(job) == "failed":
        raise job_failed(job.error)


# Sending images and parameters between tabs --------------------------------------------------------
def result_picker(state: dict) -> tuple[Any, str]:
    """(image, infotext) of a gallery's selected result, from its result state."""
    images, texts = state.get("images") or [], state.get("infotexts") or []
    if not images:
        raise ValueError("there is no image to send yet; generate one first")
    index = state.get("selected", 0)
    index = index if 0 <= index < len(images) else 0
    return images[index], texts[index] if index < len(texts) else ""


def segment_updates(ui: UIContext, state: dict) -> dict[Any, Any]:
    """"Send to Segment": the selected result becomes the Segment tab's image, and that tab opens."""
    image, _ = result_picker(state)
    return {ui.tabs: gr.Tabs(selected="segment"), ui.segment_image: load_image(image)}


def load_image(value: Any) -> Image.Image | None:
    """A PIL image from a path or an image (None stays None)."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    with Image.open(value) as image:
        image.load()
        return image.copy()


def wire_send(ui: UIContext, button: Any, target: str, inputs: list[Any],
              pick: Callable[..., tuple[Any, str]]) -> None:
    """Make `button` send an image and its parameters to the generation tab `target`.

    `pick` receives the values of `inputs` and returns (image or path or None, parameters text).
    """
    tab = ui.generation[target]
    outputs = [ui.tabs, ui.checkpoint, ui.sized_for, *tab.controls.components(), *tab.reveal.values(),
               *tab.detail.values()]
    if tab.image_input is not None:
        outputs.append(tab.image_input)
    outputs = list(dict.fromkeys(outputs))

    @guard
    def send(*values: Any) -> dict:
        *picked, checkpoint = values
        image, text = pick(*picked)
        return send_updates(ui, target, text, load_image(image), checkpoint)

    button.click(send, inputs=[*inputs, ui.checkpoint], outputs=outputs, show_progress="hidden")


def send_updates(ui: UIContext, target: str, text: str, image: Image.Image | None,
                 checkpoint: str | None) -> dict[Any, Any]:
    """Component updates that fill generation tab `target` from a parameters text and an image."""
    easel = ui.easel
    tab = ui.generation[target]
    values = infotext_values(text, tab.request_cls, easel.styles.styles())
    notes: list[str] = [f"style {name!r} is not in the style files here; it was left out"
                        for name in missing_styles(ui, values.get("styles", ()))]
    updates: dict[Any, Any] = {ui.tabs: gr.Tabs(selected=target)}

    wanted = values.pop("checkpoint", None)
    values.pop("vae", None)
    if wanted:
        match = _find_checkpoint(wanted, easel.checkpoint_choices())
        if match:
            checkpoint = match
            updates[ui.checkpoint] = match
            updates[ui.sized_for] = match
        else:
            notes.append(f"model {wanted!r} is not installed; keeping {checkpoint or 'the current model'}")
    samplers = easel.sampler_choices(checkpoint)
    sampler = values.pop("sampler", None)
    if sampler is not None and sampler not in samplers:
        notes.append(f"sampler {sampler!r} is not available for this model")
        sampler = None
    if sampler is not None or "sampler" in tab.controls:
        updates[tab.controls["sampler"]] = gr.Dropdown(
            choices=samplers, value=sampler if sampler else easel.default_sampler(checkpoint))

    if image is not None and tab.image_input is not None and tab.receive_image is not None:
        updates[tab.image_input] = tab.receive_image(image)
        if "width" not in values:
            values["width"], values["height"] = snap_size(image.size, ui.limits.max_side)
    updates.update(tab.controls.ui_updates(values))
    updates.update(detail_updates(tab.detail, text))  # the detail fixer's first pass, as the image records it
    for name, accordion in tab.reveal.items():
        if values.get(name):
            updates[accordion] = True if isinstance(accordion, gr.Checkbox) else gr.Accordion(open=True)
    for note in notes:
        gr.Warning(note[:1].upper() + note[1:])
    return updates


def _find_checkpoint(wanted: str, choices: list[str]) -> str | None:
    """A checkpoint by the name an infotext gives (exact, then ignoring case and file extension)."""
    if wanted in choices:
        return wanted

    def stem(name: str) -> str:
        base = name.rsplit("/", 1)[-1]
        for ext in (".safetensors", ".ckpt", ".pt", ".bin"):
            if base.lower().endswith(ext):
                base = base[: -len(ext)]
        return base.lower()

    for choice in choices:
        if stem(choice) == stem(wanted):
            return choice
    return None


def snap_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """An image size rounded to multiples of 8 within [64, max_side], keeping the aspect ratio roughly."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return tuple(max(64, min(max_side, int(round(side * scale / 8)) * 8)) for side in (width, height))  # type: ignore[return-value]
