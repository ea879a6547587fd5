"""The Settings tab: edit the persisted user settings (`UserSettings`), validated before they are saved.

Apply hands the controls' values to `webui.settings.apply_changes`, the one path every settings change takes
(the API's options too): it checks them (an error names the key and nothing changes), writes `config.json` and
makes them current. Limits take effect at once: the generation tabs' sliders
get their new maxima. If `config.json` could not be read at start, the reason is shown at the top.
"""
from __future__ import annotations

import dataclasses
import html
from typing import Any

import gradio as gr

from webui.settings import (CPU_BACKENDS, FACE_RESTORERS, OFFLOAD_CHOICES, RNG_SOURCES, VAE_TILING_CHOICES,
                            WEIGHT_PRECISIONS,
                            UserSettings, apply_changes)
from webui.ui.bridge import guard
from webui.ui.context import UIContext

LABELS = {
    "ram_cache_size": "Checkpoints kept loaded",
    "ram_budget_mb": "RAM for loaded models, MiB (0 = automatic: half the machine's memory)",
    "vram_budget_mb": "GPU memory for loaded models, MiB (0 = automatic: 60% of the GPU's)",
    "live_preview_every": "Live preview every N steps (0 = off)",
    "default_sampler": "Default sampler",
    "flow_shift": "Timestep shift for flow-matching models (SD3, Flux, Z-Image, Qwen-Image, built-in; 0 = the model's own)",
    "max_side": "Largest width or height, pixels",
    "max_pixels": "Largest image, pixels (width × height)",
    "max_steps": "Most sampling steps",
    "max_batch_size": "Largest batch size",
    "max_batch_count": "Largest batch count",
    "max_images": "Most images per request (batch size x batch count)",
    "max_request_pixels": "API: most pixels of all images one request sends (Extras: with its results)",
    "max_request_images": "API: most images one request sends",
    "max_prompt_chars": "Longest prompt, characters",
    "queue_size": "Jobs the queue holds",
    "save_images": "Save every image to outputs/",
    "enable_pnginfo": "Write the generation parameters into saved PNGs (and the API's images)",
    "randn_source": "Random number generator source (NV: the noise an NVIDIA GPU gives, on any device)",
    "builtin_plan_layout": "Built-in model: give objects the prompt places nowhere a position before drawing, "
                           "and redraw each of several objects alone (recorded as \"Planned prompt\")",
    "filename_digits": "Digits in image file numbers",
    "img2img_fix_steps": "img2img: run exactly the sampling steps asked (not steps x denoising strength)",
    "disabled_extensions": "Disabled extensions",
    "lora_fuse": "Fuse a LoRA set used twice in a row into the weights",
    "lora_hotswap": "Hot-swap LoRAs in place (for a compiled model)",
    "lora_keep_loaded": "Unused LoRAs kept loaded, so switching back to them is instant (0 = drop at once)",
    "lora_max_rank": "Hot-swap: largest LoRA rank",
    "compile_denoiser": "Compile the UNet/transformer (with hot-swap)",
    "face_restoration_model": "Face restoration model (\"Restore faces\"; weights in models/GFPGAN, models/Codeformer)",
    "code_former_weight": "CodeFormer weight (0 = most restored, 1 = closest to the input)",
    "face_restoration_finder": "Model that finds faces (empty = the detail fixer's default)",
    "face_restoration_confidence": "Face finding threshold (CLIPSeg, SAM 3)",
    "vae_tiling": "Tiled VAE: decode and encode in tiles (Automatic: above 1536×1536 pixels or with tiled diffusion)",
    "vae_tile_size": "Tiled VAE: tile size, pixels (0 = the VAE's own)",
    "cpu_backend": "CPU backend for SD 1.x/2.x (auto: the one measured to pay, PyTorch for now; openvino: OpenVINO, "
                   "converted once and cached; compile: torch.compile)",
    "tiny_vae_decode": "Decode with the tiny VAE (TAESD in models/VAE-approx): much faster, slightly different images",
    "tiny_vae_preview": "Live previews through the tiny VAE when its file is in models/VAE-approx",
    "offload_mode": "GPU offload (auto: from free VRAM and model size; model = --medvram, sequential = --lowvram, "
                    "group: layer by layer with CUDA streams); applies to checkpoints loaded next",
    "weight_precision": "Transformer/UNet weights in memory (default: as --precision says; fp8: half of bf16, any "
                        "device; nf4/int8: bitsandbytes, NVIDIA GPUs only); applies to checkpoints loaded next",
}
GROUPS = {
    "Generation": ("default_sampler", "live_preview_every", "save_images", "enable_pnginfo", "filename_digits", "randn_source",
                   "img2img_fix_steps", "builtin_plan_layout", "flow_shift"),
    "Memory and queue": ("ram_cache_size", "ram_budget_mb", "vram_budget_mb", "queue_size", "vae_tiling",
                         "vae_tile_size", "offload_mode", "weight_precision"),
    "CPU": ("cpu_backend", "tiny_vae_decode", "tiny_vae_preview"),
    "Limits": ("max_side", "max_pixels", "max_steps", "max_batch_size", "max_batch_count", "max_images", "max_prompt_chars",
               "max_request_pixels", "max_request_images"),
    "Face restoration": ("face_restoration_model", "code_former_weight", "face_restoration_finder",
                         "face_restoration_confidence"),
    "LoRAs": ("lora_fuse", "lora_hotswap", "lora_max_rank", "lora_keep_loaded", "compile_denoiser"),
    "Extensions": ("disabled_extensions",),
}
RESTART_FIELDS = ("ram_cache_size", "queue_size", "disabled_extensions")


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def apply_values(ui: UIContext, values: dict[str, Any]) -> UserSettings:
    """Validate `values` as user settings, make them current and save them (`webui.settings.apply_changes`, the
    path the API's options take too); a bad value raises its `SettingError`, naming the key, and changes nothing."""
    new, errors = apply_changes(ui.easel.settings, values, ui.easel.sampler_choices(None))
    if errors:
        raise errors[0]
    return new


def build(ui: UIContext) -> None:
    settings = ui.easel.settings
    user = settings.user
    fields = {f.name: f for f in dataclasses.fields(UserSettings)}
    controls: dict[str, Any] = {}
    with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
        if settings.load_message:
            gr.HTML(f'<div class="easel-warning">{html.escape(settings.load_message)}</div>',
                    elem_id="settings_load_message")
        grouped = [name for names in GROUPS.values() for name in names]
        groups = {**GROUPS, "Other": tuple(n for n in fields if n not in grouped)}
        for title, names in groups.items():
            names = tuple(n for n in names if n in fields)
            if not names:
                continue
            with gr.Group():
                gr.Markdown(f"**{title}**", elem_classes="easel-group-title")
                with gr.Row():
                    for name in names:
                        controls[name] = _control(ui, name, fields[name].default, getattr(user, name))
                if title == "Extensions":
                    gr.Markdown(extensions_summary(ui), elem_id="settings_extensions", elem_classes="easel-note")
        with gr.Row():
            apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", scale=0,
                              min_width=160)
            status = gr.Markdown("", elem_id="settings_status")
        gr.Markdown(f"Settings are stored in `{html.escape(str(settings.config_path))}`. Changes to "
                    f"{', '.join(label(n).lower() for n in RESTART_FIELDS)} take effect after a restart.",
                    elem_classes="easel-note")

    def limit_outputs() -> list[tuple[Any, Any]]:
        """(component, Control) for every generation control whose maximum comes from the limits."""
        found = []
        for tab in ui.generation.values():
            for control in tab.controls.controls.values():
                if control.limit:
                    found.append((control.component, control))
        return found

    def wire() -> None:
        limited = limit_outputs()

        @guard
        def on_apply(by_component: dict) -> dict:
            values = {name: by_component[c] for name, c in controls.items()}
            new = apply_values(ui, values)
            limits = new.limits()
            updates: dict[Any, Any] = {status: "Settings saved."}
            for component, control in limited:
                control.maximum = getattr(limits, control.limit)
                updates[component] = gr.update(maximum=control.maximum)
            return updates

        apply.click(on_apply, inputs=set(controls.values()),
                    outputs=[status, *dict.fromkeys(c for c, _ in limited)], show_progress="hidden")

    ui.after_build(wire)


def extensions_summary(ui: UIContext) -> str:
    """One line per extension found: loaded, disabled, or the error that stopped it."""
    lines = []
    for item in ui.easel.extensions:
        state = "loaded" if item.loaded else "disabled" if not item.enabled else f"failed: {item.error}"
        lines.append(f"- **{html.escape(item.name)}**: {html.escape(state)}")
    return "\n".join(lines) or "No extensions are installed (they live in `extensions/`)."


def _control(ui: UIContext, name: str, default: Any, value: Any) -> Any:
    kwargs = {"label": label(name), "elem_id": f"setting_{name}", "min_width": 180}
    if isinstance(value, list):
        names = sorted({item.name for item in ui.easel.extensions} | set(value))
        return gr.CheckboxGroup(choices=names, value=list(value), visible=bool(names), **kwargs)
    if isinstance(default, bool):
        return gr.Checkbox(value=value, **kwargs)
    if name == "randn_source":
        return gr.Dropdown(choices=list(RNG_SOURCES), value=value, **kwargs)
    if name == "face_restoration_model":
        return gr.Dropdown(choices=list(FACE_RESTORERS), value=value, **kwargs)
    if name in ("code_former_weight", "face_restoration_confidence"):
        return gr.Slider(0.0, 1.0, value=value, step=0.01, **kwargs)
    if name == "offload_mode":
        return gr.Dropdown(choices=list(OFFLOAD_CHOICES), value=value, **kwargs)
    if name == "vae_tiling":
        return gr.Dropdown(choices=list(VAE_TILING_CHOICES), value=value, **kwargs)
    if name == "weight_precision":
        return gr.Dropdown(choices=list(WEIGHT_PRECISIONS), value=value, **kwargs)
    if name == "cpu_backend":
        return gr.Dropdown(choices=list(CPU_BACKENDS), value=value, **kwargs)
    if name == "default_sampler":
        return gr.Dropdown(choices=ui.easel.sampler_choices(None), value=value, **kwargs)
    if isinstance(default, float):
        return gr.Number(value=value, minimum=0, maximum=100, step=0.1, **kwargs)
    if isinstance(default, int):
        return gr.Number(value=value, precision=0, **kwargs)
    return gr.Textbox(value=str(value), **kwargs)
