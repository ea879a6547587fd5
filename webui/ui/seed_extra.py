"""The "Extra" seed controls under the seed: a variation seed, its strength, and the size to draw the seed's noise at.

A checkbox shows or hides them; the values count whether they are shown or not (as a pasted infotext sets them,
the checkbox is ticked so they are visible). Strength 0 and a resize of 0 x 0 leave the seed's image as it is.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from webui.requests import GenerationRequest, Limits
from webui.ui.controls import ControlSet, field_control

DICE = "\u2684"  # ⚄

# the fields that, when a pasted infotext sets them, tick "Extra"
EXTRA_FIELDS = ("subseed_strength", "seed_resize_from_w", "seed_resize_from_h")


def build_seed_extra(controls: ControlSet, request_cls: type[GenerationRequest], limits: Limits,
                     mode: str) -> dict[str, Any]:
    """Lay out the checkbox and the controls it reveals; {field name: the checkbox} for `GenerationTab.reveal`."""
    show = gr.Checkbox(label="Extra", value=False, elem_id=f"{mode}_subseed_show", min_width=80,
                       container=False)
    with gr.Column(visible=False, elem_id=f"{mode}_seed_extras") as extras:
        with gr.Row(elem_classes="easel-seed-row"):
            subseed = controls.add(field_control(request_cls, "subseed", limits, kind="number", min_width=120,
                                                 scale=4))
            dice = gr.Button(DICE, elem_id=f"{mode}_random_subseed", elem_classes="easel-tool", scale=0,
                             min_width=40)
            controls.add(field_control(request_cls, "subseed_strength", limits, min_width=140, scale=4))
        with gr.Row():
            controls.add(field_control(request_cls, "seed_resize_from_w", limits, min_width=140))
            controls.add(field_control(request_cls, "seed_resize_from_h", limits, min_width=140))
    show.change(lambda on: gr.Column(visible=bool(on)), inputs=show, outputs=extras, show_progress="hidden")
    dice.click(lambda: -1, inputs=None, outputs=subseed, show_progress="hidden")
    return {name: show for name in EXTRA_FIELDS}
