"""Assemble the Gradio UI: the model pickers on top, then one tab per entry of `TABS`.

`create_ui(easel)` builds the `gr.Blocks`; `launch_kwargs(easel)` gives what Gradio 6 takes at `launch()`
(theme, CSS, the Ctrl+Enter script, the outputs folder the gallery serves from, how many events Gradio handles at
once). A tab is a function
`build(ui: UIContext) -> None` that opens its own `gr.Tab`; adding a tab is adding it to `TABS`. Tabs and
accordions that extensions registered (`easel.registry`) are added after ours; one that fails to build is
logged and left out.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext
from webui.ui.tabs import (browse, edit, extensions, extras, img2img, inpaint, models, png_info, segment, settings,
                           train, txt2img)

if TYPE_CHECKING:
    from webui.app import Easel

log = logging.getLogger(__name__)

TabBuilder = Callable[[UIContext], None]

TABS: list[TabBuilder] = [
    txt2img.build,
    img2img.build,
    inpaint.build,
    segment.build,
    edit.build,
    extras.build,
    png_info.build,
    browse.build,
    models.build,
    train.build,
    extensions.build,
    settings.build,
]

ASSETS = Path(__file__).resolve().parent / "assets"
OTHER_EVENTS = 40  # events Gradio can handle at once besides Generate / Segment streams waiting on their jobs
REFRESH = "\u21BB"  # ↻


def create_ui(easel: "Easel") -> gr.Blocks:
    """The whole UI for a built Easel (nothing is loaded until a job or the Models tab asks)."""
    return build_ui(easel)[0]


def build_ui(easel: "Easel") -> tuple[gr.Blocks, UIContext]:
    """The Blocks and the context its tabs were built with (tests reach the controls through it)."""
    ui = UIContext(easel)
    with gr.Blocks(title="Easel", analytics_enabled=False) as blocks:
        refresh = build_header(ui)
        with gr.Tabs(elem_id="tabs") as tabs:
            ui.tabs = tabs
            for builder in TABS:
                builder(ui)
            for contribution in easel.registry.tabs:
                build_extension_tab(contribution)
        ui.finish()
        wire_header(ui, refresh)
    return blocks, ui


def build_extension_tab(contribution: Any) -> None:
    """One extension's tab (`contribution.title`, `contribution.build()`), isolated from the rest."""
    with gr.Tab(contribution.title, elem_id=f"tab_ext_{contribution.extension}"):
        try:
            contribution.build()
        except Exception as exc:  # noqa: BLE001 - one broken extension must not stop the UI
            log.exception("extension %s: its tab %r failed to build", contribution.extension, contribution.title)
            gr.Markdown(f"The extension **{contribution.extension}** failed to build this tab: "
                        f"`{type(exc).__name__}: {exc}`")


def build_header(ui: UIContext) -> Any:
    easel = ui.easel
    with gr.Row(elem_id="easel_header", equal_height=False):
        gr.HTML('<h1>Easel<span>.</span></h1>', elem_id="easel_title", padding=False)
        choices = easel.checkpoint_choices()
        ui.checkpoint = gr.Dropdown(choices=choices, value=easel.default_checkpoint() or None,
                                    label="Checkpoint", elem_id="checkpoint", scale=4, min_width=220)
        refresh = gr.Button(REFRESH, elem_id="refresh_checkpoints", elem_classes="easel-tool", scale=0,
                            min_width=42)
        ui.sized_for = gr.State(easel.default_checkpoint() or None)
        ui.vae = gr.Dropdown(choices=easel.vae_choices(), value="Automatic", label="VAE", elem_id="vae", scale=2,
                             min_width=160)
    return refresh


# The fields a checkpoint pick sets to the model's defaults (webui.model_manager.defaults), unless the user edited them.
DEFAULTED_FIELDS = ("sampler", "steps", "width", "height", "cfg_scale", "distilled_cfg_scale")
# controls shown or hidden with the checkpoint's family (Easel.hidden_fields)
FAMILY_TOGGLED = ("negative_prompt", "clip_skip", "tiling", "scheduler", "noise_level", "stage2_steps",
                  "stage3_steps", "denoising_strength", "steps", "cfg_scale", "truncation_psi", "class_label")


def model_default_values(easel: Any, checkpoint: str | None) -> dict[str, Any]:
    """The value each of DEFAULTED_FIELDS takes for `checkpoint` (distilled guidance only for models that have it)."""
    own = easel.model_defaults(checkpoint)
    values: dict[str, Any] = {"sampler": easel.default_sampler(checkpoint), "steps": own.steps, "width": own.width,
                              "height": own.height, "cfg_scale": own.cfg_scale}
    if own.distilled_cfg_scale is not None:
        values["distilled_cfg_scale"] = own.distilled_cfg_scale
    return values


def wire_header(ui: UIContext, refresh: Any) -> None:
    """Refresh rescans the model folders; a checkpoint change updates each tab's samplers, and a user's pick sets
    each tab's size, steps, CFG scale, sampler and distilled guidance to the model's defaults, except the ones the
    user edited in this browser tab (`touched`: "mode:field" names, set by each control's `input` event)."""
    easel = ui.easel
    tabs = list(ui.generation.values())
    samplers = [tab.controls["sampler"] for tab in tabs]
    distilled = [tab.controls["distilled_cfg_scale"] for tab in tabs if "distilled_cfg_scale" in tab.controls]
    targets = [(tab.mode, name, tab.controls[name]) for tab in tabs for name in DEFAULTED_FIELDS if name in tab.controls]
    toggled = [(name, tab.controls[name]) for tab in tabs for name in FAMILY_TOGGLED if name in tab.controls]
    toggled += [(name, panel) for tab in tabs for name, panel in tab.family_panels.items()]
    touched = gr.State(set())

    @guard
    def on_refresh(current: str | None) -> tuple[Any, Any]:
        easel.manager.refresh()
        choices = easel.checkpoint_choices()
        value = current if current in choices else (easel.default_checkpoint() or None)
        return gr.Dropdown(choices=choices, value=value), gr.Dropdown(choices=easel.vae_choices())

    refresh.click(on_refresh, inputs=ui.checkpoint, outputs=[ui.checkpoint, ui.vae], show_progress="hidden")

    # Any change of checkpoint (a pick, "Send to"): the samplers this family offers (a value it cannot run falls back
    # to the model's default; a valid one is left as it is) and whether the model takes a distilled guidance.
    @guard
    def on_checkpoint(checkpoint: str | None, *current: str | None) -> list[Any]:
        choices = easel.sampler_choices(checkpoint)
        fallback = easel.default_sampler(checkpoint)
        has_distilled = easel.model_defaults(checkpoint).distilled_cfg_scale is not None
        hidden = easel.hidden_fields(checkpoint)  # controls the family does not use (DiT: no negative prompt)
        shown = "sampler" not in hidden  # StyleGAN has no sampler
        return ([gr.Dropdown(choices=choices, visible=shown) if value in choices
                 else gr.Dropdown(choices=choices, value=fallback, visible=shown)
                 for value in current] + [gr.Slider(visible=has_distilled)] * len(distilled)
                + [gr.update(visible=name not in hidden) for name, _ in toggled]
                + [gr.update(visible="truncation_psi" not in hidden)] * len(ui.gan_only))

    ui.checkpoint.change(on_checkpoint, inputs=[ui.checkpoint, *samplers],
                         outputs=[*samplers, *distilled, *(component for _, component in toggled), *ui.gan_only],
                         show_progress="hidden")

    for mode, name, component in targets:
        key = f"{mode}:{name}"
        component.input(lambda edited, key=key: edited | {key}, inputs=touched, outputs=touched,
                        show_progress="hidden", queue=False)

    @guard
    def on_pick(checkpoint: str | None, edited: set[str], sized_for: str | None = None) -> list[Any]:
        values = model_default_values(easel, checkpoint)
        updates: list[Any] = []
        for mode, name, _ in targets:
            if checkpoint == sized_for or f"{mode}:{name}" in edited or name not in values:
                updates.append(gr.skip())
            elif name == "sampler":
                updates.append(gr.Dropdown(choices=easel.sampler_choices(checkpoint), value=values[name]))
            else:
                updates.append(values[name])
        return [*updates, checkpoint]

    # Only a user's pick of another checkpoint sets the defaults (picking the one the controls were set for again
    # changes nothing); "Send to" sets the checkpoint together with its own values.
    ui.checkpoint.input(on_pick, inputs=[ui.checkpoint, touched, ui.sized_for],
                        outputs=[*(component for _, _, component in targets), ui.sized_for], show_progress="hidden")


def theme() -> gr.themes.Base:
    return gr.themes.Default(primary_hue="orange", secondary_hue="slate", neutral_hue="slate",
                             spacing_size="sm", radius_size="sm", text_size="md",
                             font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def launch_kwargs(easel: "Easel") -> dict[str, Any]:
    """Arguments for `Blocks.launch` (Gradio 6 takes theme, CSS and scripts there).

    Gradio's file routes may serve the outputs folder (and Gradio's own upload and cache folders); the model
    folders, settings and login files are blocked even when a link in outputs points at them."""
    outputs = easel.settings.outputs_dir
    outputs.mkdir(parents=True, exist_ok=True)
    allowed, blocked = easel.settings.served_paths()
    return {
        "theme": theme(),
        "css": (ASSETS / "easel.css").read_text(encoding="utf-8"),
        "js": (ASSETS / "easel.js").read_text(encoding="utf-8"),
        "head": f"<style>{(ASSETS / 'page.css').read_text(encoding='utf-8')}</style>",
        "allowed_paths": allowed,
        "blocked_paths": blocked,
        "max_file_size": easel.settings.max_upload_bytes,
        "show_error": True,
        "max_threads": gradio_slots(easel.settings.user.queue_size),
    }


def gradio_slots(queue_size: int) -> int:
    """Gradio's `max_threads`: how many events its queue handles at once, and the size of the thread pool its
    plain handlers run on.

    Generate and Segment are async: while their job waits they hold no thread, but each keeps one of these slots,
    and at most `queue_size` + 1 jobs are queued or running (the next one is refused at once); the other
    `OTHER_EVENTS` slots stay for every other button, the Interrupt buttons included. Any number but Gradio's
    default of 40 also gives Gradio a pool of its own, so its handlers never take the 40 threads Starlette's
    routes share (the login page, the theme, the API's plain routes)."""
    return queue_size + 1 + OTHER_EVENTS
