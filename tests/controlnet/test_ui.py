"""The ControlNet accordion in the real UI: its units in txt2img, img2img and inpaint, the preview button's handler,
the threshold boxes following the preprocessor, and the values reaching a request."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from tests.controlnet.conftest import shapes


@pytest.fixture
def built(cn_easel):
    from webui.ui.app import build_ui

    blocks, ui = build_ui(cn_easel)
    yield cn_easel, blocks
    blocks.close()


def handler(blocks, output_id: str):
    """The function wired to the event whose outputs include the component with `output_id`."""
    for fn in blocks.fns.values():
        if any(getattr(out, "elem_id", None) == output_id for out in fn.outputs):
            return fn.fn
    raise AssertionError(f"no event writes {output_id}")


def by_id(blocks, elem_id: str):
    return next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_accordion_units_in_every_generation_tab(built):
    easel, blocks = built
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    for mode in ("txt2img", "img2img", "inpaint"):
        for index in range(3):
            assert {f"{mode}_controlnet_{index}_{part}" for part in ("enabled", "image", "module", "model", "preview",
                                                                     "run_preview")} <= ids
    model = by_id(blocks, "txt2img_controlnet_0_model")
    assert [c[0] if isinstance(c, tuple) else c for c in model.choices] == ["tiny-canny", "tiny-depth"]
    accordions = [b for b in blocks.blocks.values() if isinstance(b, gr.Accordion) and b.label == "ControlNet"]
    assert len(accordions) == 3


def test_preview_shows_the_map_or_says_what_is_missing(built):
    easel, blocks = built
    preview = handler(blocks, "img2img_controlnet_1_preview")
    edges = np.asarray(preview(shapes(), "canny", 64, 50, 150))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    with pytest.raises(gr.Error, match="Upload a control image"):
        preview(None, "canny", 64, -1, -1)
    with pytest.raises(gr.Error, match="dpt_hybrid-midas-501f0c75.pt"):
        preview(shapes(), "depth_midas", 64, -1, -1)


def test_thresholds_follow_the_preprocessor():
    from tests.controlnet.test_units import extension_module

    ui = extension_module("ui")
    low, high = ui.threshold_updates("canny")
    assert low["visible"] and low["label"] == "Canny Low Threshold" and high["value"] == 200
    hidden, _ = ui.threshold_updates("none")
    assert hidden["visible"] is False and hidden["value"] == -1


def test_accordion_values_reach_the_request(built):
    easel, _ = built
    [(name, inputs)] = [(c.extension, c) for c in easel.registry.accordions if c.mode == "txt2img"]
    with gr.Blocks():
        built_inputs = inputs.build()
    values = [c.value for c in built_inputs.components]
    values[0], values[1], values[2] = True, shapes(), "canny"  # unit 0: enable, image, preprocessor
    parsed = easel.registry.parse_request_args({name: built_inputs.to_args(*values)})
    [unit] = parsed["controlnet"]
    assert unit.model == "tiny-canny" and unit.module == "canny" and unit.weight == 1.0
    assert unit.union_control_type is None  # "Unknown": not a union model
    values[13] = "depth"  # unit 0's union control type
    [unit] = easel.registry.parse_request_args({name: built_inputs.to_args(*values)})["controlnet"]
    assert unit.union_control_type == "depth"
