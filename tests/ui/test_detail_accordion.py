"""The Detail fixer accordion on txt2img and img2img: its values become the pass the engine's parser accepts, and
"Send to" fills it from an infotext's first pass (and unticks it for an image made without one)."""
from __future__ import annotations

import gradio as gr
import pytest

from webui.engine.detail_args import DetailPass, parse_detail_args
from webui.ui.generation import send_updates

TEXT = ("a red circle\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, Model: tiny-sd1, "
        'Detail 1 query: "the red circle", Detail 1 prompt: "a shiny circle, detailed", Detail 1 denoising: 0.45, '
        "Detail 1 dilate/erode: -3, Detail 1 mask blur: 6, Detail 1 regions: 1, Version: Easel")


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_accordion_values_become_a_pass(built_ui, mode: str) -> None:
    _, ui = built_ui
    tab = ui.generation[mode]
    assert isinstance(tab.detail["accordion"], gr.Accordion) and tab.detail["accordion"].label == "Detail fixer"
    from webui.ui.detail import build_detail_accordion

    with gr.Blocks():
        [(name, inputs)], _ = build_detail_accordion("probe")
    assert name == "easel detail"
    off = inputs.to_args(False, "face", "", "", 0.4, 4, 4)
    assert parse_detail_args(off) == []
    on = inputs.to_args(True, "the red circle", "a shiny circle", "", 0.45, -3, 6)
    assert parse_detail_args(on) == [DetailPass(query="the red circle", prompt="a shiny circle",
                                                denoising_strength=0.45, dilate_erode=-3, mask_blur=6)]


def test_inpaint_has_no_detail_accordion(built_ui) -> None:
    _, ui = built_ui
    assert ui.generation["inpaint"].detail == {}


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_send_to_fills_the_accordion_from_the_first_pass(built_ui, mode: str) -> None:
    _, ui = built_ui
    d = ui.generation[mode].detail
    updates = send_updates(ui, mode, TEXT, None, "tiny-sd1")
    assert updates[d["enable"]] is True and updates[d["accordion"]].open is True
    assert updates[d["query"]] == "the red circle" and updates[d["prompt"]] == "a shiny circle, detailed"
    assert updates[d["negative_prompt"]] == ""
    assert updates[d["denoising"]] == 0.45 and updates[d["dilate/erode"]] == -3 and updates[d["mask blur"]] == 6
    plain = send_updates(ui, mode, TEXT.split(", Detail 1")[0] + ", Version: Easel", None, "tiny-sd1")
    assert plain[d["enable"]] is False and d["query"] not in plain
