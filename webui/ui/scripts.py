"""The Script dropdown of the txt2img and img2img tabs: None, the built-in scripts (X/Y/Z plot, Prompt matrix,
Prompts from file or textbox; on img2img SD upscale and Loopback) and the API scripts of extensions, each with its
controls shown only while it is picked. The controls' values become the script's `script_args`, in the order the
API takes them, so a plot made here and one made over the API are the same job.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from webui.ui.context import UIContext

NONE = "None"
XYZ, MATRIX, FROM_FILE = "x/y/z plot", "prompt matrix", "prompts from file or textbox"
SD_UPSCALE, LOOPBACK = "sd upscale", "loopback"


@dataclass
class ScriptInputs:
    """The dropdown and, per script name, its components and how their values become `script_args`."""

    dropdown: Any
    titles: dict[str, str]  # title shown -> script name
    controls: dict[str, tuple[list[Any], Callable[..., list[Any]]]] = field(default_factory=dict)

    def components(self) -> set[Any]:
        return {self.dropdown} | {c for parts, _ in self.controls.values() for c in parts}

    def chosen(self, by_component: dict[Any, Any]) -> tuple[str, list[Any]] | None:
        """(script name, script_args) of the picked script, or None."""
        title = by_component.get(self.dropdown) or NONE
        name = self.titles.get(title)
        if name is None:
            return None
        parts, to_args = self.controls[name]
        return name, to_args(*[by_component.get(c) for c in parts])


def _axis_row(mode: str, which: str, labels: list[str], default: str) -> tuple[Any, Any]:
    with gr.Row():
        kind = gr.Dropdown(label=f"{which} type", choices=labels, value=default, elem_id=f"{mode}_xyz_{which.lower()}_type",
                           min_width=160, scale=1)
        values = gr.Textbox(label=f"{which} values", elem_id=f"{mode}_xyz_{which.lower()}_values", scale=3,
                            placeholder="1, 2, 3 · 1-5 · 1-5 (+2) · 1-10 [5] · \"a, b\", c")
    return kind, values


def _xyz(mode: str, choices: dict[str, list[str]]) -> tuple[list[Any], Callable[..., list[Any]]]:
    labels = choices.get("X type") or ["Nothing"]
    x_type, x_values = _axis_row(mode, "X", labels, "Seed" if "Seed" in labels else labels[0])
    y_type, y_values = _axis_row(mode, "Y", labels, "Nothing")
    z_type, z_values = _axis_row(mode, "Z", labels, "Nothing")
    with gr.Row():
        legend = gr.Checkbox(label="Draw legend", value=True, elem_id=f"{mode}_xyz_legend")
        lone = gr.Checkbox(label="Include sub images", value=True, elem_id=f"{mode}_xyz_lone")
        sub_grids = gr.Checkbox(label="Include sub grids", value=False, elem_id=f"{mode}_xyz_sub_grids")
        keep = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=f"{mode}_xyz_keep_seeds")
    with gr.Row():
        vary = [gr.Checkbox(label=f"Vary seeds for {w}", value=False, elem_id=f"{mode}_xyz_vary_{w.lower()}")
                for w in "XYZ"]
    margin = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, step=2, value=0,
                       elem_id=f"{mode}_xyz_margin")
    parts = [x_type, x_values, y_type, y_values, z_type, z_values, legend, lone, sub_grids, keep, *vary, margin]

    def to_args(xt, xv, yt, yv, zt, zv, legend_, lone_, sub_, keep_, vx, vy, vz, margin_) -> list[Any]:
        return [xt, xv or "", [], yt, yv or "", [], zt, zv or "", [], bool(legend_), bool(lone_), bool(sub_),
                bool(keep_), bool(vx), bool(vy), bool(vz), int(margin_ or 0), True]

    return parts, to_args


def _matrix(mode: str) -> tuple[list[Any], Callable[..., list[Any]]]:
    gr.Markdown("Split the prompt with `|`: `a photo | in the rain | at night` makes every combination of the "
                "parts after the first.", elem_classes="easel-script-help")
    with gr.Row():
        at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False)
        different = gr.Checkbox(label="Use different seed for each picture", value=False)
    with gr.Row():
        which = gr.Radio(["positive", "negative"], label="Select prompt", value="positive")
        joiner = gr.Radio(["comma", "space"], label="Select joining char", value="comma")
    margin = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, step=2, value=0)
    return [at_start, different, which, joiner, margin], \
        lambda a, d, w, j, m: [bool(a), bool(d), w, j, int(m or 0)]


def _from_file(mode: str) -> tuple[list[Any], Callable[..., list[Any]]]:
    with gr.Row():
        iterate = gr.Checkbox(label="Iterate seed every line", value=False)
        same = gr.Checkbox(label="Use same random seed for all lines", value=False)
        position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start")
    text = gr.Textbox(label="List of prompt inputs", lines=6, elem_id=f"{mode}_prompts_list",
                      placeholder='one prompt per line, or options: --prompt "a cat" --steps 10 --seed 3')
    upload = gr.File(label="Upload prompt inputs", file_types=[".txt"], type="filepath")

    def read(path: str | None) -> Any:
        if not path:
            return gr.update()
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(1_000_000)

    upload.upload(read, inputs=upload, outputs=text, show_progress="hidden")
    return [iterate, same, position, text], lambda i, s, p, t: [bool(i), bool(s), p, t or ""]


def _sd_upscale(mode: str, upscalers: list[str]) -> tuple[list[Any], Callable[..., list[Any]]]:
    gr.Markdown("Upscales the image by the scale factor, then repaints it in tiles of the width and height set "
                "above, blended where they overlap.", elem_classes="easel-script-help")
    with gr.Row():
        overlap = gr.Slider(label="Tile overlap", minimum=0, maximum=256, step=16, value=64,
                            elem_id=f"{mode}_sd_upscale_overlap")
        scale = gr.Slider(label="Scale Factor", minimum=1, maximum=4, step=0.5, value=2,
                          elem_id=f"{mode}_sd_upscale_scale")
    choices = ["None", *upscalers]
    upscaler = gr.Radio(choices, label="Upscaler", value="Lanczos" if "Lanczos" in choices else choices[0],
                        elem_id=f"{mode}_sd_upscale_upscaler")
    return [overlap, upscaler, scale], lambda o, u, s: [None, int(o or 0), u or "None", float(s or 1)]


def _loopback(mode: str) -> tuple[list[Any], Callable[..., list[Any]]]:
    with gr.Row():
        loops = gr.Slider(label="Loops", minimum=1, maximum=32, step=1, value=4, elem_id=f"{mode}_loopback_loops")
        final = gr.Slider(label="Final denoising strength", minimum=0, maximum=1, step=0.01, value=0.5,
                          elem_id=f"{mode}_loopback_final")
    curve = gr.Dropdown(label="Denoising strength curve", choices=["Aggressive", "Linear", "Lazy"], value="Linear",
                        elem_id=f"{mode}_loopback_curve")
    return [loops, final, curve], lambda n, f, c: [int(n or 1), float(f if f is not None else 0.5), c or "Linear",
                                                   "None"]


def _generic(mode: str, labels: tuple[str, ...]) -> tuple[list[Any], Callable[..., list[Any]]]:
    box = gr.Textbox(label="script_args (a JSON list)", value="[]",
                     placeholder=", ".join(labels) if labels else "[]")

    def to_args(text: str) -> list[Any]:
        try:
            value = json.loads(text or "[]")
        except json.JSONDecodeError as exc:
            raise ValueError(f"script_args: not JSON ({exc.msg})") from None
        if not isinstance(value, list):
            raise ValueError("script_args: give a JSON list")
        return value

    return [box], to_args


def build_script_picker(ui: UIContext, mode: str) -> ScriptInputs:
    """The Script dropdown and every script's controls (hidden until picked)."""
    easel = ui.easel
    titles = easel.script_titles(mode)
    dropdown = gr.Dropdown(label="Script", choices=[NONE, *titles], value=NONE, elem_id=f"{mode}_script")
    inputs = ScriptInputs(dropdown, titles)
    groups: list[tuple[str, Any]] = []
    for title, name in titles.items():
        script = easel.registry.scripts[name]
        with gr.Group(visible=False, elem_id=f"{mode}_script_{name.replace('/', '').replace(' ', '_')}") as group:
            if name == XYZ:
                inputs.controls[name] = _xyz(mode, script.choices(mode) if script.choices else {})
            elif name == MATRIX:
                inputs.controls[name] = _matrix(mode)
            elif name == FROM_FILE:
                inputs.controls[name] = _from_file(mode)
            elif name == SD_UPSCALE:
                inputs.controls[name] = _sd_upscale(mode, easel.upscaler_choices())
            elif name == LOOPBACK:
                inputs.controls[name] = _loopback(mode)
            else:
                inputs.controls[name] = _generic(mode, script.args)
        groups.append((title, group))

    def show(title: str) -> list[Any]:
        return [gr.Group(visible=title == shown) for shown, _ in groups]

    dropdown.change(show, inputs=dropdown, outputs=[group for _, group in groups], show_progress="hidden")
    return inputs
