"""The "ControlNet" accordion of the txt2img, img2img and inpaint tabs: a few units, each with its own controls.

Each unit has an Enable box, a control image (in img2img and inpaint an empty one means "the input image"), the
preprocessor and model, weight, the guidance window (start and end as fractions of the steps), the control and
resize modes, the preprocessor resolution (or pixel perfect), the module's two thresholds, whose labels follow
the chosen preprocessor, and the control type of a union ControlNet. "Preview" runs the preprocessor on the unit's image and shows the map. On Generate the
values become the same unit dictionaries the API takes, so one parser checks both.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from webui.extension_api import ExtensionInputs

from .conditions import FLUX_UNION_TYPES, SDXL_UNION_TYPES
from .preprocessors import MODULES, REFERENCE_MODULES, AnnotatorMissingError
from .routes import UI_UNITS
from .units import BALANCED, CONTROL_MODES, CROP_AND_RESIZE, DEFAULT_PROCESSOR_RES, RESIZE_MODES

if TYPE_CHECKING:
    from . import ControlNet

UNIT_KEYS = ("enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
             "resize_mode", "processor_res", "pixel_perfect", "threshold_a", "threshold_b", "union_control_type")
UNKNOWN_TYPE = "Unknown"  # sd-webui-controlnet's value for "not a union model"
# the control types of the union models Easel runs (Flux.1's, then SDXL's), each name once
UNION_CHOICES = [UNKNOWN_TYPE, *dict.fromkeys((*FLUX_UNION_TYPES, *SDXL_UNION_TYPES))]


def units_from_values(*values: Any) -> list[dict[str, Any]]:
    """The accordion's values (UNIT_KEYS per unit, units in order) as sd-webui-controlnet unit dictionaries."""
    size = len(UNIT_KEYS)
    units = []
    for start in range(0, len(values), size):
        unit = dict(zip(UNIT_KEYS, values[start:start + size]))
        if not unit.get("enabled"):
            units.append({"enabled": False})
            continue
        for key in ("threshold_a", "threshold_b"):
            if unit.get(key) is None:
                unit[key] = -1
        unit["model"] = unit.get("model") or ""
        if unit.get("module") in REFERENCE_MODULES:  # reference modules use no ControlNet model
            unit["model"] = "None"
        if unit.get("union_control_type") in (None, UNKNOWN_TYPE):
            unit.pop("union_control_type", None)
        units.append(unit)
    return units


def threshold_updates(module_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Labels, values and visibility of the two threshold boxes for a preprocessor."""
    import gradio as gr

    module = MODULES.get(module_name)
    updates = []
    for slider in ((module.threshold_a, module.threshold_b) if module else (None, None)):
        if slider is None:
            updates.append(gr.update(visible=False, value=-1))
        else:
            updates.append(gr.update(visible=True, label=slider.name, value=slider.value, minimum=slider.minimum,
                                     maximum=slider.maximum, step=slider.step))
    return updates[0], updates[1]


def accordion_builder(controlnet: "ControlNet", mode: str) -> Callable[[], ExtensionInputs]:
    def build() -> ExtensionInputs:
        import gradio as gr

        components: list[Any] = []
        modules = list(MODULES)
        models = [entry.name for entry in controlnet.models.scan() + controlnet.ip_models.scan()]
        image_label = "Control image" if mode == "txt2img" else "Control image (empty: the input image)"
        with gr.Tabs():
            for index in range(UI_UNITS):
                with gr.Tab(f"Unit {index}"):
                    enabled = gr.Checkbox(label="Enable", value=False, elem_id=f"{mode}_controlnet_{index}_enabled")
                    with gr.Row():
                        image = gr.Image(label=image_label, type="pil", sources=["upload", "clipboard"], height=220,
                                         elem_id=f"{mode}_controlnet_{index}_image")
                        preview = gr.Image(label="Preprocessed map", type="pil", interactive=False, height=220,
                                           elem_id=f"{mode}_controlnet_{index}_preview")
                    with gr.Row():
                        module = gr.Dropdown(modules, value="none", label="Preprocessor", min_width=140,
                                             elem_id=f"{mode}_controlnet_{index}_module")
                        model = gr.Dropdown(models, value=models[0] if models else None, label="Model",
                                            min_width=160, elem_id=f"{mode}_controlnet_{index}_model")
                        refresh = gr.Button("\U0001f504", elem_classes="easel-tool", scale=0, min_width=40,
                                            elem_id=f"{mode}_controlnet_{index}_refresh")
                        show = gr.Button("Preview", scale=0, min_width=80,
                                         elem_id=f"{mode}_controlnet_{index}_run_preview")
                    with gr.Row():
                        weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control weight", min_width=140)
                        start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting control step",
                                          min_width=140)
                        end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending control step", min_width=140)
                    control_mode = gr.Radio(list(CONTROL_MODES), value=BALANCED, label="Control mode")
                    resize_mode = gr.Radio(list(RESIZE_MODES), value=CROP_AND_RESIZE, label="Resize mode")
                    with gr.Row():
                        processor_res = gr.Slider(64, 2048, value=DEFAULT_PROCESSOR_RES, step=8,
                                                  label="Preprocessor resolution", min_width=140)
                        pixel_perfect = gr.Checkbox(label="Pixel perfect", value=False, min_width=100)
                        threshold_a = gr.Number(value=-1, label="Threshold A", visible=False, min_width=100)
                        threshold_b = gr.Number(value=-1, label="Threshold B", visible=False, min_width=100)
                    union_type = gr.Dropdown(UNION_CHOICES, value=UNKNOWN_TYPE, label="Control type (union models)",
                                             elem_id=f"{mode}_controlnet_{index}_union_control_type")
                components += [enabled, image, module, model, weight, start, end, control_mode, resize_mode,
                               processor_res, pixel_perfect, threshold_a, threshold_b, union_type]

                module.change(threshold_updates, inputs=module, outputs=[threshold_a, threshold_b],
                              show_progress="hidden")
                refresh.click(lambda current: _refreshed(controlnet, current), inputs=model, outputs=model,
                              show_progress="hidden")
                show.click(lambda *values: _preview(controlnet, *values),
                           inputs=[image, module, processor_res, threshold_a, threshold_b], outputs=preview)
        return ExtensionInputs(components=components, to_args=units_from_values)

    return build


def _refreshed(controlnet: "ControlNet", current: str | None) -> Any:
    import gradio as gr

    names = [entry.name for entry in controlnet.models.scan() + controlnet.ip_models.scan()]
    return gr.update(choices=names, value=current if current in names else (names[0] if names else None))


def _preview(controlnet: "ControlNet", image: Any, module: str, resolution: float, threshold_a: float | None,
             threshold_b: float | None) -> Any:
    """The unit's control map, or a gr.Error saying what is missing."""
    import gradio as gr

    if image is None:
        raise gr.Error("Upload a control image to preview its map.")
    try:
        return controlnet.preprocessors.run(module or "none", image, int(resolution or DEFAULT_PROCESSOR_RES),
                                            None if threshold_a in (None, -1) else threshold_a,
                                            None if threshold_b in (None, -1) else threshold_b)
    except (AnnotatorMissingError, LookupError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
