"""Controls ↔ requests: building typed requests from control values, and filling controls from infotext."""
from __future__ import annotations

import dataclasses

import gradio as gr
import pytest
from PIL import Image

from webui.requests import Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest, field_specs
from webui.settings import UserSettings
from webui.ui.controls import build_request, infotext_values
from webui.ui.generation import segment_updates, send_updates, snap_size
from webui.ui.tabs.inpaint import finalize

A1111_TEXT = (
    "a lighthouse at dusk, (dramatic sky:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 31, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 640x448, "
    "Model hash: 0123456789, Model: tiny-sd1, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 1.5, "
    "Hires steps: 12, Hires upscaler: Latent, Version: v1.10.1"
)


def defaults_by_component(controls) -> dict:
    """What Gradio would pass for a tab left at its defaults."""
    return {c.component: c.component.value for c in controls.controls.values()}


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_default_controls_build_the_declared_defaults(built_ui, mode: str) -> None:
    _, ui = built_ui
    tab = ui.generation[mode]
    values = tab.controls.field_values(defaults_by_component(tab.controls))
    request = build_request(tab.request_cls, values)
    reference = tab.request_cls()
    for name in field_specs(tab.request_cls):
        if name in ("checkpoint", "width", "height", "init_image", "sampler"):
            continue
        assert getattr(request, name) == getattr(reference, name), name
    assert request.checkpoint == "tiny-sd1"
    assert (request.width, request.height) == (512, 512)  # the model's default size
    assert request.sampler == "Euler a"


def test_every_generation_tab_has_the_schedule_type_and_tiling(built_ui) -> None:
    from webui.requests import SCHEDULE_LABELS

    _, ui = built_ui
    for mode in ("txt2img", "img2img", "inpaint"):
        controls = ui.generation[mode].controls
        schedule = controls["scheduler"]
        assert schedule.label == "Schedule type" and schedule.value == "Automatic"
        assert [choice for choice, _ in schedule.choices] == list(SCHEDULE_LABELS)
        assert controls["tiling"].label == "Tiling" and controls["tiling"].value is False
        values = controls.field_values({**defaults_by_component(controls), schedule: "Beta", controls["tiling"]: True})
        assert values["scheduler"] == "Beta" and values["tiling"] is True


def _pick_handler(blocks, ui):
    """The function Gradio runs when the user picks a checkpoint in the dropdown."""
    for fn in blocks.fns.values():
        if any(target == (ui.checkpoint._id, "input") for target in fn.targets):
            return fn.fn
    raise AssertionError("no handler for picking a checkpoint")


def _input_handler(blocks, component):
    for fn in blocks.fns.values():
        if any(target == (component._id, "input") for target in fn.targets):
            return fn.fn
    raise AssertionError("no input handler")


def test_picking_a_model_sets_its_defaults_except_the_fields_the_user_edited(built_ui) -> None:
    from webui.ui.app import DEFAULTED_FIELDS

    blocks, ui = built_ui
    keys = [f"{tab.mode}:{name}" for tab in ui.generation.values() for name in DEFAULTED_FIELDS
            if name in tab.controls]
    assert ui.generation["txt2img"].controls["cfg_scale"].value == 7.0  # tiny-sd1 is the default
    on_pick = _pick_handler(blocks, ui)
    out = on_pick("easel-shapes", set())  # each tab's defaulted fields, then the remembered checkpoint
    values = dict(zip(keys, out[:-1]))
    assert out[-1] == "easel-shapes"
    assert all(values[f"{mode}:{side}"] == 64 for mode in ui.generation for side in ("width", "height"))
    assert all(values[f"{mode}:cfg_scale"] == 4.0 and values[f"{mode}:steps"] == 20 for mode in ui.generation)
    assert values["txt2img:sampler"].value == "Euler a" and values["txt2img:sampler"].choices

    # the fields a user edited in this browser tab keep their values; the others follow the model
    edited = _input_handler(blocks, ui.generation["txt2img"].controls["width"])(set())
    edited = _input_handler(blocks, ui.generation["img2img"].controls["cfg_scale"])(edited)
    assert edited == {"txt2img:width", "img2img:cfg_scale"}
    values = dict(zip(keys, on_pick("tiny-sd1", edited)[:-1]))
    assert values["txt2img:width"] == gr.skip() and values["img2img:cfg_scale"] == gr.skip()
    assert values["txt2img:height"] == 512 and values["txt2img:cfg_scale"] == 7.0 and values["img2img:width"] == 512
    assert values["txt2img:distilled_cfg_scale"] == gr.skip(), "models without distilled guidance leave it alone"
    again = on_pick("tiny-sd1", set(), "tiny-sd1")  # the model the controls were set for: nothing changes
    assert all(v == gr.skip() for v in again[:-1]) and again[-1] == "tiny-sd1"


VARIATION_FIELDS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")


def test_every_declared_field_has_a_control(built_ui) -> None:
    _, ui = built_ui
    for mode, tab in ui.generation.items():
        names = set(tab.controls.names())
        for name in field_specs(tab.request_cls):
            if mode == "inpaint" and name in ("init_image", "mask"):
                assert {"editor", "mask_upload"} <= names
                continue
            if mode != "txt2img" and name in VARIATION_FIELDS:  # only txt2img builds its noise (engine/noise.py)
                continue
            if mode == "inpaint" and name in ("refiner_checkpoint", "refiner_switch_at"):
                assert name not in names  # inpainting takes no refiner (the engine refuses one)
                continue
            assert name in names, f"{mode} has no control for {name}"


def test_controls_take_labels_and_limits_from_the_declarations(tmp_path) -> None:
    from tests.ui.conftest import StubEasel
    from webui.ui.app import build_ui

    blocks, ui = build_ui(StubEasel(tmp_path, UserSettings(max_steps=60, max_side=1024, max_batch_size=3)))
    try:
        controls = ui.generation["txt2img"].controls
        assert controls["steps"].label == "Sampling steps" and controls["steps"].maximum == 60
        assert controls["width"].maximum == 1024 and controls["width"].step == 8 and controls["width"].minimum == 64
        assert controls["batch_size"].maximum == 3
        assert controls["cfg_scale"].maximum == 30
        assert ui.generation["inpaint"].controls["outpaint_left"].maximum == 1024
        assert ui.generation["inpaint"].controls["inpainting_fill"].choices == [
            (c, c) for c in ("fill", "original", "latent noise", "latent nothing")]
    finally:
        blocks.close()


def test_request_from_control_values_converts_types() -> None:
    request = build_request(Txt2ImgRequest, {"prompt": "a cat", "steps": 12.0, "cfg_scale": 5, "seed": 42.0,
                                             "width": 256, "height": 320.0, "enable_hr": 1, "negative_prompt": None})
    assert request == Txt2ImgRequest(prompt="a cat", steps=12, cfg_scale=5.0, seed=42, width=256, height=320,
                                     enable_hr=True, negative_prompt="")
    assert isinstance(request.steps, int) and isinstance(request.cfg_scale, float)


@pytest.mark.parametrize("name,value,api,words", [
    ("seed", None, "seed", "empty"),
    ("steps", 2.5, "steps", "whole number"),
    ("cfg_scale", "lots", "cfg_scale", "must be a number"),
    ("batch_count", float("nan"), "n_iter", "finite"),
])
def test_bad_control_values_name_the_field(name: str, value, api: str, words: str) -> None:
    with pytest.raises(RequestError) as info:
        build_request(Txt2ImgRequest, {name: value})
    assert info.value.field == api and words in info.value.message


def test_unknown_field_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no field"):
        build_request(Txt2ImgRequest, {"denoise": 0.5})


def test_inpaint_controls_build_image_and_mask(built_ui) -> None:
    _, ui = built_ui
    tab = ui.generation["inpaint"]
    picture = Image.new("RGB", (64, 48), (10, 20, 30))
    layer = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 200), (8, 8, 24, 20))
    by_component = defaults_by_component(tab.controls)
    by_component[tab.controls["editor"]] = {"background": picture, "layers": [layer], "composite": picture}
    by_component[tab.controls["inpaint_full_res"]] = "Only masked"
    by_component[tab.controls["inpainting_mask_invert"]] = "Inpaint not masked"
    values = finalize(tab.controls.field_values(by_component))
    request = build_request(InpaintRequest, values)
    assert request.init_image.size == (64, 48) and request.init_image.mode == "RGB"
    assert request.mask.mode == "L" and request.mask.getbbox() == (8, 8, 24, 20)
    assert request.inpaint_full_res is True and request.inpainting_mask_invert is True
    assert request.inpainting_fill == "original" and request.mask_blur == 4


def test_infotext_values_from_an_automatic1111_text() -> None:
    values = infotext_values(A1111_TEXT, Txt2ImgRequest)
    assert values["prompt"] == "a lighthouse at dusk, (dramatic sky:1.2)"
    assert values["negative_prompt"] == "blurry, lowres"
    assert values["steps"] == 31 and values["cfg_scale"] == 6.5 and values["seed"] == 1234567890
    assert values["sampler"] == "DPM++ 2M" and values["scheduler"] == "Karras"
    assert (values["width"], values["height"]) == (640, 448)
    assert values["clip_skip"] == 2 and values["enable_hr"] is True and values["hr_scale"] == 1.5
    assert values["hr_second_pass_steps"] == 12 and values["hr_denoising_strength"] == 0.45
    assert infotext_values("", Txt2ImgRequest) == {}


def test_send_to_txt2img_fills_every_control(built_ui) -> None:
    _, ui = built_ui
    tab = ui.generation["txt2img"]
    c = tab.controls
    updates = send_updates(ui, "txt2img", A1111_TEXT, None, "easel-shapes")
    assert updates[ui.tabs].selected == "txt2img"
    assert updates[ui.checkpoint] == "tiny-sd1"  # the infotext's model is installed: picked
    assert updates[c["prompt"]] == "a lighthouse at dusk, (dramatic sky:1.2)"
    assert updates[c["negative_prompt"]] == "blurry, lowres"
    assert updates[c["steps"]] == 31 and updates[c["cfg_scale"]] == 6.5 and updates[c["seed"]] == 1234567890
    assert updates[c["width"]] == 640 and updates[c["height"]] == 448 and updates[c["clip_skip"]] == 2
    sampler = updates[c["sampler"]]
    assert sampler.value == "DPM++ 2M" and ("DDIM", "DDIM") in sampler.choices
    assert updates[c["scheduler"]] == "Karras"  # the schedule type's own dropdown
    assert updates[c["enable_hr"]] is True and updates[c["hr_scale"]] == 1.5
    assert updates[c["hr_second_pass_steps"]] == 12 and updates[c["hr_denoising_strength"]] == 0.45
    assert updates[c["hr_upscaler"]] == "Latent"  # a latent upscaler, as in AUTOMATIC1111
    assert updates[tab.reveal["enable_hr"]].open is True
    assert "refiner_checkpoint" not in tab.reveal or tab.reveal["refiner_checkpoint"] not in updates


def test_send_to_txt2img_restores_hires_and_refiner_keys(built_ui) -> None:
    _, ui = built_ui
    tab = ui.generation["txt2img"]
    c = tab.controls
    text = A1111_TEXT.replace("Version: v1.10.1", 'Hires sampler: DDIM, Hires schedule type: Karras, '
                              'Hires prompt: "a boat, at sea", Hires negative prompt: fog, '
                              'Hires checkpoint: "tiny-sd1 [0123456789]", Refiner: "tiny-sd1 [0123456789]", '
                              'Refiner switch at: 0.6, Version: v1.10.1')
    updates = send_updates(ui, "txt2img", text, None, "tiny-sd1")
    assert updates[c["hr_sampler_name"]] == "DDIM" and updates[c["hr_scheduler"]] == "Karras"
    assert updates[c["hr_prompt"]] == "a boat, at sea" and updates[c["hr_negative_prompt"]] == "fog"
    assert updates[c["hr_checkpoint_name"]] == "tiny-sd1" and updates[c["refiner_checkpoint"]] == "tiny-sd1"
    assert updates[c["refiner_switch_at"]] == 0.6 and updates[tab.reveal["refiner_checkpoint"]].open is True
    assert c["hr_upscaler"].choices[0] == ("Latent", "Latent")
    img2img = ui.generation["img2img"]
    updates = send_updates(ui, "img2img", text, None, "tiny-sd1")
    assert updates[img2img.controls["refiner_checkpoint"]] == "tiny-sd1"
    assert updates[img2img.controls["refiner_switch_at"]] == 0.6


def test_send_to_inpaint_fills_mask_fields_and_image(built_ui) -> None:
    _, ui = built_ui
    tab = ui.generation["inpaint"]
    c = tab.controls
    text = ("a red door\nSteps: 8, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, Model: tiny-sd1, "
            "Denoising strength: 0.6, Mask blur: 9, Masked content: latent noise, Inpaint area: Only masked, "
            "Masked area padding: 48, Mask mode: Inpaint not masked, Outpaint left: 16")
    image = Image.new("RGB", (64, 64))
    updates = send_updates(ui, "inpaint", text, image, "tiny-sd1")
    assert updates[c["denoising_strength"]] == 0.6 and updates[c["mask_blur"]] == 9
    assert updates[c["inpainting_fill"]] == "latent noise"
    assert updates[c["inpaint_full_res"]] == "Only masked" and updates[c["inpaint_full_res_padding"]] == 48
    assert updates[c["inpainting_mask_invert"]] == "Inpaint not masked"
    assert updates[c["outpaint_left"]] == 16
    assert updates[tab.image_input]["background"] is image
    assert updates[tab.reveal["outpaint_left"]].open is True


def test_send_clamps_to_the_controls_and_skips_unknown_values(built_ui) -> None:
    _, ui = built_ui
    c = ui.generation["txt2img"].controls
    text = "x\nSteps: 900, Sampler: Restart, CFG scale: 99, Seed: 3, Size: 9000x64, Model: not-installed"
    with pytest.warns(UserWarning) as warned:
        updates = send_updates(ui, "txt2img", text, None, "tiny-sd1")
    assert {str(w.message) for w in warned} == {"Model 'not-installed' is not installed; keeping tiny-sd1",
                                                "Sampler 'Restart' is not available for this model"}
    assert updates[c["steps"]] == 150 and updates[c["cfg_scale"]] == 30 and updates[c["width"]] == 2048
    assert ui.checkpoint not in updates  # an unknown model keeps the current one
    assert updates[c["sampler"]].value == "Euler a"  # unknown sampler: the model's default


def test_send_an_image_without_parameters_uses_its_size(built_ui) -> None:
    _, ui = built_ui
    c = ui.generation["img2img"].controls
    image = Image.new("RGB", (203, 130))
    updates = send_updates(ui, "img2img", "", image, "tiny-sd1")
    assert updates[ui.generation["img2img"].image_input] is image
    assert (updates[c["width"]], updates[c["height"]]) == (200, 128)


def test_snap_size_keeps_multiples_of_8_within_limits() -> None:
    assert snap_size((1000, 500), 512) == (512, 256)
    assert snap_size((30, 30), 2048) == (64, 64)
    assert snap_size((1023, 769), 2048) == (1024, 768)


def test_requests_are_frozen_dataclasses() -> None:
    assert dataclasses.is_dataclass(Img2ImgRequest)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Txt2ImgRequest().steps = 3  # type: ignore[misc]


def test_components_are_gradio_components(built_ui) -> None:
    _, ui = built_ui
    for tab in ui.generation.values():
        for control in tab.controls.controls.values():
            assert isinstance(control.component, gr.components.Component)


def test_send_to_segment_opens_the_tab_with_the_selected_result(built_ui) -> None:
    _, ui = built_ui
    assert ui.segment_image is not None
    first, second = Image.new("RGB", (64, 64), (220, 40, 40)), Image.new("RGB", (64, 64), (40, 90, 220))
    updates = segment_updates(ui, {"images": [first, second], "infotexts": ["a", "b"], "selected": 1})
    assert updates[ui.tabs].selected == "segment"
    assert updates[ui.segment_image] is second
    with pytest.raises(ValueError, match="no image to send"):
        segment_updates(ui, {"images": [], "infotexts": []})


def test_the_tiled_diffusion_accordion_shows_only_for_models_that_can_tile(built_ui) -> None:
    """Tiled diffusion is for Stable Diffusion UNets: its accordion hides on the built-in model, and its checkbox is
    then not sent."""
    blocks, ui = built_ui
    panels = [tab.family_panels["tiled_diffusion"] for tab in ui.generation.values()]
    assert len(panels) == 3 and all(panel.visible for panel in panels)  # tiny-sd1 is the default
    change = next(fn for fn in blocks.fns.values() if any(target == (ui.checkpoint._id, "change")
                                                         for target in fn.targets))
    outputs = [block._id for block in change.outputs]
    samplers = [tab.controls["sampler"].value for tab in ui.generation.values()]
    for checkpoint, shown in (("easel-shapes", False), ("tiny-sd1", True)):
        updates = dict(zip(outputs, change.fn(checkpoint, *samplers)))
        assert all(updates[panel._id]["visible"] is shown for panel in panels), checkpoint
