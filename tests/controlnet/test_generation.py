"""ControlNet units on real tiny pipelines: txt2img, img2img and inpaint, several units, control modes, weight 0,
families that do not match, single-file models and the infotext."""
from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from tests.controlnet.conftest import TINY, generate, pixels, shapes
from webui.infotext import parse_infotext
from webui.requests import Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest


def unit(**changes):
    return {"image": shapes(), "module": "canny", "model": "tiny-canny", "threshold_a": 50, "threshold_b": 150,
            "processor_res": 64, **changes}


def txt2img(**changes):
    return Txt2ImgRequest(prompt="a house", seed=4, checkpoint="tiny-sd1", **{**TINY, **changes})


def test_txt2img_control_changes_the_image_and_weight_zero_does_not(cn_easel):
    plain = generate(cn_easel, txt2img()).images[0]
    controlled = generate(cn_easel, txt2img(), [unit()])
    assert np.abs(pixels(controlled.images[0]) - pixels(plain)).mean() > 1.0
    zero = generate(cn_easel, txt2img(), [unit(weight=0)]).images[0]
    assert np.array_equal(pixels(zero), pixels(plain))  # no residual at all: exactly the plain image
    info = parse_infotext(controlled.infotexts[0])
    assert info["ControlNet 0"].startswith("Module: canny, Model: tiny-canny [")
    assert "Weight: 1" in info["ControlNet 0"] and "Control Mode: Balanced" in info["ControlNet 0"]
    disabled = generate(cn_easel, txt2img(), [unit(enabled=False)]).images[0]
    assert np.array_equal(pixels(disabled), pixels(plain))


def test_two_units_control_modes_and_guidance_window(cn_easel):
    one = pixels(generate(cn_easel, txt2img(), [unit()]).images[0])
    second = unit(model="tiny-depth", module="invert", weight=0.8)
    two = generate(cn_easel, txt2img(), [unit(), second])
    assert np.abs(pixels(two.images[0]) - one).mean() > 0.5
    info = parse_infotext(two.infotexts[0])
    assert "Model: tiny-depth [" in info["ControlNet 1"] and "Weight: 0.8" in info["ControlNet 1"]
    prompt_first = pixels(generate(cn_easel, txt2img(), [unit(control_mode=1)]).images[0])
    control_first = pixels(generate(cn_easel, txt2img(), [unit(control_mode="ControlNet is more important")])
                           .images[0])
    assert not np.array_equal(prompt_first, one) and not np.array_equal(control_first, prompt_first)
    # The same model in two units with different modes: each unit gets its own hook and copy.
    twice = generate(cn_easel, txt2img(), [unit(), unit(control_mode=2, weight=0.5)])
    assert len(twice.images) == 1
    late = pixels(generate(cn_easel, txt2img(), [unit(guidance_start=0.5, guidance_end=1.0)]).images[0])
    assert not np.array_equal(late, one)


def test_img2img_uses_its_input_image_when_a_unit_has_none(cn_easel):
    request = Img2ImgRequest(prompt="a house", seed=2, checkpoint="tiny-sd1", init_image=shapes(),
                             denoising_strength=0.9, **TINY)
    plain = pixels(generate(cn_easel, request).images[0])
    own_input = pixels(generate(cn_easel, request, [unit(image=None)]).images[0])
    assert np.abs(own_input - plain).mean() > 0.5
    other = pixels(generate(cn_easel, request, [unit(image=shapes().rotate(90))]).images[0])
    assert not np.array_equal(other, own_input)


def test_inpaint_controls_the_masked_area_and_keeps_the_rest(cn_easel):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = InpaintRequest(prompt="a house", seed=2, checkpoint="tiny-sd1", init_image=shapes(), mask=mask,
                             mask_blur=0, denoising_strength=0.9, **TINY)
    plain = pixels(generate(cn_easel, request).images[0])
    controlled = pixels(generate(cn_easel, request, [unit(image=None, module="invert")]).images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(controlled[inside] - plain[inside]).mean() > 0.5
    assert np.array_equal(controlled[~inside], pixels(shapes())[~inside])


def test_txt2img_without_a_control_image_and_a_family_mismatch_fail_clearly(cn_easel, tmp_path):
    job = cn_easel.engine.generate(txt2img().replace(extension_args=cn_easel.registry.parse_request_args(
        {"controlnet": [{"enabled": False}, unit(image=None)]})), timeout=120)
    assert isinstance(job.exception, RequestError)
    assert job.exception.field == "alwayson_scripts.controlnet.args[1].image"  # its place in the client's list

    folder = tmp_path / "data" / "models" / "ControlNet" / "xl-canny"
    shutil.copytree(tmp_path / "data" / "models" / "ControlNet" / "tiny-canny", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "addition_embed_type": "text_time"}))
    request = txt2img().replace(extension_args=cn_easel.registry.parse_request_args(
        {"ControlNet": {"args": [unit(model="xl-canny")]}}))
    job = cn_easel.engine.generate(request, timeout=120)
    assert isinstance(job.exception, RequestError)
    assert job.exception.field == "alwayson_scripts.controlnet.args[0].model"
    assert "xl-canny is a ControlNet for SDXL" in job.exception.message and "SD 1.x" in job.exception.message


def test_single_file_controlnet_loads_with_the_config_for_its_width(cn_easel, tiny_sd1_controlnet, tmp_path,
                                                                    monkeypatch):
    """A one-file ControlNet (diffusers key layout here) is recognised by its cross-attention width and loaded with
    the shipped config for that family; the tiny model's width (32) is mapped to a tiny config for the test."""
    import sys

    from safetensors.torch import load_file, save_file

    models = sys.modules["easel_extension_controlnet.models"]
    monkeypatch.setitem(models.CROSS_ATTENTION_FAMILIES, 32, "sd1")
    monkeypatch.setitem(models.SINGLE_FILE_CONFIGS, "sd1", tiny_sd1_controlnet)
    target = tmp_path / "data" / "models" / "ControlNet" / "single" / "tiny-file.safetensors"
    target.parent.mkdir(parents=True)
    save_file(load_file(str(tiny_sd1_controlnet / "diffusion_pytorch_model.safetensors")), str(target))
    from_folder = pixels(generate(cn_easel, txt2img(), [unit()]).images[0])
    from_file = generate(cn_easel, txt2img(), [unit(model="tiny-file")])
    assert np.array_equal(pixels(from_file.images[0]), from_folder)
    assert "Model: single/tiny-file [" in parse_infotext(from_file.infotexts[0])["ControlNet 0"]

    # The same weights in the original layout (`control_model.input_blocks...`, as AUTOMATIC1111 users have them).
    from tests.tiny_models import controlnet_to_original

    config = json.loads((tiny_sd1_controlnet / "config.json").read_text())
    original = controlnet_to_original(load_file(str(tiny_sd1_controlnet / "diffusion_pytorch_model.safetensors")),
                                      config)
    assert "control_model.input_hint_block.0.weight" in original and "control_model.zero_convs.0.0.weight" in original
    save_file(original, str(target.with_name("tiny-original.safetensors")))
    from_original = generate(cn_easel, txt2img(), [unit(model="tiny-original")])
    assert np.array_equal(pixels(from_original.images[0]), from_folder)


def test_sdxl_controlnet(make_easel, tmp_path, tmp_path_factory):
    from tests.tiny_models import make_tiny_sd_controlnet, make_tiny_sdxl

    sdxl = make_tiny_sdxl(tmp_path_factory.mktemp("xl") / "tiny-sdxl")
    models = tmp_path / "data" / "models"
    shutil.copytree(sdxl, models / "diffusers" / "tiny-sdxl")
    make_tiny_sd_controlnet(models / "ControlNet" / "xl-canny", sdxl, seed=5)
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", **TINY)
    plain = pixels(generate(easel, request).images[0])
    controlled = pixels(generate(easel, request, [unit(model="xl-canny")]).images[0])
    assert np.abs(controlled - plain).mean() > 0.5
    edited = Img2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", init_image=shapes(),
                            denoising_strength=0.8, **TINY)
    assert generate(easel, edited, [unit(model="xl-canny", image=None, control_mode=1)]).images[0].size == (64, 64)
    # Inpaint: the unit steers the masked area; everything outside it is the input image.
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = InpaintRequest(prompt="a house", seed=3, checkpoint="tiny-sdxl", init_image=shapes(), mask=mask,
                             mask_blur=0, denoising_strength=0.9, **TINY)
    plain_fill = pixels(generate(easel, inpaint).images[0])
    controlled_fill = pixels(generate(easel, inpaint, [unit(model="xl-canny", image=None, module="invert")]).images[0])
    inside = np.asarray(mask) > 0
    assert np.abs(controlled_fill[inside] - plain_fill[inside]).mean() > 0.5
    assert np.array_equal(controlled_fill[~inside], pixels(shapes())[~inside])


def test_flux_controlnet_in_every_mode_with_two_units(make_easel, tmp_path, tmp_path_factory):
    from tests.tiny_models import make_tiny_flux, make_tiny_flux_controlnet

    flux = make_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")
    models = tmp_path / "data" / "models"
    shutil.copytree(flux, models / "diffusers" / "tiny-flux")
    make_tiny_flux_controlnet(models / "ControlNet" / "flux-canny", flux, seed=2)
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", **TINY)
    plain = pixels(generate(easel, request).images[0])
    one = pixels(generate(easel, request, [unit(model="flux-canny")]).images[0])
    assert np.abs(one - plain).mean() > 0.5
    two = pixels(generate(easel, request, [unit(model="flux-canny"),
                                           unit(model="flux-canny", module="invert", weight=0.5)]).images[0])
    assert not np.array_equal(two, one)
    edit = Img2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", init_image=shapes(),
                          denoising_strength=0.8, **TINY)
    assert generate(easel, edit, [unit(model="flux-canny", image=None)]).images[0].size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = InpaintRequest(prompt="a house", seed=3, checkpoint="tiny-flux", init_image=shapes(), mask=mask,
                             mask_blur=0, denoising_strength=0.8, **TINY)
    assert generate(easel, inpaint, [unit(model="flux-canny", image=None)]).images[0].size == (64, 64)
    job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": [unit(model="flux-canny", control_mode=1)]})), timeout=120)
    assert isinstance(job.exception, RequestError)
    assert job.exception.field == "alwayson_scripts.controlnet.args[0].control_mode"


def test_zimage_controlnet_txt2img_and_inpaint(make_easel, tmp_path, tmp_path_factory):
    from tests.tiny_models import make_tiny_zimage, make_tiny_zimage_controlnet

    zimage = make_tiny_zimage(tmp_path_factory.mktemp("zimage") / "tiny-zimage")
    models = tmp_path / "data" / "models"
    shutil.copytree(zimage, models / "diffusers" / "tiny-zimage")
    make_tiny_zimage_controlnet(models / "ControlNet" / "z-canny", seed=2)
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-zimage", **TINY)
    plain = pixels(generate(easel, request).images[0])
    assert np.abs(pixels(generate(easel, request, [unit(model="z-canny")]).images[0]) - plain).mean() > 0.5
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpaint = InpaintRequest(prompt="a house", seed=3, checkpoint="tiny-zimage", init_image=shapes(), mask=mask,
                             mask_blur=0, **TINY)
    controlled = pixels(generate(easel, inpaint, [unit(model="z-canny", image=None)]).images[0])
    assert np.array_equal(controlled[np.asarray(mask) == 0], pixels(shapes())[np.asarray(mask) == 0])
    edit = Img2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-zimage", init_image=shapes(), **TINY)
    job = easel.engine.generate(edit.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": [unit(model="z-canny", image=None)]})), timeout=120)
    assert isinstance(job.exception, RequestError) and "no img2img ControlNet pipeline for Z-Image" in str(
        job.exception)


def test_units_also_steer_the_hires_fix_pass(cn_easel):
    request = txt2img(enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", hr_second_pass_steps=2,
                      hr_denoising_strength=0.7)
    plain = pixels(generate(cn_easel, request).images[0])
    controlled = generate(cn_easel, request, [unit(resize_mode="Just Resize")])
    assert controlled.images[0].size == (96, 96)
    assert np.abs(pixels(controlled.images[0]) - plain).mean() > 0.5
    first_only = pixels(generate(cn_easel, request, [unit(resize_mode="Just Resize", hr_option="Low res only")])
                        .images[0])
    assert not np.array_equal(first_only, plain) and not np.array_equal(first_only, pixels(controlled.images[0]))
