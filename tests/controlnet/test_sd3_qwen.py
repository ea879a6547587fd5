"""ControlNets for SD3 and Qwen-Image: tiny random SD3ControlNetModel / QwenImageControlNetModel folders steering
the tiny checkpoints in txt2img (one and two units, weight 0), and the modes diffusers has no pipeline for refused
by name."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.controlnet.conftest import TINY, shapes
from tests.controlnet.test_generation import generate, pixels, unit
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest


@pytest.mark.parametrize("family", ["sd3", "qwenimage"])
def test_transformer_family_controlnet(make_easel, tmp_path, tmp_path_factory, family):
    import tests.tiny_models as tiny

    make_checkpoint = tiny.make_tiny_sd3 if family == "sd3" else tiny.make_tiny_qwenimage
    make_controlnet = tiny.make_tiny_sd3_controlnet if family == "sd3" else tiny.make_tiny_qwenimage_controlnet
    checkpoint = make_checkpoint(tmp_path_factory.mktemp(family) / f"tiny-{family}")
    models = tmp_path / "data" / "models"
    shutil.copytree(checkpoint, models / "diffusers" / checkpoint.name)
    make_controlnet(models / "ControlNet" / f"{family}-canny", checkpoint, seed=2)
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint=checkpoint.name, **TINY)
    plain = pixels(generate(easel, request).images[0])
    model = f"{family}-canny"
    one = pixels(generate(easel, request, [unit(model=model)]).images[0])
    assert np.abs(one - plain).mean() > 0.5
    assert np.array_equal(pixels(generate(easel, request, [unit(model=model, weight=0)]).images[0]), plain)
    two_units = [unit(model=model), unit(model=model, module="invert", weight=0.5)]
    if family == "sd3":
        assert not np.array_equal(pixels(generate(easel, request, two_units).images[0]), one)
    else:  # diffusers' Qwen-Image pipeline runs one ControlNet
        job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
            {"controlnet": two_units})), timeout=120)
        assert isinstance(job.exception, RequestError) and "Qwen-Image takes one ControlNet unit" in str(job.exception)
    for bad, field, text in ((unit(model=model, control_mode=1), "args[0].control_mode", "take only 'Balanced'"),
                             (unit(model="None", module="reference_only"), "args[0].module", "runs with SD 1.x")):
        job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
            {"controlnet": [bad]})), timeout=120)
        assert isinstance(job.exception, RequestError) and job.exception.field.endswith(field), job.exception
        assert text in job.exception.message
    edit = Img2ImgRequest(prompt="a house", seed=3, checkpoint=checkpoint.name, init_image=shapes(),
                          denoising_strength=0.8, **TINY)
    job = easel.engine.generate(edit.replace(extension_args=easel.registry.parse_request_args(
        {"controlnet": [unit(model=model, image=None)]})), timeout=120)
    assert isinstance(job.exception, RequestError) and "ControlNets run in txt2img only" in job.exception.message


def test_flux_union_controlnet_selects_its_control_type(make_easel, tmp_path, tmp_path_factory):
    from tests.tiny_models import make_tiny_flux, make_tiny_flux_controlnet

    flux = make_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")
    models = tmp_path / "data" / "models"
    shutil.copytree(flux, models / "diffusers" / "tiny-flux")
    make_tiny_flux_controlnet(models / "ControlNet" / "flux-union", flux, seed=2, num_mode=7)
    make_tiny_flux_controlnet(models / "ControlNet" / "flux-canny", flux, seed=2)
    easel = make_easel(install_sd1=False)
    request = Txt2ImgRequest(prompt="a house", seed=3, checkpoint="tiny-flux", **TINY)
    canny = pixels(generate(easel, request, [unit(model="flux-union", union_control_type="canny")]).images[0])
    as_number = pixels(generate(easel, request, [unit(model="flux-union", union_control_type=0)]).images[0])
    depth = pixels(generate(easel, request, [unit(model="flux-union", union_control_type="depth")]).images[0])
    assert np.array_equal(canny, as_number) and not np.array_equal(canny, depth)
    for bad, text in ((unit(model="flux-union"), "is a union ControlNet; choose its control type (0 = canny"),
                      (unit(model="flux-union", union_control_type="sketch"), "unknown control type 'sketch'"),
                      (unit(model="flux-canny", union_control_type="depth"), "is not a union ControlNet")):
        job = easel.engine.generate(request.replace(extension_args=easel.registry.parse_request_args(
            {"controlnet": [bad]})), timeout=120)
        assert isinstance(job.exception, RequestError), job.error
        assert job.exception.field == "alwayson_scripts.controlnet.args[0].union_control_type"
        assert text in job.exception.message
