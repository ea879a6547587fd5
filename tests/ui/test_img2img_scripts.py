"""The Script dropdown's SD upscale and Loopback controls on a real Easel (tiny SD 1.x model): listed on img2img
only, their values become AUTOMATIC1111's `script_args`, and the job the tab queues makes the images."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from tests.api.conftest import gradient
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest
from webui.ui.scripts import build_script_picker

REQUEST = Img2ImgRequest(prompt="a red ball", width=64, height=64, steps=2, seed=3, checkpoint="tiny-sd1",
                         init_image=gradient(), denoising_strength=0.5)


def controls(inputs, name):
    parts, _ = inputs.controls[name]
    return {c.label: c for c in parts}


def test_img2img_script_dropdown_runs_sd_upscale_and_loopback(make_easel):
    easel = make_easel()
    ui = SimpleNamespace(easel=easel)
    with gr.Blocks() as blocks:
        img2img = build_script_picker(ui, "img2img")
        txt2img = build_script_picker(ui, "txt2img")
    blocks.close()
    assert {"SD upscale", "Loopback"} <= set(img2img.titles) and not {"SD upscale", "Loopback"} & set(txt2img.titles)
    assert [c[0] if isinstance(c, tuple) else c for c in controls(img2img, "sd upscale")["Upscaler"].choices][:3] \
        == ["None", "Lanczos", "Nearest"]  # AUTOMATIC1111's order, so an index means the same upscaler

    upscale = controls(img2img, "sd upscale")
    chosen = img2img.chosen({img2img.dropdown: "SD upscale", upscale["Tile overlap"]: 0,
                             upscale["Upscaler"]: "Nearest", upscale["Scale Factor"]: 1.5})
    assert chosen == ("sd upscale", [None, 0, "Nearest", 1.5])
    done = easel.engine.generate(easel.script_job(chosen[0], REQUEST, chosen[1]), source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    assert [img.size for img in done.result.images] == [(96, 96)] and done.batch_total == 4

    loop = controls(img2img, "loopback")
    chosen = img2img.chosen({img2img.dropdown: "Loopback", loop["Loops"]: 2, loop["Final denoising strength"]: 0.25,
                             loop["Denoising strength curve"]: "Lazy"})
    assert chosen == ("loopback", [2, 0.25, "Lazy", "None"])
    done = easel.engine.generate(easel.script_job(chosen[0], REQUEST, chosen[1]), source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    params = [parse_infotext(text) for text in done.result.infotexts[1:]]
    assert [(p["Denoising strength"], p["Denoising curve"]) for p in params] == [("0.5", "Lazy"), ("0.25", "Lazy")]
